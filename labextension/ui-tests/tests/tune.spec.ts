/**
 * Issue 18, the tuning panel's first hour: Generate cell writes exactly the plan Apply ran (controls set from
 * Python and from the UI, numbers as a person writes them), and a panel whose kernel is gone shows its static
 * summary, not "Error displaying widget". Started by scripts/e2e.sh (-g "first hour").
 */
import { expect, test } from '@jupyterlab/galata';
import type { Locator, Page } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

const ARTIFACTS = path.join(__dirname, '..', 'artifacts');

async function shot(page: Page, name: string): Promise<void> {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}

interface ICellState {
  source: string;
  tag: string | null;
  text: string;
}

async function cells(page: Page): Promise<ICellState[]> {
  return page.evaluate(() => {
    const panel = (window as any).jupyterapp.shell.currentWidget;
    return panel.content.widgets.map((cell: any) => {
      const mark = cell.model.getMetadata('jupyter_compress');
      const outputs = cell.model.type === 'code' ? cell.model.outputs.toJSON() : [];
      const text = outputs.map((o: any) => (o.text ?? '') + (o.traceback ? o.traceback.join('\n') : '')).join('');
      return { source: cell.model.sharedModel.getSource(), tag: mark && mark.generated ? mark.tag : null, text };
    });
  });
}

async function waitForText(page: Page, index: number, pattern: RegExp): Promise<string> {
  await expect.poll(async () => (await cells(page))[index]?.text ?? '', { timeout: 180_000 }).toMatch(pattern);
  return (await cells(page))[index].text;
}

function panelIn(page: Page, index: number): Locator {
  return page.locator('.jp-Cell').nth(index).locator('.jp-OutputArea-output')
    .filter({ has: page.getByRole('tab', { name: 'pruning' }) });
}

function slider(panel: Locator, name: string): Locator {
  return panel.locator('.widget-slider:visible').filter({ hasText: name });
}

async function press(page: Page, key: string, times: number): Promise<void> {
  for (let i = 0; i < times; i++) {
    await page.keyboard.press(key);
  }
}

const SETUP = [
  'from jupyter_compress.examples.digits import train_digits_cnn',
  'from jupyter_compress import Plan, state_dict_hash',
  'model, X_test, y_test = train_digits_cnn(epochs=5)',
  'probe = X_test[:8]',
  "print('trained')"
].join('\n');

// set from Python right after the panel's cell, as the quickstart does under Run All
const FROM_PYTHON = [
  'panel = _compress_panel',
  'panel.method_pickers["decomposition"].value = "svd"',
  'panel.controls["svd"]["rank"].value = 0.8',
  'panel.method_pickers["pruning"].value = "prune"',
  "print('set from python')"
].join('\n');

