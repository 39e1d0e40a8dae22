/**
 * The cell-insertion protocol, kept free of JupyterLab imports so it is unit-tested in plain node.
 *
 * The kernel (jupyter_compress.notebook.cells) opens a comm on COMM_TARGET with
 * {code, tag, anchor_cell_id}; the extension inserts a code cell directly below the anchor cell,
 * replacing an earlier generated cell with the same tag, and answers {ok: true, cell_id} or
 * {ok: false, reason}.
 */

export const COMM_TARGET = 'jupyter_compress.cells';
export const METADATA_KEY = 'jupyter_compress';

export interface IInsertRequest {
  code: string;
  tag: string;
  anchorCellId: string | null;
}

export type Ack = { ok: true; cell_id: string } | { ok: false; reason: string };

export type Validation = { ok: true; request: IInsertRequest } | { ok: false; reason: string };

/** Check a comm message's data; say in one sentence what is wrong. */
export function validateRequest(data: unknown): Validation {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    return { ok: false, reason: 'the request must be a JSON object' };
  }
  const d = data as Record<string, unknown>;
  if (typeof d.code !== 'string') {
    return { ok: false, reason: "the request's 'code' must be a string" };
  }
  const tag = d.tag === undefined || d.tag === null ? '' : d.tag;
  if (typeof tag !== 'string') {
    return { ok: false, reason: "the request's 'tag' must be a string" };
  }
  const anchor = d.anchor_cell_id === undefined ? null : d.anchor_cell_id;
  if (anchor !== null && (typeof anchor !== 'string' || anchor === '')) {
    return { ok: false, reason: "the request's 'anchor_cell_id' must be a non-empty string or null" };
  }
  return { ok: true, request: { code: d.code, tag, anchorCellId: anchor as string | null } };
}

/** What the extension needs to know of a cell to plan an insertion. */
export interface ICellInfo {
  id: string;
  metadata: Record<string, unknown>;
}

/** The tag of a cell this extension generated, or null for any other cell. */
export function generatedTag(metadata: Record<string, unknown>): string | null {
  const mark = metadata[METADATA_KEY];
  if (mark && typeof mark === 'object' && (mark as Record<string, unknown>).generated === true) {
    const tag = (mark as Record<string, unknown>).tag;
    return typeof tag === 'string' ? tag : null;
  }
  return null;
}

export function generatedMetadata(tag: string): Record<string, unknown> {
  return { [METADATA_KEY]: { generated: true, tag } };
}

/**
 * Where to insert: the indices of earlier generated cells with the same tag to delete (descending,
 * so deleting them in order keeps the others valid), and the index the new cell takes once they are
 * deleted, which is right below the anchor. `activeIndex` is used when the request has no anchor.
 */
export type Plan = { ok: true; remove: number[]; insertAt: number } | { ok: false; reason: string };

export function planInsertion(cells: ICellInfo[], request: IInsertRequest, activeIndex = -1): Plan {
  let anchor: number;
  if (request.anchorCellId === null) {
    if (activeIndex < 0 || activeIndex >= cells.length) {
      return { ok: false, reason: 'no anchor cell id was given and the notebook has no active cell' };
    }
    anchor = activeIndex;
  } else {
    anchor = cells.findIndex(c => c.id === request.anchorCellId);
    if (anchor < 0) {
      return { ok: false, reason: `no cell with id '${request.anchorCellId}' in this notebook` };
    }
  }
  const remove: number[] = [];
  if (request.tag !== '') {
    cells.forEach((c, i) => {
      if (i !== anchor && generatedTag(c.metadata) === request.tag) {
        remove.push(i);
      }
    });
  }
  remove.sort((a, b) => b - a);
  const removedAbove = remove.filter(i => i < anchor).length;
  return { ok: true, remove, insertAt: anchor - removedAbove + 1 };
}

/** The template the palette command inserts for a model variable. */
export function templateCell(modelName: string): string {
  return `%compress ${modelName} --prune 0.5 --as ${modelName}_small`;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/;

/** A model variable must be a (dotted) Python name; anything else would make a broken magic line. */
export function isModelName(name: string): boolean {
  return IDENTIFIER.test(name);
}
