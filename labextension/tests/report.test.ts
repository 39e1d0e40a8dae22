// @vitest-environment happy-dom
import { readFileSync } from 'fs';
import { join } from 'path';
import { describe, expect, it } from 'vitest';

import { format4g, formatBytes, renderReport, reportCounts, summaryLines } from '../src/report';

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
    const rows = Array.from(host.querySelectorAll('tr')).map(tr =>
      Array.from(tr.children).map(td => td.textContent)
    );
    expect(rows[0]).toEqual(['', 'before', 'after', 'ratio / change']);
    expect(rows.slice(1)).toEqual(fixture.summary);
    expect(host.querySelectorAll('li')).toHaveLength(fixture.report.notes.length);
    expect(host.textContent).toContain('4 layer changes, 0 skipped (plan: prune -> svd)');
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
