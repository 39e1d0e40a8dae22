import { describe, expect, it } from 'vitest';

import {
  ICellInfo,
  generatedMetadata,
  generatedTag,
  isModelName,
  planInsertion,
  templateCell,
  validateRequest
} from '../src/protocol';

const cell = (id: string, tag?: string): ICellInfo => ({
  id,
  metadata: tag === undefined ? {} : generatedMetadata(tag)
});

/** Apply a plan to a list of ids the way cells.ts applies it to the notebook model. */
function apply(cells: ICellInfo[], plan: { remove: number[]; insertAt: number }, id: string): string[] {
  const ids = cells.map(c => c.id);
  for (const i of plan.remove) {
    ids.splice(i, 1);
  }
  ids.splice(plan.insertAt, 0, id);
  return ids;
}

describe('validateRequest', () => {
  it('accepts the kernel message and normalizes tag and anchor', () => {
    expect(validateRequest({ code: 'x = 1', tag: 't', anchor_cell_id: 'a' })).toEqual({
      ok: true,
      request: { code: 'x = 1', tag: 't', anchorCellId: 'a' }
    });
    expect(validateRequest({ code: '' })).toEqual({
      ok: true,
      request: { code: '', tag: '', anchorCellId: null }
    });
  });

  it.each([
    [null, 'JSON object'],
    [[1], 'JSON object'],
    ['code', 'JSON object'],
    [{ tag: 't' }, "'code'"],
    [{ code: 1 }, "'code'"],
    [{ code: 'x', tag: 3 }, "'tag'"],
    [{ code: 'x', anchor_cell_id: '' }, "'anchor_cell_id'"],
    [{ code: 'x', anchor_cell_id: 5 }, "'anchor_cell_id'"]
  ])('refuses %j naming the bad field', (data, word) => {
    const v = validateRequest(data);
    expect(v.ok).toBe(false);
    expect(v.ok ? '' : v.reason).toContain(word);
  });
});

describe('planInsertion', () => {
  const request = (anchorCellId: string | null, tag = 'g') => ({ code: 'c', tag, anchorCellId });

  it('inserts directly below the anchor, not below the active cell', () => {
    const cells = [cell('a'), cell('b'), cell('c')];
    const plan = planInsertion(cells, request('a'), 2);
    expect(plan).toEqual({ ok: true, remove: [], insertAt: 1 });
    expect(apply(cells, plan as any, 'new')).toEqual(['a', 'new', 'b', 'c']);
  });

  it('replaces the earlier generated cell with the same tag', () => {
    const cells = [cell('a'), cell('old', 'g'), cell('b'), cell('other', 'h')];
    const plan = planInsertion(cells, request('a'));
    expect(apply(cells, plan as any, 'new')).toEqual(['a', 'new', 'b', 'other']);
  });

  it('moves a same-tag cell found above the anchor to below it', () => {
    const cells = [cell('old', 'g'), cell('x'), cell('a'), cell('b')];
    const plan = planInsertion(cells, request('a'));
    expect(plan).toEqual({ ok: true, remove: [0], insertAt: 2 });
    expect(apply(cells, plan as any, 'new')).toEqual(['x', 'a', 'new', 'b']);
  });

  it('removes every duplicate, in descending order', () => {
    const cells = [cell('d1', 'g'), cell('a'), cell('d2', 'g'), cell('b'), cell('d3', 'g')];
    const plan = planInsertion(cells, request('a'));
    expect(plan.ok && plan.remove).toEqual([4, 2, 0]);
    expect(apply(cells, plan as any, 'new')).toEqual(['a', 'new', 'b']);
  });

  it('never deletes the anchor, even when it is a generated cell with that tag', () => {
    const cells = [cell('a', 'g'), cell('b')];
    expect(apply(cells, planInsertion(cells, request('a')) as any, 'new')).toEqual(['a', 'new', 'b']);
  });

  it('an empty tag replaces nothing', () => {
    const cells = [cell('a'), cell('e', '')];
    expect(apply(cells, planInsertion(cells, request('a', '')) as any, 'new')).toEqual(['a', 'new', 'e']);
  });

  it('falls back to the active cell without an anchor id, and refuses an unknown anchor', () => {
    const cells = [cell('a'), cell('b')];
    expect(apply(cells, planInsertion(cells, request(null), 1) as any, 'new')).toEqual(['a', 'b', 'new']);
    expect(planInsertion(cells, request(null), -1).ok).toBe(false);
    const missing = planInsertion(cells, request('zzz'));
    expect(missing).toEqual({ ok: false, reason: "no cell with id 'zzz' in this notebook" });
  });

  it('reads only its own marks', () => {
    expect(generatedTag({ jupyter_compress: { generated: true, tag: 'g' } })).toBe('g');
    expect(generatedTag({ jupyter_compress: { generated: false, tag: 'g' } })).toBeNull();
    expect(generatedTag({ tags: ['g'] })).toBeNull();
  });
});

describe('template', () => {
  it('makes a magic line for a valid name only', () => {
    expect(templateCell('net')).toBe('%compress net --prune 0.5 --as net_small');
    expect(isModelName('net.encoder')).toBe(true);
    for (const bad of ['', '1net', 'a b', 'x; import os', 'a..b']) {
      expect(isModelName(bad)).toBe(false);
    }
  });
});
