/**
 * The MLOps panel's state and logic, with no DOM: which notebook it follows, that notebook's
 * runs, the selected run and its lineage, the models and the actions on them, alerts and the
 * journal. The views render it and call its methods; the tests drive it with a stand-in
 * client.
 */

import { ISignal, Signal } from '@lumino/signaling';

import {
  IAlerts,
  IJournal,
  ILineage,
  IModel,
  IRefusal,
  IRun,
  IRunDetails,
  IRunList
} from './api';
import { Backoff, IBackoffBounds, boundsFromSettings } from './backoff';

/** What the model needs from the server; the REST client and the tests' stand-in provide it. */
export interface IClient {
  runs(query: {
    notebook: string | null;
    experiment?: string;
    limit: number;
    filter?: string;
  }): Promise<IRunList>;
  run(runId: string): Promise<IRunDetails>;
  models(): Promise<IModel[]>;
  lineage(node: string): Promise<ILineage>;
  alerts(): Promise<IAlerts>;
  journal(): Promise<IJournal>;
  promote(name: string, body: IPromoteBody): Promise<ActionOutcome>;
  rollback(
    name: string,
    body: { alias: string; confirm: boolean }
  ): Promise<ActionOutcome>;
  approve(
    name: string,
    body: { version: string; reason: string }
  ): Promise<ActionOutcome>;
}

/**
 * A promotion the user confirmed. `reason` and `override` go together: the reason an admin
 * gives to override failed gates (the server refuses a reason without `override`).
 */
export interface IPromoteBody {
  version: string;
  alias: string;
  confirm: boolean;
  reason?: string;
  override?: boolean;
}

/** An action's answer: done (with the server's result) or refused (with its reasons). */
export type ActionOutcome =
  { ok: true; result: unknown } | { ok: false; refusal: IRefusal };

/** Timers, injectable so tests step through the polling without waiting. */
export interface ITimer {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const realTimer: ITimer = {
  set: (fn, ms) => setTimeout(fn, ms),
  clear: handle => clearTimeout(handle as ReturnType<typeof setTimeout>)
};

export type ActionKind = 'promote' | 'rollback' | 'approve';

export interface IBusy {
  model: string;
  action: ActionKind;
}

/** What the lineage API takes for a run: its MLflow run id. */
export function runNode(runId: string): string {
  return runId;
}

/** The lineage node id of a registered model version, as the lineage API takes it. */
export function modelNode(name: string, version: string): string {
  return `models:/${name}/${version}`;
}

/** The body of a confirmed promotion; a non-empty `overrideReason` overrides failed gates. */
export function promoteBody(
  version: string,
  alias: string,
  overrideReason = ''
): IPromoteBody {
  const reason = overrideReason.trim();
  return reason
    ? { version, alias, confirm: true, reason, override: true }
    : { version, alias, confirm: true };
}

/** A compact, stable signature of an answer: the poll compares it to see a change. */
export function signature(value: unknown): string {
  return JSON.stringify(value);
}

/** A duration in seconds as people read it: 850 ms, 12.3 s, 4 min 05 s, 2 h 03 min. */
export function formatDuration(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds) || seconds < 0) {
    return '';
  }
  if (seconds < 1) {
    return `${Math.round(seconds * 1000)} ms`;
  }
  if (seconds < 60) {
    return `${(Math.round(seconds * 10) / 10).toFixed(1)} s`;
  }
  const s = Math.round(seconds);
  if (s < 3600) {
    return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  }
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

/** Up to `n` metrics to show in a run's row: the ones named first in `preferred`, then A-Z. */
export function keyMetrics(
  metrics: Record<string, number>,
  n = 3,
  preferred: string[] = []
): [string, number][] {
  const names = Object.keys(metrics).sort((a, b) => {
    const pa = preferred.indexOf(a);
    const pb = preferred.indexOf(b);
    if (pa !== pb) {
      return (pa === -1 ? Infinity : pa) - (pb === -1 ? Infinity : pb);
    }
    return a.localeCompare(b);
  });
  return names.slice(0, n).map(k => [k, metrics[k]]);
}

/** A metric value in at most four significant digits (integers as they are). */
export function formatValue(value: number): string {
  if (Number.isInteger(value)) {
    return String(value);
  }
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) {
    return value.toExponential(2);
  }
  return String(Number(value.toPrecision(4)));
}

/**
 * The last run of a tracked cell: the newest run recorded with this cell's id, else (a
 * notebook made before cells had ids) the newest with its execution count.
 */
export function lastRunOfCell(
  runs: IRun[],
  cellId: string,
  executionCount: number | null
): IRun | null {
  const newest = (list: IRun[]): IRun | null =>
    list.reduce<IRun | null>(
      (best, r) =>
        best === null || (r.start_time ?? 0) > (best.start_time ?? 0)
          ? r
          : best,
      null
    );
  const byId = newest(runs.filter(r => r.cell === cellId));
  if (byId || executionCount === null) {
    return byId;
  }
  return newest(
    runs.filter(r => r.cell === null && r.execution_count === executionCount)
  );
}

