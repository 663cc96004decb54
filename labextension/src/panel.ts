/**
 * The "MLOps" side panel: renders a PanelModel (runs, run details, lineage, models with their
 * actions, alerts) and turns clicks and keys into model calls. It holds no logic of its own
 * beyond asking for confirmation before an action.
 */

import { Dialog, showDialog } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { IModel, IModelVersion, IRun } from './api';
import { gateLine, renderDetails, renderLineage } from './details';
import { h } from './dom';
import { PanelModel, formatDuration, formatValue, keyMetrics } from './model';

/** The form of a confirmation dialog: text fields whose values the dialog returns. */
class FormBody
  extends Widget
  implements Dialog.IBodyWidget<Record<string, string>>
{
  constructor(
    message: string,
    fields: {
      name: string;
      label: string;
      value?: string;
      options?: string[];
    }[]
  ) {
    super();
    this.addClass('nbmlops-sp-form');
    this.node.appendChild(h('p', {}, message));
    for (const f of fields) {
      const id = `nbmlops-sp-form-${f.name}-${FormBody._n++}`;
      const list = f.options?.length ? `${id}-list` : null;
      const input = h('input', {
        id,
        name: f.name,
        type: 'text',
        value: f.value ?? '',
        list,
        className: 'jp-mod-styled'
      });
      this._inputs.set(f.name, input);
      this.node.appendChild(h('label', { for: id }, f.label));
      this.node.appendChild(input);
      if (list) {
        this.node.appendChild(
          h(
            'datalist',
            { id: list },
            ...f.options!.map(o => h('option', { value: o }))
          )
        );
      }
    }
  }

  getValue(): Record<string, string> {
    const out: Record<string, string> = {};
    this._inputs.forEach((input, name) => (out[name] = input.value.trim()));
    return out;
  }

  private _inputs = new Map<string, HTMLInputElement>();
  private static _n = 0;
}

export interface IPanelOptions {
  model: PanelModel;
  trans: TranslationBundle;
  /** The server's base URL, to resolve figure links the API gives relative to it. */
  baseUrl: string;
}

export class MlopsPanel extends Widget {
  constructor(options: IPanelOptions) {
    super();
    this.model = options.model;
    this._trans = options.trans;
    this._baseUrl = options.baseUrl;
    this.addClass('nbmlops-sp-panel');
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', this._trans.__('MLOps'));
    this.model.changed.connect(this._render, this);
    this._render();
  }

  readonly model: PanelModel;

  dispose(): void {
    this.model.changed.disconnect(this._render, this);
    super.dispose();
  }

  /** Show a run's details (from a cell's badge or the run list). */
  openRun(runId: string): void {
    void this.model.selectRun(runId);
  }

  private _render(): void {
    // keep keyboard focus where it was across a re-render
    const focused = (document.activeElement as HTMLElement | null)?.dataset
      ?.key;
    const m = this.model;
    const t = this._trans;
    const root = h('div', { className: 'nbmlops-sp-panel-body' });
    const title = m.notebook
      ? m.notebook.split('/').pop()!
      : t.__('no notebook');
    root.appendChild(
      h(
        'header',
        { className: 'nbmlops-sp-header' },
        h('h2', {}, t.__('MLOps')),
        h(
          'span',
          { className: 'nbmlops-sp-notebook', title: m.notebook ?? '' },
          title
        ),
        this._button(t.__('Refresh'), 'refresh', () => void m.kick(), {
          title: t.__('Refresh now (the panel also refreshes by itself)')
        })
      )
    );
    if (m.error) {
      root.appendChild(
        h('div', { className: 'nbmlops-sp-error', role: 'alert' }, m.error)
      );
    }
    root.appendChild(
      this._section(
        'runs',
        t.__('Runs (%1 of %2)', m.runs.length, m.total),
        this._runs()
      )
    );
    if (m.selectedRunId) {
      root.appendChild(
        this._section(
          'details',
          t.__('Run details'),
          m.details
            ? renderDetails(m.details, t, this._baseUrl)
            : h('p', { className: 'nbmlops-sp-muted' }, t.__('Loading…'))
        )
      );
    }
    if (m.lineage) {
      root.appendChild(
        this._section('lineage', t.__('Lineage'), renderLineage(m.lineage!, t))
      );
    }
    root.appendChild(this._section('models', t.__('Models'), this._models()));
    root.appendChild(this._section('alerts', t.__('Alerts'), this._alerts()));
    this.node.replaceChildren(root);
    if (focused) {
      const again = this.node.querySelector<HTMLElement>(
        `[data-key="${CSS.escape(focused)}"]`
      );
      again?.focus();
    }
  }

  private _section(key: string, label: string, body: Node): HTMLElement {
    const open = this._open.get(key) ?? true;
    const details = h(
      'details',
      { className: `nbmlops-sp-section nbmlops-sp-section-${key}`, open },
      h('summary', { 'data-key': `section:${key}` }, label),
      body
    );
    details.addEventListener('toggle', () => this._open.set(key, details.open));
    return details;
  }

