/**
 * What the side panel draws for a run: its details (params, metrics with sparklines, models,
 * data inputs, figures, code) and its lineage as SVG, and one-line summaries the model cards
 * use. Plain functions of the data: the panel calls them on every render.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { TranslationBundle } from '@jupyterlab/translation';

import { ILineage, IRunDetails } from './api';
import { h, svg } from './dom';
import { layoutLineage } from './lineage';
import { formatDuration, formatValue } from './model';
import { sparkline } from './sparkline';

export function renderDetails(
  d: IRunDetails,
  t: TranslationBundle,
  baseUrl: string
): HTMLElement {
  const box = h('div', {
    className: 'nbmlops-sp-details',
    'data-run-id': d.run_id
  });
  box.appendChild(
    h(
      'h3',
      {},
      d.name || d.run_id,
      ' ',
      h(
        'span',
        { className: 'nbmlops-sp-status', 'data-status': d.status },
        d.status
      )
    )
  );
  const meta = [d.run_id, formatDuration(d.duration_s), d.experiment ?? '']
    .filter(Boolean)
    .join(' · ');
  box.appendChild(h('p', { className: 'nbmlops-sp-muted' }, meta));
  if (d.mlflow_url) {
    box.appendChild(
      h(
        'a',
        { href: d.mlflow_url, target: '_blank', rel: 'noopener' },
        t.__('Open in MLflow')
      )
    );
  }
  box.appendChild(h('h4', {}, t.__('Params')));
  box.appendChild(
    table(Object.entries(d.params), t.__('No params.'), 'nbmlops-sp-params')
  );

  box.appendChild(h('h4', {}, t.__('Metrics')));
  const names = [
    ...new Set([...Object.keys(d.metrics), ...Object.keys(d.metrics_history)])
  ].sort();
  if (names.length === 0) {
    box.appendChild(
      h('p', { className: 'nbmlops-sp-muted' }, t.__('No metrics.'))
    );
  } else {
    const table = h('table', {
      className: 'nbmlops-sp-table nbmlops-sp-metric-table'
    });
    for (const name of names) {
      const value = d.metrics[name];
      table.appendChild(
        h(
          'tr',
          {},
          h('th', {}, name),
          h('td', {}, value === undefined ? '' : formatValue(value)),
          h('td', {}, renderSparkline(name, d, t))
        )
      );
    }
    box.appendChild(table);
  }
  box.appendChild(h('h4', {}, t.__('Models')));
  box.appendChild(
    d.models.length
      ? h(
          'ul',
          { className: 'nbmlops-sp-list' },
          ...d.models.map(mdl => h('li', {}, modelLine(mdl)))
        )
      : h('p', { className: 'nbmlops-sp-muted' }, t.__('No models.'))
  );
  box.appendChild(h('h4', {}, t.__('Data inputs')));
  box.appendChild(
    d.data_inputs.length
      ? h(
          'table',
          { className: 'nbmlops-sp-table nbmlops-sp-data-inputs' },
          h(
            'tr',
            {},
            h('th', {}, t.__('name')),
            h('th', {}, t.__('version')),
            h('th', {}, t.__('digest'))
          ),
          ...d.data_inputs.map(i =>
            h(
              'tr',
              {},
              h('td', {}, i.name),
              h('td', {}, i.version ?? ''),
              h('td', {}, h('code', { title: i.digest }, i.digest))
            )
          )
        )
      : h('p', { className: 'nbmlops-sp-muted' }, t.__('No data inputs.'))
  );
  if (d.figures.length) {
    box.appendChild(h('h4', {}, t.__('Figures')));
    for (const f of d.figures) {
      // the server gives figure links from its root ('/...') or relative to its base URL
      const src = /^([a-z]+:|\/)/i.test(f.url)
        ? f.url
        : URLExt.join(baseUrl, f.url);
      box.appendChild(
        h(
          'figure',
          {},
          h('img', { src, alt: f.name, loading: 'lazy' }),
          h('figcaption', {}, f.name)
        )
      );
    }
  }
  box.appendChild(h('h4', {}, t.__('Code')));
  box.appendChild(h('pre', { className: 'nbmlops-sp-code' }, d.code));
  return box;
}

function renderSparkline(
  name: string,
  d: IRunDetails,
  t: TranslationBundle
): Node | null {
  const points = d.metrics_history[name];
  if (!points || points.length < 2) {
    return null;
  }
  const w = 96;
  const hgt = 20;
  const s = sparkline(points, w, hgt);
  const label = t.__(
    '%1: %2 points, from %3 to %4',
    name,
    points.length,
    formatValue(s.min),
    formatValue(s.max)
  );
  return svg(
    'svg',
    {
      class: 'nbmlops-sp-sparkline',
      width: w,
      height: hgt,
      viewBox: `0 0 ${w} ${hgt}`,
      role: 'img',
      'aria-label': label
    },
    svg('title', {}, label),
    svg('path', { d: s.path, class: 'nbmlops-sp-spark-line' }),
    s.last
      ? svg('circle', {
          cx: s.last.x,
          cy: s.last.y,
          r: 2,
          class: 'nbmlops-sp-spark-dot'
        })
      : null
  );
}

export function renderLineage(graph: ILineage, t: TranslationBundle): Node {
  if (graph.nodes.length === 0) {
    return h(
      'p',
      { className: 'nbmlops-sp-muted' },
      t.__('No lineage recorded.')
    );
  }
  const layout = layoutLineage(graph);
  const drawing = svg('svg', {
    class: 'nbmlops-sp-lineage',
    width: layout.width,
    height: layout.height,
    viewBox: `0 0 ${layout.width} ${layout.height}`,
    role: 'img',
    'aria-label': t.__(
      'Lineage: %1 nodes, %2 edges',
      layout.nodes.length,
      layout.edges.length
    )
  });
  for (const e of layout.edges) {
    drawing.appendChild(svg('path', { d: e.path, class: 'nbmlops-sp-edge' }));
  }
  for (const n of layout.nodes) {
    const label = n.label.length > 22 ? n.label.slice(0, 21) + '…' : n.label;
    drawing.appendChild(
      svg(
        'g',
        { class: 'nbmlops-sp-node', 'data-kind': n.kind, 'data-node-id': n.id },
        svg('title', {}, `${n.id}${n.label !== n.id ? '\n' + n.label : ''}`),
        svg('circle', { cx: n.x, cy: n.y, r: 7 }),
        svg('text', { x: n.x + 10, y: n.y + 4 }, label)
      )
    );
  }
  return h('div', { className: 'nbmlops-sp-lineage-box' }, drawing);
}

function table(
  rows: [string, string][],
  empty: string,
  className: string
): HTMLElement {
  if (rows.length === 0) {
    return h('p', { className: 'nbmlops-sp-muted' }, empty);
  }
  return h(
    'table',
    { className: `nbmlops-sp-table ${className}` },
    ...rows
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, v)))
  );
}

/** A run's model in one line: its name, class, and the registered versions made from it. */
export function modelLine(m: Record<string, unknown>): string {
  const name = String(m.name ?? m.artifact_path ?? m.model_id ?? '?');
  const cls = m.class ?? m.flavor;
  const registered = Array.isArray(m.registered)
    ? m.registered.map(r =>
        typeof r === 'object' && r !== null
          ? `${(r as any).name} v${(r as any).version}`
          : String(r)
      )
    : [];
  const kind = typeof cls === 'string' ? ` (${cls.split('.').pop()})` : '';
  return `${name}${kind}${registered.length ? ' → ' + registered.join(', ') : ''}`;
}

/** A gate's verdict in a few words: its name and whether it passed. */
export function gateLine(g: Record<string, unknown>): string {
  const name = String(g.gate ?? g.name ?? g.kind ?? '?');
  const metric =
    typeof g.metric === 'string' && g.metric !== name ? ` ${g.metric}` : '';
  const verdict = g.passed === true ? '✓' : g.passed === false ? '✗' : '';
  return `${name}${metric} ${verdict}`.trim();
}