export interface IModelOptions {
  client: IClient;
  timer?: ITimer;
  bounds?: IBackoffBounds;
  runLimit?: number;
}

export class PanelModel {
  constructor(options: IModelOptions) {
    this._client = options.client;
    this._timer = options.timer ?? realTimer;
    this._backoff = new Backoff(options.bounds ?? boundsFromSettings(5, 120));
    this._runLimit = options.runLimit ?? 100;
  }

  /** Emitted whenever anything the views show changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get notebook(): string | null {
    return this._notebook;
  }
  get runs(): IRun[] {
    return this._runs;
  }
  get total(): number {
    return this._total;
  }
  get selectedRunId(): string | null {
    return this._selected;
  }
  get details(): IRunDetails | null {
    return this._details;
  }
  get lineage(): ILineage | null {
    return this._lineage;
  }
  get models(): IModel[] {
    return this._models;
  }
  get alerts(): IAlerts | null {
    return this._alerts;
  }
  get journal(): IJournal | null {
    return this._journal;
  }
  /** The action running now (buttons are disabled while it is not null). */
  get busy(): IBusy | null {
    return this._busy;
  }
  /** The last message of a failed request or action, for the panel to show. */
  get error(): string | null {
    return this._error;
  }
  /** The reasons the last promotion of a model was refused, by model name. */
  refusal(model: string): IRefusal | null {
    return this._refusals.get(model) ?? null;
  }
  /** The seconds until the next poll (the back-off's current wait). */
  get delay(): number {
    return this._backoff.delay;
  }
  get bounds(): IBackoffBounds {
    return this._backoff.bounds;
  }

  /** New polling bounds or run limit from the settings; the next wait obeys them. */
  configure(bounds: IBackoffBounds, runLimit?: number): void {
    this._backoff.bounds = bounds;
    if (runLimit !== undefined) {
      this._runLimit = runLimit;
    }
    this._schedule();
  }

  /** Follow another notebook (null: none is active); its runs are fetched at once. */
  setNotebook(path: string | null): void {
    if (path === this._notebook) {
      return;
    }
    this._notebook = path;
    this._runs = [];
    this._total = 0;
    this._runsSig = '';
    this._select(null);
    this._emit();
    void this.kick();
  }

  /**
   * Something happened that likely made runs (a tracked cell finished): refresh now and
   * poll at the shortest wait again until the answers stop changing.
   */
  async kick(): Promise<void> {
    this._backoff.reset();
    await this.refresh();
  }

  /** Start polling. */
  start(): void {
    this._running = true;
    this._schedule();
  }

  /** Stop polling (the model can be started again). */
  stop(): void {
    this._running = false;
    if (this._handle !== null) {
      this._timer.clear(this._handle);
      this._handle = null;
    }
  }

  dispose(): void {
    this.stop();
    this._disposed = true;
    Signal.clearData(this);
  }

  /**
   * Ask the server for everything the panel shows; the back-off hears whether anything
   * changed. Overlapping calls share one request round.
   */
  refresh(): Promise<void> {
    if (this._inflight) {
      this._again = true;
      return this._inflight;
    }
    this._inflight = this._refreshOnce().finally(() => {
      this._inflight = null;
      if (this._again && !this._disposed) {
        this._again = false;
        void this.refresh();
      }
    });
    return this._inflight;
  }

  /** Resolves once no refresh is running or queued. */
  async whenIdle(): Promise<void> {
    while (this._inflight) {
      await this._inflight;
      // the queued round starts in the `finally` of the one that just ended
      await Promise.resolve();
    }
  }

  private async _refreshOnce(): Promise<void> {
    let changed = false;
    let failed: string | null = null;
    const notebook = this._notebook;
    const tasks: Promise<void>[] = [
      this._client.runs({ notebook, limit: this._runLimit }).then(list => {
        if (notebook !== this._notebook) {
          return; // the user moved to another notebook meanwhile
        }
        const sig = signature(list);
        if (sig !== this._runsSig) {
          this._runsSig = sig;
          this._runs = list.runs;
          this._total = list.total;
          changed = true;
        }
      }),
      this._client.models().then(models => {
        const sig = signature(models);
        if (sig !== this._modelsSig) {
          this._modelsSig = sig;
          this._models = models;
          changed = true;
        }
      }),
      this._client.alerts().then(alerts => {
        const sig = signature(alerts);
        if (sig !== this._alertsSig) {
          this._alertsSig = sig;
          this._alerts = alerts;
          changed = true;
        }
      }),
      this._client.journal().then(journal => {
        // the journal's age moves every second: only its counts make a change worth a reset
        const sig = signature([
          journal.store,
          journal.pending,
          journal.quarantined
        ]);
        if (sig !== this._journalSig) {
          this._journalSig = sig;
          changed = true;
        }
        this._journal = journal;
      })
    ];
    const results = await Promise.allSettled(tasks);
    for (const r of results) {
      if (r.status === 'rejected') {
        failed = failed ?? messageOf(r.reason);
      }
    }
    if (this._disposed) {
      return;
    }
    // a selected run that is still running gets its details again (new metrics, end time)
    const sel = this._selected;
    if (sel && (changed || this._details?.status === 'RUNNING')) {
      await this._loadDetails(sel);
    }
    if (failed !== this._error) {
      this._error = failed;
      changed = true;
    }
    this._backoff.record(failed ? 'failed' : changed ? 'changed' : 'unchanged');
    this._emit();
    this._schedule();
  }