  private _button(
    label: string,
    key: string,
    onClick: () => void,
    extra: Record<string, string | boolean | null> = {}
  ): HTMLButtonElement {
    const b = h(
      'button',
      {
        type: 'button',
        className: 'jp-Button nbmlops-sp-button',
        'data-key': key,
        ...extra
      },
      label
    );
    b.addEventListener('click', onClick);
    return b;
  }

  private _runs(): HTMLElement {
    const m = this.model;
    const t = this._trans;
    if (!m.notebook) {
      return h(
        'p',
        { className: 'nbmlops-sp-muted' },
        t.__('Open a notebook to see its runs.')
      );
    }
    if (m.runs.length === 0) {
      return h(
        'p',
        { className: 'nbmlops-sp-muted' },
        t.__('No tracked runs yet: run a cell that starts with %1.', '%%track')
      );
    }
    const list = h('ul', {
      className: 'nbmlops-sp-runs',
      'aria-label': t.__('Runs of this notebook')
    });
    for (const run of m.runs) {
      list.appendChild(h('li', {}, this._runRow(run)));
    }
    return list;
  }

  private _runRow(run: IRun): HTMLElement {
    const selected = run.run_id === this.model.selectedRunId;
    const metrics = keyMetrics(run.metrics, 3, [
      'loss',
      'accuracy',
      'score',
      'rmse',
      'f1'
    ]);
    const row = h(
      'button',
      {
        type: 'button',
        className: 'nbmlops-sp-run' + (selected ? ' nbmlops-sp-selected' : ''),
        'data-run-id': run.run_id,
        'data-key': `run:${run.run_id}`,
        'aria-pressed': selected ? 'true' : 'false',
        title: this._trans.__('Show the details of run %1', run.run_id)
      },
      h(
        'span',
        { className: 'nbmlops-sp-status', 'data-status': run.status },
        run.status
      ),
      h(
        'span',
        { className: 'nbmlops-sp-run-name' },
        run.name || run.run_id.slice(0, 8)
      ),
      h(
        'span',
        { className: 'nbmlops-sp-duration' },
        formatDuration(run.duration_s)
      ),
      h(
        'span',
        { className: 'nbmlops-sp-metrics' },
        metrics.map(([k, v]) => `${k} ${formatValue(v)}`).join(' · ')
      )
    );
    row.addEventListener(
      'click',
      () => void this.model.selectRun(selected ? null : run.run_id)
    );
    return row;
  }

  private _models(): Node {
    const m = this.model;
    const t = this._trans;
    if (m.models.length === 0) {
      return h(
        'p',
        { className: 'nbmlops-sp-muted' },
        t.__('No registered models.')
      );
    }
    return h('div', {}, ...m.models.map(mdl => this._model(mdl)));
  }

  private _model(mdl: IModel): HTMLElement {
    const m = this.model;
    const t = this._trans;
    const busy = m.busy !== null;
    const card = h('div', {
      className:
        'nbmlops-sp-model' +
        (m.busy?.model === mdl.name ? ' nbmlops-sp-busy' : ''),
      'data-model': mdl.name,
      'aria-busy': m.busy?.model === mdl.name ? 'true' : 'false'
    });
    card.appendChild(h('h4', {}, mdl.name));
    const aliases = h('div', { className: 'nbmlops-sp-aliases' });
    for (const [alias, version] of Object.entries(mdl.aliases).sort()) {
      aliases.appendChild(
        h(
          'span',
          {
            className: 'nbmlops-sp-alias',
            'data-alias': alias,
            'data-version': version
          },
          `@${alias} → v${version}`
        )
      );
      aliases.appendChild(
        this._button(
          t.__('Roll back'),
          `rollback:${mdl.name}:${alias}`,
          () => void this._rollback(mdl, alias),
          {
            disabled: busy,
            title: t.__('Point @%1 back at the version it had before', alias)
          }
        )
      );
    }
    card.appendChild(aliases);
    if (m.busy?.model === mdl.name) {
      card.appendChild(
        h(
          'p',
          { className: 'nbmlops-sp-muted', role: 'status' },
          t.__('%1 in progress…', m.busy.action)
        )
      );
    }
    const refusal = m.refusal(mdl.name);
    if (refusal) {
      const box = h(
        'div',
        { className: 'nbmlops-sp-refusal', role: 'alert' },
        h('strong', {}, t.__('Refused:')),
        h('ul', {}, ...refusal.reasons.map(r => h('li', {}, r)))
      );
      if (refusal.gates.length) {
        box.appendChild(
          h(
            'p',
            { className: 'nbmlops-sp-gates' },
            t.__('Gates: %1', refusal.gates.map(gateLine).join(' · '))
          )
        );
      }
      box.appendChild(
        this._button(t.__('Dismiss'), `dismiss:${mdl.name}`, () =>
          m.dismissRefusal(mdl.name)
        )
      );
      card.appendChild(box);
    }
    // one block per version (a table has no room in a side panel): what it is, then actions
    const list = h('div', { className: 'nbmlops-sp-versions' });
    const versions = [...mdl.versions].sort(
      (a, b) => Number(b.version) - Number(a.version)
    );
    for (const v of versions) {
      const metrics = keyMetrics(v.metrics, 3)
        .map(([k, x]) => `${k} ${formatValue(x)}`)
        .join(' · ');
      list.appendChild(
        h(
          'div',
          { className: 'nbmlops-sp-version', 'data-version': v.version },
          h(
            'div',
            { className: 'nbmlops-sp-version-line' },
            h('strong', {}, `v${v.version}`),
            ' ',
            h('span', { className: 'nbmlops-sp-muted' }, v.status),
            ' ',
            v.aliases.map(a => `@${a}`).join(' ')
          ),
          metrics
            ? h('div', { className: 'nbmlops-sp-metrics' }, metrics)
            : null,
          h(
            'div',
            { className: 'nbmlops-sp-actions' },
            this._button(
              t.__('Promote'),
              `promote:${mdl.name}:${v.version}`,
              () => void this._promote(mdl, v),
              {
                disabled: busy,
                title: t.__('Point an alias at version %1', v.version)
              }
            ),
            this._button(
              t.__('Approve'),
              `approve:${mdl.name}:${v.version}`,
              () => void this._approve(mdl, v),
              {
                disabled: busy,
                title: t.__('Record your approval of version %1', v.version)
              }
            ),
            this._button(
              t.__('Lineage'),
              `lineage:${mdl.name}:${v.version}`,
              () => void m.showModelLineage(mdl.name, v.version)
            )
          )
        )
      );
    }
    card.appendChild(list);
    return card;
  }

