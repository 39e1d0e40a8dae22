/**
 * Issue 18 (the first hour), in a real JupyterLab in headless Chromium: compare(...) shows its table (not
 * a JSON tree); a report with a crossed threshold shows the FAIL line first, in red, and its per-layer
 * table (collapsible); report plots are drawn by the BokehJS the extension ships (no BokehJS in outputs).
 * Started by scripts/e2e.sh (e.g. `bash scripts/e2e.sh -g "issue 18"`).
 */
import { expect, test } from '@jupyterlab/galata';
import type { Page } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

const ARTIFACTS = path.join(__dirname, '..', 'artifacts');
const REPORT_MIME = 'application/vnd.jupyter-compress.report+json';

async function shot(page: Page, name: string): Promise<void> {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}

/** The outputs of cell `index` as the notebook model holds them. */
async function outputs(page: Page, index: number): Promise<any[]> {
  return page.evaluate(i => {
    const cell = (window as any).jupyterapp.shell.currentWidget.content.widgets[i];
    return cell.model.outputs.toJSON();
  }, index);
}

const SETUP = [
  'import jupyter_compress as jc',
  'from jupyter_compress import plotting',
  'from jupyter_compress.examples.digits import train_digits_cnn',
  'model, X_test, y_test = train_digits_cnn(epochs=5)',
  "print('trained')"
].join('\n');

const FAILING_REPORT = [
  'small, report = jc.compress(model, jc.Plan.of(jc.TuckerConfig(rank=0.1)), eval=jc.Evaluator((X_test, y_test)))',
  'jc.attach_thresholds(report, jc.Thresholds(max_drop=0.02))  # Tucker at 10% loses more than 2 points',
  'plotting.attach_plots(report, model, small)',
  'report'
].join('\n');

const COMPARE = "jc.compare(model, (X_test, y_test), budget=0.5, methods=['prune', 'svd'])";

test.describe('issue 18: what a new user meets first', () => {
  test('a crossed threshold first in red, the per-layer table, plots drawn by the shipped BokehJS; compare is a table', async ({ page }) => {
    await page.notebook.createNew('first-hour.ipynb');
    await page.notebook.setCell(0, 'code', SETUP);
    await page.notebook.addCell('code', FAILING_REPORT);
    await page.notebook.addCell('code', COMPARE);
    await page.notebook.runCell(0);
    await expect(page.locator('.jp-Cell').nth(0)).toContainText('trained', { timeout: 180_000 });

    // (point 4) the report: FAIL line right under the title, red, above the summary table
    await page.notebook.runCell(1);
    const report = page.locator('.jp-Cell').nth(1).locator('.jp-CompressReport');
    await expect(report).toBeVisible({ timeout: 180_000 });
    const fail = report.locator('.jp-CompressReport-fail');
    await expect(fail).toHaveCount(1);
    await expect(fail).toHaveText(/^FAIL: accuracy dropped by [0-9.]+ \(limit 0\.02\)$/);
    await expect(fail).toHaveCSS('color', 'rgb(207, 34, 46)');
    const order = await report.evaluate(box =>
      Array.from(box.children).map(c => c.className.split(' ').pop())
    );
    expect(order.slice(0, 3)).toEqual(['jp-CompressReport-title', 'jp-CompressReport-fail', 'jp-CompressReport-summary']);
    // the per-layer table, in a details element: open, and it collapses
    const layers = report.locator('details.jp-CompressReport-layers');
    const table = layers.locator('table.jp-CompressReport-layerTable');
    await expect(table).toBeVisible();
    await expect(table.locator('th').first()).toHaveText('layer');
    await expect(table.locator('tr').filter({ hasText: 'conv1' })).toHaveCount(1);
    await expect(table.locator('tr').filter({ hasText: 'tucker' }).first()).toBeVisible();
    await shot(page, 'issue18-01-report-fail-first');
    await layers.locator('summary').click();
    await expect(table).toBeHidden();
    await layers.locator('summary').click();
    await expect(table).toBeVisible();

    // (point 8) its plots: data only in the output, drawn by the BokehJS the extension ships
    const plot = report.locator('.jp-CompressReport-plot').first();
    await expect(plot.locator('canvas').first()).toBeVisible();
    await expect(report).not.toContainText('plots hidden');
    await expect(report).not.toContainText('plot not drawn');
    const out = (await outputs(page, 1)).find(o => o.data && o.data[REPORT_MIME]);
    expect(out.data[REPORT_MIME].plot_items.length).toBeGreaterThan(0);
    expect(out.data[REPORT_MIME].plots_html).toBeUndefined();
    expect(JSON.stringify(out).length).toBeLessThan(300_000); // BokehJS alone is 1.7 MB
    await plot.scrollIntoViewIfNeeded();
    await shot(page, 'issue18-02-report-plot');

    // (point 2) compare(...) is a table with one row per method, not a JSON tree
    await page.notebook.runCell(2);
    const area = page.locator('.jp-Cell').nth(2).locator('.jp-OutputArea-output');
    const compareTable = area.locator('.jupyter-compress-compare table');
    await expect(compareTable).toBeVisible({ timeout: 180_000 });
    await expect(compareTable.locator('tr').filter({ hasText: 'pruning, unstructured' })).toHaveCount(1);
    await expect(compareTable.locator('tr').filter({ hasText: /low-rank \(/ })).toHaveCount(1);
    await expect(compareTable.locator('th').first()).toHaveText('method');
    await expect(page.locator('.jp-Cell').nth(2).locator('.jp-RenderedJSON')).toHaveCount(0);
    const bundle = (await outputs(page, 2)).find(o => o.data && o.data['text/html']);
    expect(Object.keys(bundle.data).sort()).toEqual(['text/html', 'text/plain']);
    // its Pareto plot: the HTML carries the figure's data, drawn with the extension's BokehJS
    await expect(area.locator('.jupyter-compress-bokeh-item canvas').first()).toBeVisible();
    expect(JSON.stringify(bundle).length).toBeLessThan(300_000);
    await area.locator('.jupyter-compress-compare').scrollIntoViewIfNeeded();
    await shot(page, 'issue18-03-compare-table');
  });
});
