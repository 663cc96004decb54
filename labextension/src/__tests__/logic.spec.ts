/**
 * The pure parts of the panel: the track toggle, sparklines, the lineage layout, the
 * back-off and the response parsers.
 */

import {
  ParseError,
  parseAlerts,
  parseJournal,
  parseLineage,
  parseModels,
  parseRefusal,
  parseRunDetails,
  parseRuns
} from '../api';
import { Backoff, boundsFromSettings, nextDelay } from '../backoff';
import { layoutLineage } from '../lineage';
import { sparkline } from '../sparkline';
import { storeLabel } from '../statusbar';
import { isTracked, toggleTrack, trackedName } from '../track';

describe('toggleTrack', () => {
  it('adds %%track as the first line and removes it again', () => {
    const src = 'x = 1\nprint(x)';
    const tracked = toggleTrack(src);
    expect(tracked).toBe('%%track\nx = 1\nprint(x)');
    expect(isTracked(tracked)).toBe(true);
    expect(toggleTrack(tracked)).toBe(src);
  });

  it('keeps a name and drops the whole magic line with its arguments', () => {
    expect(toggleTrack('fit()', 'my run')).toBe('%%track my-run\nfit()');
    expect(toggleTrack('%%track train --experiment e1\nfit()\n')).toBe(
      'fit()\n'
    );
    expect(trackedName('%%track --experiment e1 train\nfit()')).toBe('train');
    expect(trackedName('%%track\nfit()')).toBeNull();
  });

  it('handles empty cells, one-line magics and look-alikes', () => {
    expect(toggleTrack('')).toBe('%%track\n');
    expect(toggleTrack('%%track')).toBe('');
    expect(toggleTrack('%%track\r\nx')).toBe('x');
    expect(isTracked('%%tracker\nx')).toBe(false);
    expect(isTracked('x\n%%track')).toBe(false);
    expect(isTracked('%track sync')).toBe(false);
    expect(toggleTrack('%%tracker\nx')).toBe('%%track\n%%tracker\nx');
  });
});

describe('sparkline', () => {
  it('scales points into the box, largest value at the top', () => {
    const s = sparkline(
      [
        [0, 1, 0],
        [1, 3, 0],
        [2, 2, 0]
      ],
      104,
      24,
      2
    );
    expect(s.path).toBe('M2,22L52,2L102,12');
    expect(s.last).toEqual({ x: 102, y: 12 });
    expect([s.min, s.max]).toEqual([1, 3]);
  });

  it('sorts by step, drops non-finite values, spaces by step', () => {
    const s = sparkline(
      [
        [10, 0, 0],
        [0, 10, 0],
        [5, NaN, 0],
        [2.5, 5, 0]
      ],
      14,
      14,
      2
    );
    expect(s.path).toBe('M2,2L4.5,7L12,12');
  });

  it('draws flat lines for one point or a constant series, nothing for none', () => {
    expect(sparkline([[3, 7, 0]], 20, 10, 0).path).toBe('M0,5L20,5');
    expect(
      sparkline(
        [
          [0, 4],
          [1, 4]
        ],
        20,
        10,
        0
      ).path
    ).toBe('M0,5L20,5');
    expect(sparkline([], 20, 10).path).toBe('');
    expect(sparkline([], 20, 10).last).toBeNull();
  });
});

