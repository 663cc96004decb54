/**
 * The status bar item: where runs are tracked and how many records still wait in the journal
 * to reach that store.
 */

import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { PanelModel, formatDuration } from './model';

/** The store as a short label: the file name of a SQLite store, the host of a server. */
export function storeLabel(store: string): string {
  const m = /^[a-z+]+:\/\/\/?(.*)$/i.exec(store);
  const rest = m ? m[1] : store;
  const parts = rest.split(/[/\\]/).filter(Boolean);
  return parts.length ? parts[parts.length - 1] : store;
}

export class JournalStatus extends Widget {
  constructor(
    private readonly model: PanelModel,
    private readonly trans: TranslationBundle,
    onClick: () => void
  ) {
    super({ node: document.createElement('button') });
    this.addClass('nbmlops-sp-statusbar');
    this.addClass('jp-StatusBar-TextItem');
    (this.node as HTMLButtonElement).type = 'button';
    this.node.addEventListener('click', onClick);
    model.changed.connect(this._render, this);
    this._render();
  }

  private _render(): void {
    const j = this.model.journal;
    const t = this.trans;
    if (!j) {
      this.node.textContent = t.__('MLOps: …');
      this.node.title = t.__('Waiting for the nbmlops server extension');
      return;
    }
    this.node.dataset.pending = String(j.pending);
    this.node.textContent = t.__(
      'MLOps: %1 · %2 pending',
      storeLabel(j.store),
      j.pending
    );
    const lines = [
      t.__('Tracking store: %1', j.store),
      t.__('Journal: %1 records waiting to reach it', j.pending)
    ];
    if (j.oldest_pending_s !== null && j.pending > 0) {
      lines.push(
        t.__('oldest waiting for %1', formatDuration(j.oldest_pending_s))
      );
    }
    if (j.quarantined > 0) {
      lines.push(t.__('%1 malformed records quarantined', j.quarantined));
    }
    this.node.title = lines.join('\n');
  }
}
