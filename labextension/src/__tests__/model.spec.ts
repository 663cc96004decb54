/**
 * PanelModel against a stand-in client (the REST server runs in the browser test) and a
 * timer the test steps by hand, so polling and back-off are checked without waiting.
 */

import { IRun, IRunList } from '../api';
import {
  ActionOutcome,
  IClient,
  ITimer,
  PanelModel,
  formatDuration,
  keyMetrics,
  lastRunOfCell,
  modelNode,
  promoteBody,
  runNode
} from '../model';

function makeRun(id: string, extra: Partial<IRun> = {}): IRun {
  return {
    run_id: id,
    name: id,
    status: 'FINISHED',
    start_time: 0,
    end_time: null,
    duration_s: 1,
    metrics: {},
    params: {},
    notebook: 'nb.ipynb',
    cell: null,
    execution_count: null,
    experiment: null,
    ...extra
  };
}

class StandIn implements IClient {
  runsByNotebook: Record<string, IRun[]> = {};
  queries: (string | null)[] = [];
  promoteAnswer: ActionOutcome = { ok: true, result: {} };
  fail: Error | null = null;
  release: (() => void) | null = null;

  async runs(q: { notebook: string | null; limit: number }): Promise<IRunList> {
    this.queries.push(q.notebook);
    if (this.fail) {
      throw this.fail;
    }
    const runs = this.runsByNotebook[q.notebook ?? ''] ?? [];
    return { runs, total: runs.length };
  }
  async run(runId: string) {
    return {
      ...makeRun(runId),
      metrics_history: {},
      models: [],
      data_inputs: [],
      figures: [],
      code: '',
      mlflow_url: null
    };
  }
  async models() {
    return [];
  }
  async lineage(node: string) {
    return {
      nodes: [{ id: node, kind: 'run', label: node, layer: 0, order: 0 }],
      edges: []
    };
  }
  async alerts() {
    return { alerts: [], monitoring: 'not configured' };
  }
  async journal() {
    return {
      store: 'sqlite:///mlflow.db',
      pending: 0,
      quarantined: 0,
      oldest_pending_s: null
    };
  }
  promote(): Promise<ActionOutcome> {
    return new Promise(resolve => {
      this.release = () => resolve(this.promoteAnswer);
    });
  }
  async rollback(): Promise<ActionOutcome> {
    return { ok: true, result: {} };
  }
  async approve(): Promise<ActionOutcome> {
    return { ok: true, result: {} };
  }
}

class StepTimer implements ITimer {
  pending: { fn: () => void; ms: number } | null = null;
  set(fn: () => void, ms: number): unknown {
    this.pending = { fn, ms };
    return this.pending;
  }
  clear(handle: unknown): void {
    if (this.pending === handle) {
      this.pending = null;
    }
  }
  /** Fire the scheduled poll and wait for the refresh it started. */
  async fire(model: PanelModel): Promise<number> {
    const p = this.pending!;
    this.pending = null;
    p.fn();
    await model.whenIdle();
    return this.pending!.ms;
  }
}