describe('layoutLineage', () => {
  const opts = { columnWidth: 100, rowHeight: 40, radius: 5, margin: 10 };

  it('puts layers in columns left to right and order in rows', () => {
    const layout = layoutLineage(
      {
        nodes: [
          { id: 'model:m/1', kind: 'model', label: 'm v1', layer: 7, order: 0 },
          { id: 'data:b', kind: 'data', label: 'b', layer: 2, order: 1 },
          { id: 'data:a', kind: 'data', label: 'a', layer: 2, order: 0 },
          { id: 'run:r', kind: 'run', label: 'r', layer: 4, order: 0 }
        ],
        edges: [
          { source: 'data:a', target: 'run:r' },
          { source: 'data:b', target: 'run:r' },
          { source: 'run:r', target: 'model:m/1' },
          { source: 'run:r', target: 'elsewhere' }
        ]
      },
      opts
    );
    const at = Object.fromEntries(layout.nodes.map(n => [n.id, [n.x, n.y]]));
    expect(at).toEqual({
      'data:a': [15, 15],
      'data:b': [15, 55],
      'run:r': [115, 15],
      'model:m/1': [215, 15]
    });
    expect(layout.edges).toHaveLength(3);
    expect(layout.edges[0].path).toBe('M20,15C65,15 65,15 110,15');
    expect(layout.edges[1].path).toBe('M20,55C65,55 65,15 110,15');
    // 3 columns, 2 rows, plus room for the last column's labels
    expect(layout.height).toBe(2 * 10 + 2 * 5 + 40);
    expect(layout.width).toBe(2 * 10 + 2 * 5 + 200 + 100 - 10);
  });

  it('derives layers from the edges when the server sends none', () => {
    const layout = layoutLineage(
      {
        nodes: [
          { id: 'c', kind: '', label: 'c', layer: null, order: null },
          { id: 'b', kind: '', label: 'b', layer: null, order: null },
          { id: 'a', kind: '', label: 'a', layer: null, order: null }
        ],
        edges: [
          { source: 'a', target: 'b' },
          { source: 'b', target: 'c' },
          { source: 'a', target: 'c' },
          { source: 'c', target: 'a' }
        ]
      },
      opts
    );
    const col = Object.fromEntries(layout.nodes.map(n => [n.id, n.column]));
    expect(new Set(Object.values(col)).size).toBe(3);
    expect(col.b).toBeGreaterThan(col.a === 2 ? -1 : col.a);
  });

  it('lays out an empty graph as nothing', () => {
    expect(layoutLineage({ nodes: [], edges: [] })).toEqual({
      width: 0,
      height: 0,
      nodes: [],
      edges: []
    });
  });
});

describe('back-off', () => {
  const bounds = { min: 5, max: 60, factor: 2 };

  it('doubles while nothing changes, up to max, and resets on a change', () => {
    const b = new Backoff(bounds);
    const waits = [1, 2, 3, 4, 5].map(() => b.record('unchanged'));
    expect(waits).toEqual([10, 20, 40, 60, 60]);
    expect(b.record('changed')).toBe(5);
    expect(b.record('failed')).toBe(10);
    b.record('failed');
    expect(b.reset()).toBe(5);
  });

  it('never waits less than min', () => {
    expect(nextDelay(0, 'unchanged', bounds)).toBe(10);
    expect(nextDelay(1000, 'failed', bounds)).toBe(60);
  });

  it('clamps settings into the schema bounds and keeps min <= max', () => {
    expect(boundsFromSettings(0.1, 99999)).toEqual({
      min: 2,
      max: 3600,
      factor: 2
    });
    expect(boundsFromSettings(30, 10)).toEqual({ min: 30, max: 30, factor: 2 });
    expect(boundsFromSettings('x', undefined)).toEqual({
      min: 5,
      max: 120,
      factor: 2
    });
  });
});

