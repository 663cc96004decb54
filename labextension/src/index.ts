/**
 * nbmlops for JupyterLab 4 and Notebook 7: the "MLOps" side panel following the active
 * notebook, "Track this cell", tracked cells' badges and the journal's status bar item.
 */

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import {
  INotebookTracker,
  NotebookActions,
  NotebookPanel
} from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';

import { boundsFromSettings } from './backoff';
import { CellBadges } from './badges';
import { mlopsIcon, trackIcon } from './icons';
import { PanelModel } from './model';
import { MlopsPanel } from './panel';
import { RestClient } from './request';
import { JournalStatus } from './statusbar';
import { isTracked, toggleTrack } from './track';

const PLUGIN_ID = 'nbmlops:plugin';

export namespace CommandIDs {
  export const open = 'nbmlops:open-panel';
  export const refresh = 'nbmlops:refresh';
  export const toggleTrack = 'nbmlops:toggle-track';
  export const openRun = 'nbmlops:open-run';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'The MLOps side panel, cell tracking toggle and journal status of nbmlops.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [
    ICommandPalette,
    ISettingRegistry,
    ILayoutRestorer,
    IStatusBar,
    ITranslator
  ],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    restorer: ILayoutRestorer | null,
    statusBar: IStatusBar | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load('nbmlops');
    const settings = app.serviceManager.serverSettings;
    const model = new PanelModel({ client: new RestClient(settings) });

    const panel = new MlopsPanel({ model, trans, baseUrl: settings.baseUrl });
    panel.id = 'nbmlops-panel';
    panel.title.icon = mlopsIcon;
    panel.title.caption = trans.__('MLOps');
    app.shell.add(panel, 'left', { rank: 900 });
    restorer?.add(panel, 'nbmlops-panel');

    const openPanel = (): void => {
      app.shell.activateById(panel.id);
    };
    const openRun = (runId: string): void => {
      openPanel();
      panel.openRun(runId);
    };

    // follow the active notebook, and its new path when it is renamed
    const follow = (): void => {
      model.setNotebook(tracker.currentWidget?.context.path ?? null);
    };
    const onPath = (): void => follow();
    let followed: NotebookPanel | null = null;
    tracker.currentChanged.connect(() => {
      followed?.context.pathChanged.disconnect(onPath);
      followed = tracker.currentWidget;
      followed?.context.pathChanged.connect(onPath);
      follow();
    });

    // a tracked cell just finished: its run is on its way through the journal, so ask now and
    // keep asking at the shortest wait until it shows (see backoff.ts for why not a push)
    NotebookActions.executed.connect((_, { notebook, cell }) => {
      if (
        notebook === tracker.currentWidget?.content &&
        isTracked(cell.model.sharedModel.getSource())
      ) {
        void model.kick();
      }
    });

    const badges = new CellBadges(tracker, model, trans, openRun);

    app.commands.addCommand(CommandIDs.open, {
      label: trans.__('Show MLOps Panel'),
      caption: trans.__(
        'Show the runs, models, lineage and alerts of the active notebook'
      ),
      icon: mlopsIcon,
      execute: openPanel
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: trans.__('Refresh MLOps Panel'),
      execute: () => model.kick()
    });
    app.commands.addCommand(CommandIDs.openRun, {
      label: trans.__('Open Run in MLOps Panel'),
      execute: args => {
        if (typeof args.runId === 'string') {
          openRun(args.runId);
        }
      }
    });
    const activeCode = () => {
      const cell = tracker.activeCell;
      return cell && cell.model.type === 'code' ? cell : null;
    };
    app.commands.addCommand(CommandIDs.toggleTrack, {
      label: trans.__('Track this cell'),
      // the magic goes in as an argument: the translator reads %% in a message as one %
      caption: trans.__(
        'Add or remove %1 as the first line of the active cell',
        '%%track'
      ),
      icon: args => (args.toolbar ? trackIcon : undefined),
      isEnabled: () => activeCode() !== null,
      isToggled: () => {
        const cell = activeCode();
        return cell !== null && isTracked(cell.model.sharedModel.getSource());
      },
      execute: () => {
        const cell = activeCode();
        if (!cell) {
          return;
        }
        const shared = cell.model.sharedModel;
        shared.setSource(toggleTrack(shared.getSource()));
        app.commands.notifyCommandChanged(CommandIDs.toggleTrack);
        badges.update();
      }
    });
    tracker.activeCellChanged.connect(() =>
      app.commands.notifyCommandChanged(CommandIDs.toggleTrack)
    );

    if (palette) {
      const category = trans.__('MLOps');
      for (const command of [
        CommandIDs.open,
        CommandIDs.refresh,
        CommandIDs.toggleTrack
      ]) {
        palette.addItem({ command, category });
      }
    }

    if (statusBar) {
      statusBar.registerStatusItem('nbmlops:journal', {
        item: new JournalStatus(model, trans, openPanel),
        align: 'left',
        rank: 5
      });
    }

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(s => {
          const apply = (): void => {
            model.configure(
              boundsFromSettings(
                s.get('refreshInterval').composite,
                s.get('maxRefreshInterval').composite
              ),
              s.get('runLimit').composite as number
            );
            badges.enabled = s.get('showBadges').composite !== false;
          };
          apply();
          s.changed.connect(apply);
        })
        .catch(reason => {
          console.error('nbmlops: could not load its settings', reason);
        });
    }

    void app.restored.then(() => {
      follow();
      model.start();
    });
  }
};

export default plugin;
