/**
 * An inline-SVG sparkline's path: points scaled into a width x height box.
 */

export interface ISparkline {
  /** The `d` attribute of the line ('' when there is nothing to draw). */
  path: string;
  /** Where the last point is drawn, for a dot marking the latest value. */
  last: { x: number; y: number } | null;
  min: number;
  max: number;
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

/**
 * Scale (step, value) points into a `width` x `height` box with `pad` pixels around. Points
 * whose value is not finite are dropped (a NaN loss must not break the line); points are
 * drawn in step order; one point or a constant series draws a flat line through the middle.
 * SVG's y axis points down, so the largest value is at the top.
 */
export function sparkline(
  points: ReadonlyArray<readonly [number, number, ...unknown[]]>,
  width: number,
  height: number,
  pad = 2
): ISparkline {
  const pts = points
    .filter(p => Number.isFinite(p[0]) && Number.isFinite(p[1]))
    .map(p => [p[0], p[1]] as [number, number])
    .sort((a, b) => a[0] - b[0]);
  if (pts.length === 0) {
    return { path: '', last: null, min: NaN, max: NaN };
  }
  const values = pts.map(p => p[1]);
  const min = Math.min(...values);
  const max = Math.max(...values);
  const x0 = pts[0][0];
  const xSpan = pts[pts.length - 1][0] - x0;
  const innerW = Math.max(0, width - 2 * pad);
  const innerH = Math.max(0, height - 2 * pad);
  const xy = pts.map(([step, value], i) => {
    const fx =
      xSpan > 0
        ? (step - x0) / xSpan
        : pts.length > 1
          ? i / (pts.length - 1)
          : 0;
    const fy = max > min ? (value - min) / (max - min) : 0.5;
    return { x: round(pad + fx * innerW), y: round(pad + (1 - fy) * innerH) };
  });
  if (xy.length === 1) {
    // one point: a flat line across the box, so the value is visible at all
    const y = xy[0].y;
    return {
      path: `M${round(pad)},${y}L${round(pad + innerW)},${y}`,
      last: { x: round(pad + innerW), y },
      min,
      max
    };
  }
  const path = xy.map((p, i) => `${i === 0 ? 'M' : 'L'}${p.x},${p.y}`).join('');
  return { path, last: xy[xy.length - 1], min, max };
}
