import { describe, expect, it } from 'vitest';

import { WIDGET_VIEW_MIME, fallbackHtml, isMissingModel } from '../src/widgetstatic';

const view = { version_major: 2, version_minor: 0, model_id: 'abc' };

describe('fallbackHtml', () => {
  it('is the text/html beside a widget view', () => {
    expect(fallbackHtml({ [WIDGET_VIEW_MIME]: view, 'text/plain': 'x', 'text/html': '<b>panel</b>' })).toBe('<b>panel</b>');
    expect(fallbackHtml({ [WIDGET_VIEW_MIME]: view, 'text/html': ['<b>', 'panel</b>'] })).toBe('<b>panel</b>');
  });
  it('is null for widgets without one, and for outputs that are not widgets', () => {
    expect(fallbackHtml({ [WIDGET_VIEW_MIME]: view, 'text/plain': 'HBox(...)' })).toBeNull();
    expect(fallbackHtml({ [WIDGET_VIEW_MIME]: view, 'text/html': '  ' })).toBeNull();
    expect(fallbackHtml({ 'text/html': '<b>report</b>' })).toBeNull();
  });
});

describe('isMissingModel', () => {
  it("recognizes ipywidgets' error text only", () => {
    expect(isMissingModel('Error displaying widget: model not found')).toBe(true);
    expect(isMissingModel('Loading widget...')).toBe(false);
    expect(isMissingModel('')).toBe(false);
    expect(isMissingModel(null)).toBe(false);
  });
});
