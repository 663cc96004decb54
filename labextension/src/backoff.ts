/**
 * How long the panel waits before asking the server again.
 *
 * Why polling with back-off and not a push: the runs a notebook makes reach MLflow through the
 * journal's shipper, in another process, so the server extension has nothing to push from
 * without watching files itself. The panel asks at `min` seconds after a change (a tracked
 * cell just ran, or the answer differed), and every unchanged answer doubles the wait up to
 * `max`: an idle notebook costs one request a minute or two, not one a second, and a busy one
 * sees its runs within seconds. A failed request backs off the same way, so a server that is
 * down is not hammered. Lumino's Poll backs off only on failures, hence this small policy.
 */

export interface IBackoffBounds {
  /** Seconds between requests right after a change. */
  min: number;
  /** The longest wait, in seconds. */
  max: number;
  /** The factor an unchanged or failed answer multiplies the wait by. */
  factor: number;
}

/** The bounds the settings editor allows (schema/plugin.json says the same). */
export const LIMITS = { min: 2, max: 3600 };

/** Bounds from user settings, clamped into LIMITS and made consistent (min <= max). */
export function boundsFromSettings(
  min: unknown,
  max: unknown,
  factor = 2
): IBackoffBounds {
  const clamp = (v: unknown, fallback: number): number => {
    const n = typeof v === 'number' && Number.isFinite(v) ? v : fallback;
    return Math.min(LIMITS.max, Math.max(LIMITS.min, n));
  };
  const lo = clamp(min, 5);
  const hi = Math.max(lo, clamp(max, 120));
  return { min: lo, max: hi, factor: Math.max(1, factor) };
}

/** The wait after an answer: back to `min` on a change, else the last wait times `factor`. */
export function nextDelay(
  previous: number,
  outcome: 'changed' | 'unchanged' | 'failed',
  bounds: IBackoffBounds
): number {
  if (outcome === 'changed') {
    return bounds.min;
  }
  const grown = Math.max(bounds.min, previous) * bounds.factor;
  return Math.min(bounds.max, grown);
}

/** A back-off state: the current wait, moved by each answer. */
export class Backoff {
  constructor(bounds: IBackoffBounds) {
    this._bounds = bounds;
    this._delay = bounds.min;
  }

  get delay(): number {
    return this._delay;
  }

  get bounds(): IBackoffBounds {
    return this._bounds;
  }

  set bounds(bounds: IBackoffBounds) {
    this._bounds = bounds;
    this._delay = Math.min(bounds.max, Math.max(bounds.min, this._delay));
  }

  /** Record an answer; returns the next wait in seconds. */
  record(outcome: 'changed' | 'unchanged' | 'failed'): number {
    this._delay = nextDelay(this._delay, outcome, this._bounds);
    return this._delay;
  }

  /** Start over at the shortest wait (a tracked cell just finished). */
  reset(): number {
    this._delay = this._bounds.min;
    return this._delay;
  }

  private _bounds: IBackoffBounds;
  private _delay: number;
}
