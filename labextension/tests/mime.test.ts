// @vitest-environment happy-dom
import { readFileSync } from 'fs';
import { join } from 'path';
import { afterEach, describe, expect, it } from 'vitest';
import { Widget } from '@lumino/widgets';

import { ReportWidget, rendererFactory } from '../src/mime';
import { REPORT_MIME, reportPlots } from '../src/report';

const fixture = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'report.json'), 'utf8'));

// What jupyter_compress.plotting attaches: a div and a script that draws into it (BokehJS does the
// same through Bokeh.embed); the script counts its runs so the test sees whether it was executed.
const PLOT = '<div id="plot-1"></div><script>window.__plotRuns = (window.__plotRuns || 0) + 1;' +
  'document.getElementById("plot-1").textContent = "drawn";</script>';
const withPlots = { ...fixture.report, plots_html: [['weights', PLOT], ['errors', '<p>second</p>']] };

// A sanitizer that would let scripts through: the untrusted branch must not depend on it.
const lenient = { sanitize: (s: string) => s };

function render(data: unknown, trusted: boolean): Promise<ReportWidget> {
  const widget = rendererFactory.createRenderer({
    mimeType: REPORT_MIME,
    sanitizer: lenient,
    resolver: null,
    linkHandler: null,
    latexTypesetter: null
  }) as ReportWidget;
  Widget.attach(widget, document.body);
  const model = { trusted, data: { [REPORT_MIME]: data }, metadata: {}, setData: () => undefined } as any;
  return widget.renderModel(model).then(() => widget);
}

afterEach(() => {
  document.body.textContent = '';
  (window as any).__plotRuns = 0;
});

describe('ReportWidget', () => {
  it('renders the plots of a trusted output, scripts run, under the summary', async () => {
    const widget = await render(withPlots, true);
    expect(widget.node.querySelector('.jp-CompressReport-summary')).not.toBeNull();
    const plots = widget.node.querySelectorAll('.jp-CompressReport-plot');
    expect(Array.from(plots).map(p => p.querySelector('.jp-CompressReport-plotTitle')?.textContent))
      .toEqual(['weights', 'errors']);
    expect((window as any).__plotRuns).toBe(1);
    expect(widget.node.querySelector('#plot-1')?.textContent).toBe('drawn');
    expect(plots[1].textContent).toContain('second');
    expect(widget.node.textContent).not.toContain('plots hidden');
  });

  it('shows only the text summary of an untrusted output, and says the plots are hidden', async () => {
    const widget = await render(withPlots, false);
    expect(widget.node.querySelector('.jp-CompressReport-summary')).not.toBeNull();
    expect(widget.node.querySelector('.jp-CompressReport-plot')).toBeNull();
    expect(widget.node.querySelector('script')).toBeNull();
    expect(widget.node.querySelector('#plot-1')).toBeNull();
    expect((window as any).__plotRuns ?? 0).toBe(0);
    expect(widget.node.querySelector('.jp-CompressReport-plotsHidden')?.textContent)
      .toBe('plots hidden: notebook not trusted (weights, errors)');
  });

  it('says nothing about plots when the report has none', async () => {
    for (const trusted of [true, false]) {
      const widget = await render(fixture.report, trusted);
      expect(widget.node.querySelector('.jp-CompressReport-summary')).not.toBeNull();
      expect(widget.node.textContent).not.toContain('plots');
    }
  });
});

describe('reportPlots', () => {
  it('reads [title, html] pairs and ignores anything else', () => {
    expect(reportPlots({ plots_html: [['a', '<b>1</b>'], ['bad'], 'x', null] })).toEqual([['a', '<b>1</b>']]);
    expect(reportPlots({})).toEqual([]);
  });
});
