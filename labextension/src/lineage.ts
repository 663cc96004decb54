/**
 * Lineage graph layout: nodes in columns by layer (left to right, sources first), rows by
 * order within a layer, edges as curves from a node's right side to the next node's left.
 */

import { ILineage } from './api';

export interface ILayoutOptions {
  /** Horizontal distance between layers. */
  columnWidth: number;
  /** Vertical distance between nodes of one layer. */
  rowHeight: number;
  /** Node circle radius. */
  radius: number;
  /** Space around the drawing (labels sit right of a node, so keep room there). */
  margin: number;
}

export const DEFAULT_LAYOUT: ILayoutOptions = {
  columnWidth: 150,
  rowHeight: 44,
  radius: 7,
  margin: 16
};

export interface IPlacedNode {
  id: string;
  kind: string;
  label: string;
  x: number;
  y: number;
  column: number;
  row: number;
}

export interface IPlacedEdge {
  source: string;
  target: string;
  /** SVG path `d` of a cubic curve between the two nodes. */
  path: string;
}

export interface ILineageLayout {
  width: number;
  height: number;
  nodes: IPlacedNode[];
  edges: IPlacedEdge[];
}

/**
 * Layers for nodes that came without one: the longest path from a source (a node with no
 * incoming edge), which puts every node right of all its inputs. Cycles (which lineage should
 * not have) are cut where they close, so the walk always ends.
 */
function layersFromEdges(
  ids: string[],
  edges: ILineage['edges']
): Map<string, number> {
  const inputs = new Map<string, string[]>(ids.map(id => [id, []]));
  for (const e of edges) {
    if (inputs.has(e.source) && inputs.has(e.target)) {
      inputs.get(e.target)!.push(e.source);
    }
  }
  const layer = new Map<string, number>();
  const visiting = new Set<string>();
  const visit = (id: string): number => {
    const known = layer.get(id);
    if (known !== undefined) {
      return known;
    }
    if (visiting.has(id)) {
      return 0;
    }
    visiting.add(id);
    const ups = inputs.get(id)!;
    const value = ups.length === 0 ? 0 : 1 + Math.max(...ups.map(visit));
    visiting.delete(id);
    layer.set(id, value);
    return value;
  };
  ids.forEach(visit);
  return layer;
}

/** Coordinates for every node and a path for every edge whose two ends are in the graph. */
export function layoutLineage(
  graph: ILineage,
  options: Partial<ILayoutOptions> = {}
): ILineageLayout {
  const o = { ...DEFAULT_LAYOUT, ...options };
  const ids = graph.nodes.map(n => n.id);
  const complete = graph.nodes.every(n => n.layer !== null);
  const derived = complete ? null : layersFromEdges(ids, graph.edges);
  const layerOf = (n: ILineage['nodes'][number]): number =>
    derived ? derived.get(n.id)! : (n.layer as number);

  // the server's layer numbers may have gaps or start anywhere: columns are their rank
  const columns = [...new Set(graph.nodes.map(layerOf))].sort((a, b) => a - b);
  const columnOf = new Map(columns.map((layer, i) => [layer, i]));

  const byColumn = new Map<number, ILineage['nodes']>();
  for (const n of graph.nodes) {
    const c = columnOf.get(layerOf(n))!;
    byColumn.set(c, [...(byColumn.get(c) ?? []), n]);
  }
  const placed: IPlacedNode[] = [];
  let rows = 0;
  for (const [column, nodes] of byColumn) {
    const sorted = [...nodes].sort(
      (a, b) =>
        (a.order ?? Number.MAX_SAFE_INTEGER) -
          (b.order ?? Number.MAX_SAFE_INTEGER) || a.id.localeCompare(b.id)
    );
    rows = Math.max(rows, sorted.length);
    sorted.forEach((n, row) =>
      placed.push({
        id: n.id,
        kind: n.kind,
        label: n.label,
        column,
        row,
        x: o.margin + o.radius + column * o.columnWidth,
        y: o.margin + o.radius + row * o.rowHeight
      })
    );
  }
  placed.sort((a, b) => a.column - b.column || a.row - b.row);
  const at = new Map(placed.map(n => [n.id, n]));
  const edges: IPlacedEdge[] = [];
  for (const e of graph.edges) {
    const s = at.get(e.source);
    const t = at.get(e.target);
    if (!s || !t) {
      continue;
    }
    const x1 = s.x + o.radius;
    const x2 = t.x - o.radius;
    const mid = (x1 + x2) / 2;
    edges.push({
      source: e.source,
      target: e.target,
      path: `M${x1},${s.y}C${mid},${s.y} ${mid},${t.y} ${x2},${t.y}`
    });
  }
  const width =
    placed.length === 0
      ? 0
      : 2 * o.margin + 2 * o.radius + (columns.length - 1) * o.columnWidth;
  const height =
    placed.length === 0
      ? 0
      : 2 * o.margin + 2 * o.radius + (rows - 1) * o.rowHeight;
  // labels are drawn right of each node: the last column needs room for them too
  return {
    width: width + (placed.length ? o.columnWidth - 2 * o.radius : 0),
    height,
    nodes: placed,
    edges
  };
}
