/**
 * The shapes the nbmlops server extension answers under /nbmlops/api/, and the parsers that
 * turn its JSON into them. A response that does not have the expected shape raises a
 * ParseError naming the field, so the panel can say what the server sent instead of drawing
 * half a table.
 */

export interface IExperiment {
  id: string;
  name: string;
  runs: number;
}

export interface IRun {
  run_id: string;
  name: string;
  status: string;
  start_time: number | null;
  end_time: number | null;
  duration_s: number | null;
  metrics: Record<string, number>;
  params: Record<string, string>;
  notebook: string | null;
  cell: string | null;
  execution_count: number | null;
  experiment: string | null;
}

export interface IRunList {
  runs: IRun[];
  total: number;
}

export interface IDataInput {
  name: string;
  digest: string;
  version: string | null;
}

export interface IFigure {
  name: string;
  url: string;
}

/** One point of a metric's history: step, value, timestamp. */
export type MetricPoint = [number, number, number];

export interface IRunDetails extends IRun {
  metrics_history: Record<string, MetricPoint[]>;
  models: Record<string, unknown>[];
  data_inputs: IDataInput[];
  figures: IFigure[];
  code: string;
  mlflow_url: string | null;
}

export interface IModelVersion {
  version: string;
  run_id: string | null;
  status: string;
  aliases: string[];
  metrics: Record<string, number>;
  created: number | string | null;
}

export interface IModel {
  name: string;
  aliases: Record<string, string>;
  versions: IModelVersion[];
}

export interface ILineageNode {
  id: string;
  kind: string;
  label: string;
  layer: number | null;
  order: number | null;
}

export interface ILineageEdge {
  source: string;
  target: string;
}

export interface ILineage {
  nodes: ILineageNode[];
  edges: ILineageEdge[];
}

export interface IAlert {
  id: string;
  title: string;
  severity: string;
  detail: string;
}

export interface IAlerts {
  alerts: IAlert[];
  monitoring: string | null;
}

export interface IJournal {
  store: string;
  pending: number;
  quarantined: number;
  oldest_pending_s: number | null;
}

/** What a refused promotion (HTTP 409) says: why, and each gate's verdict. */
export interface IRefusal {
  reasons: string[];
  gates: Record<string, unknown>[];
}

export class ParseError extends Error {
  constructor(what: string, got: unknown) {
    super(
      `nbmlops server answered an unexpected shape: ${what} (got ${short(got)}); ` +
        'are the nbmlops Python package and this extension the same version?'
    );
    this.name = 'ParseError';
  }
}

function short(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 80 ? text.slice(0, 77) + '...' : text;
}

type Json = Record<string, unknown>;

function obj(value: unknown, where: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ParseError(`${where} must be an object`, value);
  }
  return value as Json;
}

function arr(value: unknown, where: string): unknown[] {
  if (!Array.isArray(value)) {
    throw new ParseError(`${where} must be a list`, value);
  }
  return value;
}

function str(value: unknown, where: string): string {
  if (typeof value === 'string') {
    return value;
  }
  if (typeof value === 'number') {
    return String(value);
  }
  throw new ParseError(`${where} must be a string`, value);
}

function optStr(value: unknown, where: string): string | null {
  return value === undefined || value === null ? null : str(value, where);
}

function optNum(value: unknown, where: string): number | null {
  if (value === undefined || value === null) {
    return null;
  }
  if (typeof value === 'number' && Number.isFinite(value)) {
    return value;
  }
  if (
    typeof value === 'string' &&
    value.trim() !== '' &&
    Number.isFinite(Number(value))
  ) {
    return Number(value);
  }
  throw new ParseError(`${where} must be a number`, value);
}

/** A time the server may send as epoch milliseconds, epoch seconds or ISO text: epoch ms. */
function optTime(value: unknown, where: string): number | null {
  if (typeof value === 'string' && Number.isNaN(Number(value))) {
    const ms = Date.parse(value);
    if (Number.isNaN(ms)) {
      throw new ParseError(`${where} must be a time`, value);
    }
    return ms;
  }
  const n = optNum(value, where);
  // MLflow keeps epoch milliseconds; anything below 1e11 is seconds (before 1973 in ms)
  return n === null ? null : n < 1e11 ? n * 1000 : n;
}

