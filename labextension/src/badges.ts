/**
 * A small badge on each `%%track` cell of the followed notebook, showing its last run's
 * status; clicking it opens that run in the side panel.
 */

import { Cell, CodeCell } from '@jupyterlab/cells';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { TranslationBundle } from '@jupyterlab/translation';

import { h } from './dom';
import { PanelModel, lastRunOfCell } from './model';
import { isTracked } from './track';

const HOST = 'nbmlops-sp-badge-host';

export class CellBadges {
  constructor(
    private readonly tracker: INotebookTracker,
    private readonly model: PanelModel,
    private readonly trans: TranslationBundle,
    private readonly openRun: (runId: string) => void
  ) {
    model.changed.connect(this.update, this);
    tracker.currentChanged.connect(this._follow, this);
    this._follow();
  }

  /** Show or hide badges from now on (the `showBadges` setting). */
  set enabled(value: boolean) {
    this._enabled = value;
    this.update();
  }

  /** Put a badge on every tracked cell of the current notebook, and none elsewhere. */
  update(): void {
    const panel = this.tracker.currentWidget;
    if (!panel) {
      return;
    }
    for (const cell of panel.content.widgets) {
      this._badge(cell);
    }
  }

  private _follow(): void {
    const panel = this.tracker.currentWidget;
    if (this._panel === panel) {
      return;
    }
    this._panel?.content.model?.contentChanged.disconnect(this._later, this);
    this._panel = panel;
    panel?.content.model?.contentChanged.connect(this._later, this);
    this.update();
  }

  /** Typing changes the content at every key: update once the typing pauses. */
  private _later(): void {
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    this._timer = setTimeout(() => {
      this._timer = null;
      this.update();
    }, 300);
  }

  private _badge(cell: Cell): void {
    const host = cell.inputArea?.node;
    if (!host) {
      return;
    }
    let badge = host.querySelector<HTMLButtonElement>(
      ':scope > .nbmlops-sp-badge'
    );
    const tracked =
      this._enabled &&
      cell.model.type === 'code' &&
      isTracked(cell.model.sharedModel.getSource());
    if (!tracked) {
      badge?.remove();
      host.classList.remove(HOST);
      return;
    }
    const count = (cell as CodeCell).model.executionCount ?? null;
    const run = lastRunOfCell(this.model.runs, cell.model.id, count);
    const status = run ? run.status : 'NONE';
    const label = run ? run.status : this.trans.__('not run yet');
    if (!badge) {
      badge = h('button', { type: 'button', className: 'nbmlops-sp-badge' });
      badge.addEventListener('click', event => {
        event.stopPropagation();
        const id = badge!.dataset.runId;
        if (id) {
          this.openRun(id);
        }
      });
      host.appendChild(badge);
      host.classList.add(HOST);
    }
    badge.dataset.status = status;
    badge.dataset.runId = run?.run_id ?? '';
    badge.disabled = !run;
    badge.textContent = label;
    badge.title = run
      ? this.trans.__(
          'Last tracked run: %1 (%2). Click to open it in the MLOps panel.',
          run.name || run.run_id,
          run.status
        )
      : this.trans.__(
          'This cell is tracked; its runs will show here once it ran.'
        );
  }

  private _enabled = true;
  private _panel: NotebookPanel | null = null;
  private _timer: ReturnType<typeof setTimeout> | null = null;
}
