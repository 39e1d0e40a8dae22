// @vitest-environment happy-dom
import { readFileSync } from 'fs';
import { join } from 'path';
import { describe, expect, it } from 'vitest';

import {
  format4g, formatBytes, layerTable, renderReport, reportCounts, reportPlotItems, summaryLines, thresholdLines
} from '../src/report';

// Written from Python; tests/test_labext.py checks `summary` is Report.summary() of `report`.
const fixture = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'report.json'), 'utf8'));

describe('summary', () => {
  it('shows the summary lines Python embedded', () => {
    const lines = [['parameters', '10', '5', '2.00x']];
    expect(summaryLines({ ...fixture.report, summary: lines })).toEqual(lines);
  });

  it('falls back to computing them like Python for the same report', () => {
    expect(summaryLines(fixture.report)).toEqual(fixture.summary);
  });

  it('formats like Python', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(38440)).toBe('37.54 KiB');
    expect(formatBytes(3 * 1024 ** 3)).toBe('3.00 GiB');
    const cases: [number, string][] = [
      [0.19341, '0.1934'], [-0.10925, '-0.1092'], [1234.5, '1234'], [12345.6, '1.235e+04'],
      [0.00001234, '1.234e-05'], [3, '3'], [0.5, '0.5'], [99999, '1e+05']
    ];
    for (const [v, s] of cases) {
      expect(format4g(v)).toBe(s);
    }
  });

  it('counts layers and lists the plan', () => {
    expect(reportCounts(fixture.report)).toEqual({ compressed: 4, skipped: 0, methods: ['prune', 'svd'] });
    const withSkip = { ...fixture.report, rows: [...fixture.report.rows, { skipped: 'no weight' }] };
    expect(reportCounts(withSkip).skipped).toBe(1);
  });
});