  /** Select a run (null: none): its details and lineage are fetched. */
  async selectRun(runId: string | null): Promise<void> {
    this._select(runId);
    this._emit();
    if (runId) {
      await this._loadDetails(runId);
      this._emit();
    }
  }

  private _select(runId: string | null): void {
    this._selected = runId;
    this._details = null;
    this._lineage = null;
  }

  private async _loadDetails(runId: string): Promise<void> {
    try {
      const [details, lineage] = await Promise.all([
        this._client.run(runId),
        this._client.lineage(runNode(runId)).catch(() => null)
      ]);
      if (this._selected === runId) {
        this._details = details;
        this._lineage = lineage;
      }
    } catch (err) {
      this._error = messageOf(err);
    }
  }

  /** Draw the lineage of a model version instead of a run's. */
  async showModelLineage(name: string, version: string): Promise<void> {
    try {
      this._lineage = await this._client.lineage(modelNode(name, version));
      this._error = null;
    } catch (err) {
      this._error = messageOf(err);
    }
    this._emit();
  }

  /**
   * Promote a version to an alias the user confirmed; a refusal's reasons are kept for the
   * model's card. `overrideReason` (admins) overrides failed gates.
   */
  promote(
    name: string,
    version: string,
    alias: string,
    overrideReason = ''
  ): Promise<boolean> {
    return this._act(name, 'promote', () =>
      this._client.promote(name, promoteBody(version, alias, overrideReason))
    );
  }

  /** Point an alias back at the version it had before (the user confirmed). */
  rollback(name: string, alias: string): Promise<boolean> {
    return this._act(name, 'rollback', () =>
      this._client.rollback(name, { alias, confirm: true })
    );
  }

  /** Record an approval of a version. */
  approve(name: string, version: string, reason: string): Promise<boolean> {
    return this._act(name, 'approve', () =>
      this._client.approve(name, { version, reason })
    );
  }

  /** Forget a model's refusal (the user closed it). */
  dismissRefusal(name: string): void {
    if (this._refusals.delete(name)) {
      this._emit();
    }
  }

  private async _act(
    name: string,
    action: ActionKind,
    call: () => Promise<ActionOutcome>
  ): Promise<boolean> {
    if (this._busy) {
      return false; // one action at a time: the buttons are disabled meanwhile
    }
    this._busy = { model: name, action };
    this._refusals.delete(name);
    this._emit();
    let ok = false;
    try {
      const outcome = await call();
      if (outcome.ok) {
        ok = true;
        this._error = null;
      } else {
        this._refusals.set(name, outcome.refusal);
      }
    } catch (err) {
      this._error = messageOf(err);
    } finally {
      this._busy = null;
    }
    this._emit();
    if (ok) {
      await this.kick();
    }
    return ok;
  }

  private _schedule(): void {
    if (this._handle !== null) {
      this._timer.clear(this._handle);
      this._handle = null;
    }
    if (!this._running || this._disposed) {
      return;
    }
    this._handle = this._timer.set(() => {
      this._handle = null;
      void this.refresh();
    }, this._backoff.delay * 1000);
  }

  private _emit(): void {
    if (!this._disposed) {
      this._changed.emit();
    }
  }

  private _client: IClient;
  private _timer: ITimer;
  private _backoff: Backoff;
  private _runLimit: number;
  private _changed = new Signal<this, void>(this);
  private _notebook: string | null = null;
  private _runs: IRun[] = [];
  private _total = 0;
  private _selected: string | null = null;
  private _details: IRunDetails | null = null;
  private _lineage: ILineage | null = null;
  private _models: IModel[] = [];
  private _alerts: IAlerts | null = null;
  private _journal: IJournal | null = null;
  private _busy: IBusy | null = null;
  private _error: string | null = null;
  private _refusals = new Map<string, IRefusal>();
  private _runsSig = '';
  private _modelsSig = '';
  private _alertsSig = '';
  private _journalSig = '';
  private _inflight: Promise<void> | null = null;
  private _again = false;
  private _running = false;
  private _disposed = false;
  private _handle: unknown = null;
}

function messageOf(err: unknown): string {
  if (err instanceof Error) {
    return err.message;
  }
  return String(err);
}