  private async _confirm(
    title: string,
    body: FormBody,
    accept: string
  ): Promise<Record<string, string> | null> {
    const result = await showDialog({
      title,
      body,
      buttons: [
        Dialog.cancelButton({ label: this._trans.__('Cancel') }),
        Dialog.okButton({ label: accept })
      ],
      focusNodeSelector: 'input'
    });
    return result.button.accept
      ? (result.value as Record<string, string>)
      : null;
  }

  private async _promote(mdl: IModel, v: IModelVersion): Promise<void> {
    const t = this._trans;
    const known = Object.keys(mdl.aliases);
    const values = await this._confirm(
      t.__('Promote %1 v%2', mdl.name, v.version),
      new FormBody(
        t.__(
          'Point an alias of %1 at version %2. The registry checks its gates and roles first.',
          mdl.name,
          v.version
        ),
        [
          {
            name: 'alias',
            label: t.__('Alias'),
            value: known[0] ?? 'champion',
            options: known
          },
          {
            name: 'reason',
            label: t.__(
              'Override failed gates, with this reason (admins only; leave empty to obey them)'
            )
          }
        ]
      ),
      t.__('Promote')
    );
    if (values && values.alias) {
      await this.model.promote(
        mdl.name,
        v.version,
        values.alias,
        values.reason ?? ''
      );
    }
  }

  private async _approve(mdl: IModel, v: IModelVersion): Promise<void> {
    const t = this._trans;
    const values = await this._confirm(
      t.__('Approve %1 v%2', mdl.name, v.version),
      new FormBody(
        t.__('Record your approval of %1 version %2.', mdl.name, v.version),
        [{ name: 'reason', label: t.__('Reason (kept in the audit log)') }]
      ),
      t.__('Approve')
    );
    if (values) {
      await this.model.approve(mdl.name, v.version, values.reason ?? '');
    }
  }

  private async _rollback(mdl: IModel, alias: string): Promise<void> {
    const t = this._trans;
    const values = await this._confirm(
      t.__('Roll back @%1 of %2', alias, mdl.name),
      new FormBody(
        t.__(
          'Point @%1 of %2 back at the version it had before.',
          alias,
          mdl.name
        ),
        []
      ),
      t.__('Roll back')
    );
    if (values) {
      await this.model.rollback(mdl.name, alias);
    }
  }

  private _alerts(): Node {
    const a = this.model.alerts;
    const t = this._trans;
    if (!a) {
      return h('p', { className: 'nbmlops-sp-muted' }, t.__('Loading…'));
    }
    if (a.alerts.length === 0) {
      return h(
        'p',
        { className: 'nbmlops-sp-muted' },
        a.monitoring && a.monitoring !== 'ok'
          ? t.__('No open alerts (monitoring: %1).', a.monitoring)
          : t.__('No open alerts.')
      );
    }
    return h(
      'ul',
      { className: 'nbmlops-sp-alerts' },
      ...a.alerts.map(x =>
        h(
          'li',
          { 'data-severity': x.severity },
          h('strong', {}, x.title),
          x.detail ? ` — ${x.detail}` : ''
        )
      )
    );
  }

  private _trans: TranslationBundle;
  private _baseUrl: string;
  private _open = new Map<string, boolean>();
}
