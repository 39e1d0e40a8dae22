/**
 * The kernel side asks for a generated cell: register the comm target on every notebook's kernel
 * (again after a kernel change or restart) and insert into the notebook that owns that kernel.
 */
import { NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';

import {
  Ack,
  COMM_TARGET,
  ICellInfo,
  IInsertRequest,
  generatedMetadata,
  planInsertion,
  validateRequest
} from './protocol';
import { installWidgetFallback } from './widgetfallback';

/** Insert (or replace) the generated cell in this panel's notebook; pure model edits. */
export function insertGenerated(panel: NotebookPanel, request: IInsertRequest): Ack {
  const notebook = panel.content;
  const model = notebook.model;
  if (!model) {
    return { ok: false, reason: 'the notebook has no model (it is closing)' };
  }
  const shared = model.sharedModel;
  const cells: ICellInfo[] = shared.cells.map(c => ({
    id: c.getId(),
    metadata: (c.getMetadata() ?? {}) as Record<string, unknown>
  }));
  const plan = planInsertion(cells, request, notebook.activeCellIndex);
  if (!plan.ok) {
    return plan;
  }
  // Deleting a cell above the active one shifts the active index: keep focus on the same cell.
  const activeId = notebook.activeCell?.model.id;
  let cellId = '';
  shared.transact(() => {
    for (const index of plan.remove) {
      shared.deleteCell(index);
    }
    const cell = shared.insertCell(plan.insertAt, {
      cell_type: 'code',
      source: request.code,
      metadata: generatedMetadata(request.tag) as any
    });
    cellId = cell.getId();
  });
  if (activeId !== undefined) {
    const index = notebook.widgets.findIndex(w => w.model.id === activeId);
    if (index >= 0 && index !== notebook.activeCellIndex) {
      notebook.activeCellIndex = index;
    }
  }
  return { ok: true, cell_id: cellId };
}

function answer(panel: NotebookPanel, comm: Kernel.IComm, data: unknown): void {
  const checked = validateRequest(data);
  let ack: Ack;
  try {
    ack = checked.ok ? insertGenerated(panel, checked.request) : checked;
  } catch (err) {
    ack = { ok: false, reason: `inserting the cell failed: ${String(err)}` };
  }
  if (!comm.isDisposed) {
    comm.send(ack as any);
    comm.close();
  }
}

function register(panel: NotebookPanel, kernel: Kernel.IKernelConnection | null | undefined): void {
  if (!kernel || kernel.isDisposed) {
    return;
  }
  // Registering the same target again replaces the callback, so this is safe to repeat.
  kernel.registerCommTarget(COMM_TARGET, (comm: Kernel.IComm, msg: KernelMessage.ICommOpenMsg) => {
    answer(panel, comm, msg.content.data);
  });
}

/** Keep the target registered on the kernel of this notebook for the notebook's lifetime. */
export function watchPanel(panel: NotebookPanel): void {
  installWidgetFallback(panel); // widget outputs whose model is gone show their static HTML
  const ctx = panel.sessionContext;
  const current = () => register(panel, ctx.session?.kernel);
  ctx.kernelChanged.connect((_, change) => register(panel, change.newValue));
  ctx.statusChanged.connect((_, status) => {
    if (status === 'idle' || status === 'starting') {
      current();
    }
  });
  void ctx.ready.then(current);
  current();
}