describe('parsers', () => {
  const run = {
    run_id: 'abc',
    name: 'train',
    status: 'FINISHED',
    start_time: 1_700_000_000_000,
    end_time: '2023-11-14T22:13:21Z',
    duration_s: '1.5',
    metrics: { acc: 0.9, bad: null },
    params: { alpha: 0.5, opts: { a: 1 } },
    notebook: 'nb.ipynb',
    cell: 'c1',
    execution_count: 3,
    experiment: 'e'
  };

  it('parses runs, coercing numbers and times', () => {
    const list = parseRuns({ runs: [run], total: 7 });
    expect(list.total).toBe(7);
    expect(list.runs[0]).toMatchObject({
      run_id: 'abc',
      duration_s: 1.5,
      metrics: { acc: 0.9 },
      params: { alpha: '0.5', opts: '{"a":1}' },
      end_time: Date.parse('2023-11-14T22:13:21Z')
    });
    expect(
      parseRuns({ runs: [{ ...run, start_time: 1_700_000_000 }] }).runs[0]
        .start_time
    ).toBe(1_700_000_000_000);
  });

  it('says which field is wrong', () => {
    expect(() => parseRuns({ runs: {} })).toThrow(ParseError);
    expect(() => parseRuns({ runs: [{ name: 'x' }] })).toThrow(
      /runs\[0\]\.run_id/
    );
    expect(() => parseRuns({ runs: [{ ...run, duration_s: 'slow' }] })).toThrow(
      /runs\[0\]\.duration_s must be a number/
    );
    expect(() => parseModels(null)).toThrow(/the answer must be an object/);
  });

  it('parses run details with history, inputs, figures and code', () => {
    const d = parseRunDetails({
      run: {
        ...run,
        metrics_history: {
          loss: [
            [0, 1.0, 10],
            [1, 0.5, 11]
          ]
        },
        models: ['m', { name: 'n', version: '2' }],
        data_inputs: [{ name: 'raw', digest: 'xx:12', version: 3 }],
        figures: [{ name: 'f.png', url: '/files/f.png' }],
        code: 'x = 1',
        mlflow_url: null
      }
    });
    expect(d.metrics_history.loss).toEqual([
      [0, 1, 10],
      [1, 0.5, 11]
    ]);
    expect(d.models).toEqual([{ name: 'm' }, { name: 'n', version: '2' }]);
    expect(d.data_inputs[0]).toEqual({
      name: 'raw',
      digest: 'xx:12',
      version: '3'
    });
    expect(d.figures[0].url).toBe('/files/f.png');
    expect(d.code).toBe('x = 1');
  });

  it('parses models, lineage, alerts, journal and refusals', () => {
    const models = parseModels({
      models: [
        {
          name: 'm',
          aliases: { champion: 2 },
          versions: [
            {
              version: 2,
              run_id: 'abc',
              status: 'READY',
              aliases: ['champion']
            }
          ]
        }
      ]
    });
    expect(models[0].aliases).toEqual({ champion: '2' });
    expect(models[0].versions[0]).toMatchObject({
      version: '2',
      aliases: ['champion']
    });

    const lineage = parseLineage({
      nodes: [
        { id: 'run:abc', kind: 'run', label: 'train', layer: 1, order: 0 }
      ],
      edges: [{ source: 'data:x', target: 'run:abc' }]
    });
    expect(lineage.nodes[0].layer).toBe(1);
    expect(() => parseLineage({ nodes: [{}], edges: [] })).toThrow(
      /nodes\[0\]\.id/
    );

    expect(parseAlerts({ alerts: [], monitoring: 'not configured' })).toEqual({
      alerts: [],
      monitoring: 'not configured'
    });
    expect(
      parseAlerts({ alerts: [{ id: 1, name: 'drift', level: 'warn' }] })
        .alerts[0]
    ).toEqual({ id: '1', title: 'drift', severity: 'warn', detail: '' });
    expect(
      parseJournal({ store: 'sqlite:///x', pending: 2, quarantined: 0 })
    ).toEqual({
      store: 'sqlite:///x',
      pending: 2,
      quarantined: 0,
      oldest_pending_s: null
    });
    expect(
      parseRefusal({
        refused: true,
        reasons: ['needs approval'],
        gates: [{ gate: 'acc' }]
      })
    ).toEqual({ reasons: ['needs approval'], gates: [{ gate: 'acc' }] });
    expect(parseRefusal({ message: 'no' }).reasons).toEqual(['no']);
  });
});

describe('storeLabel', () => {
  it('shortens a store URI to what fits in the status bar', () => {
    expect(storeLabel('sqlite:////tmp/project/mlflow.db')).toBe('mlflow.db');
    expect(storeLabel('http://127.0.0.1:5000')).toBe('127.0.0.1:5000');
    expect(storeLabel('file:///home/me/mlruns/')).toBe('mlruns');
    expect(storeLabel('')).toBe('');
  });
});