describe('renderReport', () => {
  it('shows the LARGER headline first, as text', () => {
    const host = document.createElement('div');
    const headline = 'WARNING: LARGER than the original (10 -> 12 bytes): <b>why</b>';
    renderReport(host, { ...fixture.report, headline });
    const warning = host.querySelector('.jp-CompressReport-warning');
    expect(warning?.textContent).toBe(headline);
    expect(warning?.previousElementSibling?.className).toBe('jp-CompressReport-title');
    expect(host.querySelector('b')).toBeNull();
  });

  it('renders the summary table and notes as text', () => {
    const host = document.createElement('div');
    renderReport(host, fixture.report);
    const rows = Array.from(host.querySelectorAll('.jp-CompressReport-summary tr')).map(tr =>
      Array.from(tr.children).map(td => td.textContent)
    );
    expect(rows[0]).toEqual(['', 'before', 'after', 'ratio / change']);
    expect(rows.slice(1)).toEqual(fixture.summary);
    expect(host.querySelectorAll('li')).toHaveLength(fixture.report.notes.length);
    expect(host.textContent).toContain('4 layer changes, 0 skipped (plan: prune -> svd)');
  });

  // what Report.to_dict() embeds for this report (tests/test_labext.py checks the fixture against Python)
  const withTable = { ...fixture.report, layer_table: fixture.layer_table };
  const failing = {
    ...withTable, thresholds: fixture.thresholds, threshold_lines: fixture.threshold_lines, passed: false
  };

  it('shows a crossed threshold first, in red, above the summary', () => {
    const host = document.createElement('div');
    renderReport(host, { ...failing, headline: 'WARNING: LARGER than the original' });
    const fail = host.querySelector('.jp-CompressReport-fail');
    expect(fail?.textContent).toBe(fixture.threshold_lines[0]);
    expect(fail?.textContent).toMatch(/^FAIL: /);
    expect(fail?.previousElementSibling?.className).toBe('jp-CompressReport-warning');
    expect(fail?.nextElementSibling?.className).toBe('jp-CompressReport-summary');
    const pass = host.querySelector('.jp-CompressReport-pass');
    expect(pass?.textContent).toBe(fixture.threshold_lines[1]);
    expect(pass?.previousElementSibling?.className).toBe('jp-CompressReport-summary');
    expect(host.querySelectorAll('.jp-CompressReport-threshold')).toHaveLength(2);
  });

  it('orders threshold lines crossed first, with their status', () => {
    const r = { thresholds: [{ ok: true }, { ok: null }, { ok: false }], threshold_lines: ['PASS: a', 'UNCHECKED: b', 'FAIL: c'] };
    expect(thresholdLines(r)).toEqual([
      { line: 'FAIL: c', status: 'fail' }, { line: 'PASS: a', status: 'pass' }, { line: 'UNCHECKED: b', status: 'unchecked' }
    ]);
    expect(thresholdLines(fixture.report)).toEqual([]);
  });

  it('shows the per-layer table Python wrote, in a collapsible details', () => {
    const host = document.createElement('div');
    renderReport(host, withTable);
    const details = host.querySelector('details.jp-CompressReport-layers') as HTMLDetailsElement;
    expect(details).not.toBeNull();
    expect(details.open).toBe(true);
    expect(details.querySelector('summary')?.textContent).toBe('4 layer changes, 0 skipped (plan: prune -> svd)');
    const rows = Array.from(details.querySelectorAll('tr')).map(tr => Array.from(tr.children).map(td => td.textContent));
    expect(rows).toEqual([fixture.layer_table.head, ...fixture.layer_table.rows]);
    expect(layerTable(fixture.report)).toBeNull();
  });

  it('never interprets the threshold lines or layer cells as HTML', () => {
    const host = document.createElement('div');
    const evil = '<img src=x onerror=alert(1)>';
    renderReport(host, {
      ...failing, threshold_lines: [evil, 'PASS'], layer_table: { head: [evil], rows: [[evil]] }
    });
    expect(host.querySelector('img')).toBeNull();
    expect(host.querySelector('.jp-CompressReport-fail')?.textContent).toBe(evil);
    expect(host.querySelector('.jp-CompressReport-layerTable td')?.textContent).toBe(evil);
  });

  it('draws plot items (bokeh JSON, data only) with the given BokehJS, for trusted outputs only', async () => {
    const items = [['weights', { doc: { version: '3.9.2' }, root_id: 'a' }], ['errors', { root_id: 'b' }]];
    const drawn: unknown[] = [];
    const embedBokeh = async (host: HTMLElement, item: unknown) => {
      drawn.push(item);
      host.appendChild(document.createElement('canvas'));
    };
    const host = document.createElement('div');
    await renderReport(host, { ...fixture.report, plot_items: items }, { trusted: true, embedBokeh });
    expect(drawn).toEqual(items.map(([, item]) => item));
    expect(Array.from(host.querySelectorAll('.jp-CompressReport-plotTitle')).map(t => t.textContent))
      .toEqual(['weights', 'errors']);
    expect(host.querySelectorAll('.jp-CompressReport-plotBody canvas')).toHaveLength(2);
    expect(reportPlotItems({ plot_items: [['x', 1], 'bad'] })).toEqual([['x', 1]]);

    const untrusted = document.createElement('div');
    drawn.length = 0;
    await renderReport(untrusted, { ...fixture.report, plot_items: items }, { trusted: false, embedBokeh });
    expect(drawn).toEqual([]);
    expect(untrusted.textContent).toContain('plots hidden: notebook not trusted (weights, errors)');
  });

  it('never interprets report text as HTML', () => {
    const host = document.createElement('div');
    renderReport(host, { ...fixture.report, notes: ['<img src=x onerror=alert(1)>'] });
    expect(host.querySelector('img')).toBeNull();
    expect(host.querySelector('li')?.textContent).toBe('<img src=x onerror=alert(1)>');
  });

  it('says plainly when the data is not a report', () => {
    const host = document.createElement('div');
    renderReport(host, { hello: 1 });
    expect(host.textContent).toContain('not a report');
  });
});