describe('PanelModel', () => {
  const bounds = { min: 5, max: 40, factor: 2 };

  it('follows the notebook, polls with back-off and resets on a change', async () => {
    const client = new StandIn();
    const timer = new StepTimer();
    const model = new PanelModel({ client, timer, bounds });
    client.runsByNotebook['a.ipynb'] = [makeRun('r1')];
    model.start();
    model.setNotebook('a.ipynb');
    await model.whenIdle();
    expect(model.runs.map(r => r.run_id)).toEqual(['r1']);

    // nothing changes: 10 s, 20 s, 40 s, 40 s
    const waits = [];
    for (let i = 0; i < 4; i++) {
      waits.push(await timer.fire(model));
    }
    expect(waits).toEqual([10_000, 20_000, 40_000, 40_000]);

    // a run appears: back to the shortest wait, then growing again
    client.runsByNotebook['a.ipynb'] = [makeRun('r2'), makeRun('r1')];
    expect(await timer.fire(model)).toBe(5_000);
    expect(model.runs.map(r => r.run_id)).toEqual(['r2', 'r1']);
    expect(await timer.fire(model)).toBe(10_000);

    // a tracked cell finished: refresh at once; unchanged, so the wait grows from the shortest
    await model.kick();
    await model.whenIdle();
    expect(model.delay).toBe(10);
    model.dispose();
  });

  it('backs off on failures and shows the error', async () => {
    const client = new StandIn();
    const timer = new StepTimer();
    const model = new PanelModel({ client, timer, bounds });
    model.start();
    model.setNotebook('a.ipynb');
    await model.whenIdle();
    client.fail = new Error('server down');
    expect(await timer.fire(model)).toBe(10_000);
    expect(model.error).toBe('server down');
    client.fail = null;
    expect(await timer.fire(model)).toBe(5_000);
    expect(model.error).toBeNull();
    model.dispose();
  });

  it('switching notebooks clears the runs and the selection', async () => {
    const client = new StandIn();
    const model = new PanelModel({ client, timer: new StepTimer(), bounds });
    client.runsByNotebook['a.ipynb'] = [makeRun('r1')];
    client.runsByNotebook['b.ipynb'] = [makeRun('r9')];
    model.setNotebook('a.ipynb');
    await model.whenIdle();
    await model.selectRun('r1');
    expect(model.details?.run_id).toBe('r1');
    expect(model.lineage?.nodes[0].id).toBe('r1');
    model.setNotebook('b.ipynb');
    expect(model.selectedRunId).toBeNull();
    expect(model.runs).toEqual([]);
    await model.whenIdle();
    expect(model.runs.map(r => r.run_id)).toEqual(['r9']);
    expect(client.queries).toContain('b.ipynb');
    model.dispose();
  });

  it('is busy during an action, refuses a second one and keeps a refusal', async () => {
    const client = new StandIn();
    const model = new PanelModel({ client, timer: new StepTimer(), bounds });
    client.promoteAnswer = {
      ok: false,
      refusal: {
        reasons: ['accuracy 0.5 < 0.9'],
        gates: [{ gate: 'accuracy', passed: false }]
      }
    };
    const first = model.promote('m', '2', 'champion', 'better');
    expect(model.busy).toEqual({ model: 'm', action: 'promote' });
    expect(await model.approve('m', '2', 'ok')).toBe(false);
    client.release!();
    expect(await first).toBe(false);
    expect(model.busy).toBeNull();
    expect(model.refusal('m')?.reasons).toEqual(['accuracy 0.5 < 0.9']);

    client.promoteAnswer = {
      ok: true,
      result: { alias: 'champion', version: '2' }
    };
    const second = model.promote('m', '2', 'champion', 'better');
    expect(model.refusal('m')).toBeNull();
    client.release!();
    expect(await second).toBe(true);
    model.dispose();
  });
});

describe('helpers', () => {
  it('finds the last run of a cell by id, then by execution count', () => {
    const runs = [
      makeRun('old', { cell: 'c1', start_time: 1 }),
      makeRun('new', { cell: 'c1', start_time: 5 }),
      makeRun('other', { cell: 'c2', start_time: 9 }),
      makeRun('noid', { execution_count: 4, start_time: 3 })
    ];
    expect(lastRunOfCell(runs, 'c1', 7)?.run_id).toBe('new');
    expect(lastRunOfCell(runs, 'c3', 4)?.run_id).toBe('noid');
    expect(lastRunOfCell(runs, 'c3', null)).toBeNull();
  });

  it('builds promotion bodies: a reason only as an override of failed gates', () => {
    expect(promoteBody('2', 'champion')).toEqual({
      version: '2',
      alias: 'champion',
      confirm: true
    });
    expect(promoteBody('2', 'champion', '  ')).toEqual({
      version: '2',
      alias: 'champion',
      confirm: true
    });
    expect(promoteBody('2', 'prod', 'hotfix')).toEqual({
      version: '2',
      alias: 'prod',
      confirm: true,
      reason: 'hotfix',
      override: true
    });
    expect(runNode('0123abcd')).toBe('0123abcd');
    expect(modelNode('m', '3')).toBe('models:/m/3');
  });

  it('formats durations and picks key metrics', () => {
    expect([0.25, 12.34, 245, 7380].map(formatDuration)).toEqual([
      '250 ms',
      '12.3 s',
      '4 min 05 s',
      '2 h 03 min'
    ]);
    expect(formatDuration(null)).toBe('');
    expect(keyMetrics({ b: 1, a: 2, loss: 3, z: 4 }, 2, ['loss'])).toEqual([
      ['loss', 3],
      ['a', 2]
    ]);
  });
});