function numbers(value: unknown, where: string): Record<string, number> {
  const out: Record<string, number> = {};
  if (value === undefined || value === null) {
    return out;
  }
  for (const [k, v] of Object.entries(obj(value, where))) {
    const n = optNum(v, `${where}.${k}`);
    if (n !== null) {
      out[k] = n;
    }
  }
  return out;
}

function strings(value: unknown, where: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (value === undefined || value === null) {
    return out;
  }
  for (const [k, v] of Object.entries(obj(value, where))) {
    out[k] =
      v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
  }
  return out;
}

export function parseExperiments(body: unknown): IExperiment[] {
  const list = arr(obj(body, 'the answer').experiments, 'experiments');
  return list.map((item, i) => {
    const e = obj(item, `experiments[${i}]`);
    return {
      id: str(e.id, `experiments[${i}].id`),
      name: str(e.name, `experiments[${i}].name`),
      runs: optNum(e.runs, `experiments[${i}].runs`) ?? 0
    };
  });
}

export function parseRun(value: unknown, where = 'run'): IRun {
  const r = obj(value, where);
  return {
    run_id: str(r.run_id, `${where}.run_id`),
    name: optStr(r.name, `${where}.name`) ?? '',
    status: optStr(r.status, `${where}.status`) ?? 'UNKNOWN',
    start_time: optTime(r.start_time, `${where}.start_time`),
    end_time: optTime(r.end_time, `${where}.end_time`),
    duration_s: optNum(r.duration_s, `${where}.duration_s`),
    metrics: numbers(r.metrics, `${where}.metrics`),
    params: strings(r.params, `${where}.params`),
    notebook: optStr(r.notebook, `${where}.notebook`),
    cell: optStr(r.cell, `${where}.cell`),
    execution_count: optNum(r.execution_count, `${where}.execution_count`),
    experiment: optStr(r.experiment, `${where}.experiment`)
  };
}

export function parseRuns(body: unknown): IRunList {
  const b = obj(body, 'the answer');
  const runs = arr(b.runs, 'runs').map((r, i) => parseRun(r, `runs[${i}]`));
  return { runs, total: optNum(b.total, 'total') ?? runs.length };
}

function parseHistory(value: unknown): Record<string, MetricPoint[]> {
  const out: Record<string, MetricPoint[]> = {};
  if (value === undefined || value === null) {
    return out;
  }
  for (const [name, points] of Object.entries(
    obj(value, 'run.metrics_history')
  )) {
    out[name] = arr(points, `run.metrics_history.${name}`).map((p, i) => {
      const where = `run.metrics_history.${name}[${i}]`;
      const triple = arr(p, where);
      return [
        optNum(triple[0], `${where}[0]`) ?? i,
        optNum(triple[1], `${where}[1]`) ?? NaN,
        optNum(triple[2], `${where}[2]`) ?? 0
      ] as MetricPoint;
    });
  }
  return out;
}

export function parseRunDetails(body: unknown): IRunDetails {
  const r = obj(obj(body, 'the answer').run, 'run');
  const base = parseRun(r);
  return {
    ...base,
    metrics_history: parseHistory(r.metrics_history),
    models: arr(r.models ?? [], 'run.models').map((m, i) =>
      typeof m === 'object' && m !== null
        ? (m as Json)
        : { name: str(m, `run.models[${i}]`) }
    ),
    data_inputs: arr(r.data_inputs ?? [], 'run.data_inputs').map((d, i) => {
      const o = obj(d, `run.data_inputs[${i}]`);
      return {
        name: str(o.name, `run.data_inputs[${i}].name`),
        digest: optStr(o.digest, `run.data_inputs[${i}].digest`) ?? '',
        version: optStr(o.version, `run.data_inputs[${i}].version`)
      };
    }),
    figures: arr(r.figures ?? [], 'run.figures').map((f, i) => {
      const o = obj(f, `run.figures[${i}]`);
      return {
        name: str(o.name, `run.figures[${i}].name`),
        url: str(o.url, `run.figures[${i}].url`)
      };
    }),
    code: optStr(r.code, 'run.code') ?? '',
    mlflow_url: optStr(r.mlflow_url, 'run.mlflow_url')
  };
}