test.describe('jupyter-compress tuning panel, the first hour', () => {
  test('first hour: Generate cell writes the applied plan (set from Python and the UI) and reproduces its hash', async ({ page }) => {
    await page.notebook.createNew('tune-first-hour.ipynb');
    await page.notebook.setCell(0, 'code', SETUP);
    await page.notebook.addCell('code', '%load_ext jupyter_compress\n%compress model --tune --example probe');
    await page.notebook.addCell('code', FROM_PYTHON);
    await page.notebook.addCell('code', [
      "print('applied', state_dict_hash(model_tuned))",
      "print('plans equal', Plan.from_yaml(panel.cell_code().split(chr(10), 1)[1]) == panel.applied_plan)"
    ].join('\n'));
    await page.notebook.addCell('code', "print('regenerated', state_dict_hash(model_tuned))");
    await page.notebook.runCell(0);
    await waitForText(page, 0, /trained/);
    await page.notebook.runCell(1);
    await page.notebook.runCell(2); // at once, while the panel's views are still being drawn
    await waitForText(page, 2, /set from python/);
    const panel = panelIn(page, 1);
    await expect(panel.getByText('after (preview)')).toBeVisible();

    // the browser shows what Python set, and keeps it (no echo of the slider's own value)
    await panel.getByRole('tab', { name: 'decomposition' }).click();
    await expect(slider(panel, 'rank').locator('.widget-readout')).toHaveText('0.80');
    await page.waitForTimeout(2000);
    await expect(slider(panel, 'rank').locator('.widget-readout')).toHaveText('0.80');

    // the amount from the UI: 0.50 -> 0.40 with the keyboard (0.4000000000000001 in the browser's floats)
    await panel.getByRole('tab', { name: 'pruning' }).click();
    const amount = slider(panel, 'amount');
    await expect(amount.locator('.widget-readout')).toHaveText('0.50');
    await amount.locator('.noUi-handle').focus();
    await press(page, 'ArrowLeft', 10);
    await expect(amount.locator('.widget-readout')).toHaveText('0.40');
    await shot(page, '20-first-hour-controls');

    await panel.getByRole('button', { name: 'Apply', exact: true }).click();
    await expect(panel.getByText(/Applied .* as 'model_tuned'/)).toBeVisible();
    // moved after Apply: Generate cell still writes what was applied
    await amount.locator('.noUi-handle').focus();
    await press(page, 'ArrowRight', 5);
    await expect(amount.locator('.widget-readout')).toHaveText('0.45');

    await page.notebook.selectCells(4);
    await panel.getByRole('button', { name: 'Generate cell' }).click();
    await expect(panel.getByText('Inserted the %%compress cell below. It holds the applied plan.')).toBeVisible();
    let state = await cells(page);
    expect(state).toHaveLength(6);
    const generated = state[2].source;
    expect(generated).toMatch(/^%%compress model --as model_tuned\n/);
    expect(generated).toContain('reproduces the applied result');
    expect(generated).toContain('rank: 0.8\n');
    expect(generated).toContain('amount: 0.4\n');
    expect(generated).not.toMatch(/\d\.\d*0000000/);
    await shot(page, '21-first-hour-generated');

    await page.notebook.runCell(4);
    const out = await waitForText(page, 4, /plans equal \w+/);
    expect(out).toContain('plans equal True');
    const applied = /applied ([0-9a-f]+)/.exec(out)![1];
    await page.notebook.runCell(2);
    await waitForText(page, 2, /compressed model as 'model_tuned'/);
    await page.notebook.runCell(5);
    const rerun = await waitForText(page, 5, /regenerated [0-9a-f]+/);
    expect(/regenerated ([0-9a-f]+)/.exec(rerun)![1]).toBe(applied);
    state = await cells(page);
    expect(state.filter(c => c.tag !== null)).toHaveLength(1);
    await shot(page, '22-first-hour-reproduced');
  });

  test('first hour: a panel whose kernel is gone shows its static summary, not a widget error', async ({ page, tmpPath }) => {
    const name = 'tune-reload.ipynb';
    await page.notebook.createNew(name);
    await page.notebook.setCell(0, 'code', [
      'import torch',
      'model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))',
      '%load_ext jupyter_compress',
      '%compress model --tune'
    ].join('\n'));
    await page.notebook.addCell('code', [
      'panel = _compress_panel',
      'panel.method_pickers["pruning"].value = "prune"',
      'panel.apply()',
      "print('applied')"
    ].join('\n'));
    await page.notebook.runCell(0);
    const panel = panelIn(page, 0);
    await expect(panel.getByText('after (preview)')).toBeVisible();
    await page.notebook.runCell(1);
    await waitForText(page, 1, /applied/);
    await expect(panel.getByText('after (preview)')).toBeVisible(); // still the live panel after the update
    await expect(page.locator('.jp-CompressWidgetFallback')).toHaveCount(0);
    await page.notebook.save();

    // the kernel is gone (shut down with its session), and reopening the notebook starts a new one without the
    // panel's widget models. Not sessionContext.changeKernel: on a loaded machine its new connection was once
    // closed 30 ms after it opened and never reconnected (JupyterLab showed "Disconnected"), a race outside this test
    const current = () => page.evaluate(() => (window as any).jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.id ?? '');
    const before = await current();
    expect(before).not.toBe('');
    await page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.sessionContext.shutdown());
    await expect.poll(current).toBe('');
    await page.notebook.close();

    // reopened with a new kernel: the saved output is drawn from the notebook file
    await page.notebook.openByPath(`${tmpPath}/${name}`);
    await expect.poll(current, { timeout: 120_000 }).not.toMatch(new RegExp(`^(${before})?$`));
    const output = page.locator('.jp-Cell').nth(0).locator('.jp-OutputArea');
    const fallback = output.locator('.jp-CompressWidgetFallback');
    await expect(fallback).toBeVisible();
    await expect(fallback).toContainText('jupyter_compress tuning panel');
    await expect(fallback).toContainText('Applied as model_tuned');
    await expect(fallback).toContainText('amount: 0.5');
    await expect(output).not.toContainText('Error displaying widget');
    await expect(output).not.toContainText('VBox(children');
    await shot(page, '23-first-hour-static-after-reload');
  });
});
