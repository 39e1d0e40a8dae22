/** Pure helpers of the widget outputs' static fallback (widgetfallback.ts); tested without a browser. */

export const WIDGET_VIEW_MIME = 'application/vnd.jupyter.widget-view+json';

/** The static HTML a widget output carries beside its view, or null (then nothing changes). */
export function fallbackHtml(data: Record<string, unknown>): string | null {
  if (!(WIDGET_VIEW_MIME in data)) {
    return null;
  }
  const html = data['text/html'];
  if (Array.isArray(html) && html.every(part => typeof part === 'string')) {
    return html.join('');
  }
  return typeof html === 'string' && html.trim() !== '' ? html : null;
}

/** Whether ipywidgets' renderer gave up on the output's model (it writes this text, and nothing else). */
export function isMissingModel(text: string | null | undefined): boolean {
  return /^\s*Error displaying widget\b/.test(text ?? '');
}
