import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, InputDialog, ToolbarButton } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';

import { exposeBokehLoader, loadBokeh } from './bokeh';
import { watchPanel } from './cells';
import { isModelName, templateCell } from './protocol';

export const COMMAND_INSERT = 'jupyter-compress:insert-cell';
export const COMMAND_LABEL = 'Compress: insert %compress cell';

/** Inserts generated cells for the kernel (comm target jupyter_compress.cells). */
const cellsPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-compress:cells',
  description: 'Inserts cells that jupyter_compress asks for below the cell that asked.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) => {
    tracker.forEach(panel => watchPanel(panel));
    tracker.widgetAdded.connect((_, panel) => watchPanel(panel));
  }
};

/**
 * BokehJS once per page, from this extension's assets (bokeh.ts): kernel outputs then carry only plot
 * data. Loaded when the app is restored, so jupyter_bokeh's widgets (the tuning panel), which need
 * window.Bokeh when their view is created, find it.
 */
const bokehPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-compress:bokehjs',
  description: 'Loads the BokehJS this extension ships, once per page, for report plots and widgets.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    exposeBokehLoader();
    void app.restored.then(() => loadBokeh()).catch(e => console.warn('jupyter-compress:', e));
  }
};

async function insertTemplate(tracker: INotebookTracker): Promise<void> {
  const panel = tracker.currentWidget;
  if (!panel) {
    return;
  }
  const result = await InputDialog.getText({
    title: 'Insert a %compress cell',
    label: 'Model variable',
    placeholder: 'model',
    text: 'model'
  });
  const name = (result.value ?? '').trim();
  if (!result.button.accept || !name) {
    return;
  }
  if (!isModelName(name)) {
    window.alert(`'${name}' is not a Python variable name; give e.g. model or net.encoder.`);
    return;
  }
  const notebook = panel.content;
  NotebookActions.insertBelow(notebook);
  const cell = notebook.activeCell;
  if (cell) {
    cell.model.sharedModel.setSource(templateCell(name));
  }
}

/** The palette / toolbar / context-menu command. */
const commandPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-compress:commands',
  description: 'Command "Compress: insert %compress cell".',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, palette: ICommandPalette | null) => {
    app.commands.addCommand(COMMAND_INSERT, {
      label: COMMAND_LABEL,
      caption: 'Insert a %compress template cell for a model variable below the active cell',
      isEnabled: () => tracker.currentWidget !== null,
      execute: () => insertTemplate(tracker)
    });
    if (palette) {
      palette.addItem({ command: COMMAND_INSERT, category: 'jupyter_compress' });
    }
    app.contextMenu.addItem({ command: COMMAND_INSERT, selector: '.jp-Notebook .jp-Cell', rank: 100 });
    const addButton = (panel: NotebookPanel) => {
      const button = new ToolbarButton({
        className: 'jp-CompressInsertButton',
        label: '%compress',
        tooltip: COMMAND_LABEL,
        onClick: () => void app.commands.execute(COMMAND_INSERT)
      });
      panel.toolbar.insertItem(10, 'jupyter-compress-insert', button);
    };
    tracker.forEach(addButton);
    tracker.widgetAdded.connect((_, panel) => addButton(panel));
  }
};

export default [cellsPlugin, commandPlugin, bokehPlugin];