export function parseModels(body: unknown): IModel[] {
  return arr(obj(body, 'the answer').models, 'models').map((item, i) => {
    const m = obj(item, `models[${i}]`);
    const aliases = strings(m.aliases, `models[${i}].aliases`);
    const versions = arr(m.versions ?? [], `models[${i}].versions`).map(
      (v, j) => {
        const where = `models[${i}].versions[${j}]`;
        const o = obj(v, where);
        const created = o.created;
        return {
          version: str(o.version, `${where}.version`),
          run_id: optStr(o.run_id, `${where}.run_id`),
          status: optStr(o.status, `${where}.status`) ?? '',
          aliases: arr(o.aliases ?? [], `${where}.aliases`).map((a, k) =>
            str(a, `${where}.aliases[${k}]`)
          ),
          metrics: numbers(o.metrics, `${where}.metrics`),
          created:
            typeof created === 'string' || typeof created === 'number'
              ? created
              : null
        };
      }
    );
    return { name: str(m.name, `models[${i}].name`), aliases, versions };
  });
}

export function parseLineage(body: unknown): ILineage {
  const b = obj(body, 'the answer');
  const nodes = arr(b.nodes, 'nodes').map((item, i) => {
    const n = obj(item, `nodes[${i}]`);
    const id = str(n.id, `nodes[${i}].id`);
    return {
      id,
      kind: optStr(n.kind, `nodes[${i}].kind`) ?? '',
      label: optStr(n.label, `nodes[${i}].label`) ?? id,
      layer: optNum(n.layer, `nodes[${i}].layer`),
      order: optNum(n.order, `nodes[${i}].order`)
    };
  });
  const edges = arr(b.edges, 'edges').map((item, i) => {
    const e = obj(item, `edges[${i}]`);
    return {
      source: str(e.source, `edges[${i}].source`),
      target: str(e.target, `edges[${i}].target`)
    };
  });
  return { nodes, edges };
}

export function parseAlerts(body: unknown): IAlerts {
  const b = obj(body, 'the answer');
  const alerts = arr(b.alerts ?? [], 'alerts').map((item, i) => {
    if (typeof item === 'string') {
      return { id: String(i), title: item, severity: '', detail: '' };
    }
    const a = obj(item, `alerts[${i}]`);
    const title = a.title ?? a.name ?? a.message ?? a.id;
    return {
      id: optStr(a.id, `alerts[${i}].id`) ?? String(i),
      title: optStr(title, `alerts[${i}].title`) ?? '',
      severity: optStr(a.severity ?? a.level, `alerts[${i}].severity`) ?? '',
      detail:
        optStr(a.detail ?? a.message ?? a.description, `alerts[${i}].detail`) ??
        ''
    };
  });
  return { alerts, monitoring: optStr(b.monitoring, 'monitoring') };
}

export function parseJournal(body: unknown): IJournal {
  const b = obj(body, 'the answer');
  return {
    store: optStr(b.store, 'store') ?? '',
    pending: optNum(b.pending, 'pending') ?? 0,
    quarantined: optNum(b.quarantined, 'quarantined') ?? 0,
    oldest_pending_s: optNum(b.oldest_pending_s, 'oldest_pending_s')
  };
}

/** The body of a 409 answer to promote: the reasons it was refused and the gates' verdicts. */
export function parseRefusal(body: unknown): IRefusal {
  const b = obj(body, 'the refusal');
  const reasons = arr(b.reasons ?? [], 'reasons').map((r, i) =>
    typeof r === 'string' ? r : short(obj(r, `reasons[${i}]`))
  );
  const gates = arr(b.gates ?? [], 'gates').map((g, i) =>
    typeof g === 'object' && g !== null
      ? (g as Json)
      : { gate: str(g, `gates[${i}]`) }
  );
  if (reasons.length === 0 && typeof b.message === 'string') {
    reasons.push(b.message);
  }
  return { reasons, gates };
}
