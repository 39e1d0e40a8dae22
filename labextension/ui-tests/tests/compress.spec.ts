/**
 * jupyter-compress in a real JupyterLab, in headless Chromium. Screenshots of each step go to
 * ui-tests/artifacts/ (git-ignored). Started by scripts/e2e.sh.
 */
import { expect, test } from '@jupyterlab/galata';
import type { Locator, Page } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

const ARTIFACTS = path.join(__dirname, '..', 'artifacts');
const REPORT_MIME = 'application/vnd.jupyter-compress.report+json';

async function shot(page: Page, name: string): Promise<void> {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}

interface ICellState {
  id: string;
  source: string;
  tag: string | null;
  text: string;
}

/** The current notebook's cells as its model holds them (ids, sources, our mark, output text). */
async function cells(page: Page): Promise<ICellState[]> {
  return page.evaluate(() => {
    const panel = (window as any).jupyterapp.shell.currentWidget;
    return panel.content.widgets.map((cell: any) => {
      const mark = cell.model.getMetadata('jupyter_compress');
      const outputs = cell.model.type === 'code' ? cell.model.outputs.toJSON() : [];
      const text = outputs
        .map((o: any) => (o.text ?? '') + (o.traceback ? o.traceback.join('\n') : ''))
        .join('');
      return {
        id: cell.model.id,
        source: cell.model.sharedModel.getSource(),
        tag: mark && mark.generated ? mark.tag : null,
        text
      };
    });
  });
}

async function activeIndex(page: Page): Promise<number> {
  return page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.content.activeCellIndex);
}

/** Run cell `index` with Ctrl+Enter, then put focus in cell `focus` while it runs. */
async function runThenFocus(page: Page, index: number, focus: number): Promise<void> {
  await page.notebook.selectCells(index);
  await page.keyboard.press('Control+Enter');
  await page.notebook.selectCells(focus);
}

async function waitForText(page: Page, index: number, pattern: RegExp): Promise<string> {
  await expect.poll(async () => (await cells(page))[index]?.text ?? '', { timeout: 180_000 }).toMatch(pattern);
  return (await cells(page))[index].text;
}

/** The canvas BokehJS draws for the report's first plot in cell `index` (Playwright's CSS pierces shadow roots). */
function reportCanvas(page: Page, index: number): Locator {
  return page.locator('.jp-Cell').nth(index).locator('.jp-CompressReport-plot').first().locator('canvas').first();
}

/** The tuning panel's count of non-zero parameters: column 1 "before", 2 "after (preview)". */
function previewNonzeros(panel: Locator, column = 2): () => Promise<number> {
  const row = panel.locator('tr').filter({ hasText: 'non-zero parameters' });
  return async () => Number((await row.locator('td').nth(column).innerText()).replace(/,/g, ''));
}

// A plot whose script would mark the page if it ran (it must not, in an untrusted notebook).
const PLOTS = [['weights', '<div>plot</div><script>window.__untrustedPlotRan = 1;</script>']];

const SETUP = [
  'from jupyter_compress.examples.digits import train_digits_cnn',
  'model, X_test, y_test = train_digits_cnn(epochs=5)',
  "print('trained')"
].join('\n');

const GENERATE = [
  'import time',
  'from jupyter_compress import Plan, PruneConfig, compress, state_dict_hash',
  'from jupyter_compress.notebook import insert_cell_below',
  'n = globals().get("n", 0) + 1',
  'plan = Plan.of(PruneConfig(amount=0.5))',
  'applied, _ = compress(model, plan)',
  'time.sleep(2)  # the test moves focus to another cell meanwhile',
  'code = f"%%compress model --as regenerated\\n# version {n}\\n" + plan.to_yaml()',
  "print('inserted', insert_cell_below(code, tag='plan-1'), 'version', n)",
  "print('applied', state_dict_hash(applied))"
].join('\n');

test.describe('jupyter-compress', () => {
  test('report with its bokeh plot, generated cell below its own cell, replaced, and re-run', async ({ page, tmpPath }) => {
    const name = await page.notebook.createNew('e2e.ipynb');
    await page.notebook.setCell(0, 'code', SETUP);
    await page.notebook.addCell('code', '%load_ext jupyter_compress\n%compress model --prune 0.5');
    await page.notebook.addCell('code', GENERATE);
    await page.notebook.addCell('code', "print('regenerated', state_dict_hash(regenerated))");

    // (a) %compress on the digits CNN shows the report, rendered by the extension's renderer
    await page.notebook.runCell(0);
    await waitForText(page, 0, /trained/);
    await page.notebook.runCell(1);
    const report = page.locator('.jp-Cell').nth(1).locator('.jp-CompressReport');
    await expect(report).toBeVisible();
    await expect(report).toContainText('parameters');
    await expect(report).toContainText('bytes in memory');
    // ... with the plots the magic attaches, drawn by BokehJS (a canvas, in the plot's shadow DOM)
    await expect(reportCanvas(page, 1)).toBeVisible();
    await expect(report).not.toContainText('plots hidden');
    await shot(page, '01-report');
    await report.locator('.jp-CompressReport-plot').first().scrollIntoViewIfNeeded();
    await shot(page, '01b-report-bokeh-plot');

    // (b) insert_cell_below from cell 2 inserts right below cell 2 while focus is in cell 0
    await runThenFocus(page, 2, 0);
    const first = await waitForText(page, 2, /applied [0-9a-f]+/);
    expect(first).toContain('inserted True version 1');
    let state = await cells(page);
    expect(state).toHaveLength(5);
    expect(state[3].tag).toBe('plan-1');
    expect(state[3].source).toMatch(/^%%compress model --as regenerated\n# version 1\n/);
    expect(state[4].source).toContain("print('regenerated'");
    expect(await activeIndex(page)).toBe(0);
    await shot(page, '02-inserted-below-own-cell');

    // a second call with the same tag replaces the generated cell instead of adding one
    await runThenFocus(page, 2, 4);
    await waitForText(page, 2, /inserted True version 2/);
    state = await cells(page);
    expect(state).toHaveLength(5);
    expect(state.filter(c => c.tag === 'plan-1')).toHaveLength(1);
    expect(state[3].tag).toBe('plan-1');
    expect(state[3].source).toContain('# version 2');
    expect(state.some(c => c.source.includes('# version 1'))).toBe(false);
    expect(await activeIndex(page)).toBe(4);
    await shot(page, '03-replaced-same-tag');

    // (c) running the inserted %%compress cell reproduces the applied model bit for bit
    const applied = /applied ([0-9a-f]+)/.exec((await cells(page))[2].text)![1];
    await page.notebook.runCell(3);
    await page.notebook.runCell(4);
    const rerun = await waitForText(page, 4, /regenerated [0-9a-f]+/);
    expect(/regenerated ([0-9a-f]+)/.exec(rerun)![1]).toBe(applied);
    await shot(page, '04-inserted-cell-reproduces-hash');

    // the saved notebook, reopened, still shows the report (no re-run)
    await page.notebook.save();
    await page.notebook.close();
    await page.notebook.openByPath(`${tmpPath}/${name}`);
    await expect(page.locator('.jp-Cell').nth(1).locator('.jp-CompressReport')).toContainText('parameters');
    // the notebook was signed on save (its outputs were trusted), so the plot is drawn again
    await expect(reportCanvas(page, 1)).toBeVisible();
  });

  test('(d) the palette command inserts a template cell', async ({ page }) => {
    await page.notebook.createNew('palette.ipynb');
    await page.notebook.setCell(0, 'code', 'x = 1');
    await expect(page.locator('.jp-CompressInsertButton')).toBeVisible();
    await page.keyboard.press('Control+Shift+C');
    await page.locator('#modal-command-palette input').fill('Compress: insert');
    await page.keyboard.press('Enter');
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toBeVisible();
    await dialog.locator('input').fill('net');
    await shot(page, '05-palette-dialog');
    await dialog.locator('.jp-mod-accept').click();
    await expect.poll(async () => (await cells(page)).map(c => c.source)).toEqual([
      'x = 1',
      '%compress net --prune 0.5 --as net_small'
    ]);
    await shot(page, '06-palette-template-cell');
  });

  test('(e) a saved notebook with a report shows the summary without running', async ({ page, tmpPath }) => {
    const fixture = JSON.parse(
      fs.readFileSync(path.join(__dirname, '..', '..', 'tests', 'fixtures', 'report.json'), 'utf8')
    );
    const notebook = {
      nbformat: 4,
      nbformat_minor: 5,
      metadata: {
        kernelspec: { name: 'python3', display_name: 'Python 3', language: 'python' }
      },
      cells: [
        {
          cell_type: 'code',
          id: 'saved-report',
          execution_count: 3,
          metadata: {},
          source: '%compress model --prune 0.5 --svd 0.5',
          outputs: [
            {
              output_type: 'display_data',
              metadata: {},
              data: { 'text/plain': 'jupyter_compress report', [REPORT_MIME]: { ...fixture.report, plots_html: PLOTS } }
            }
          ]
        }
      ]
    };
    await page.contents.uploadContent(JSON.stringify(notebook), 'text', `${tmpPath}/saved.ipynb`);
    await page.notebook.openByPath(`${tmpPath}/saved.ipynb`);
    const report = page.locator('.jp-CompressReport');
    await expect(report).toBeVisible();
    for (const line of fixture.summary) {
      await expect(report).toContainText(line[2]);
    }
    await expect(report).toContainText('(plan: prune -> svd)');
    // an uploaded notebook carries no signature: its plots (HTML with scripts) are not rendered
    await expect(report).toContainText('plots hidden: notebook not trusted (weights)');
    await expect(report.locator('.jp-CompressReport-plot')).toHaveCount(0);
    expect(await page.evaluate(() => (window as any).__untrustedPlotRan)).toBeUndefined();
    expect(await page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.content.widgets[0].model.executionCount)).toBe(3);
    await shot(page, '07-saved-report-rendered');
  });

  test('the comm target is registered on a new kernel of the notebook', async ({ page }) => {
    await page.notebook.createNew('restart.ipynb');
    const code = [
      'from jupyter_compress.notebook import insert_cell_below',
      "print('inserted', insert_cell_below('z = 3', tag='after-restart', timeout=20))"
    ].join('\n');
    await page.notebook.setCell(0, 'code', code);
    await page.notebook.runCell(0);
    await waitForText(page, 0, /inserted True/);
    // A new kernel for the notebook (kernelChanged). A plain restart is not exercised: with
    // jupyter_server 2.21 the restart endpoint answers 201 where JupyterLab 4.6.6 expects 200,
    // so the page's restart fails before any extension code is involved.
    const before = await page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.sessionContext.session.kernel.id);
    await page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.sessionContext.changeKernel({ name: 'python3' }));
    await expect.poll(() => page.evaluate(() => {
      const k = (window as any).jupyterapp.shell.currentWidget.sessionContext.session.kernel;
      return k.status === 'idle' ? k.id : '';
    })).not.toMatch(new RegExp(`^(${before})?$`));
    await page.notebook.runCell(0);
    await waitForText(page, 0, /inserted True/);
    const state = await cells(page);
    // (galata's runCell on the last cell also appends an empty cell at the end)
    expect(state.map(c => c.source).filter(src => src !== '')).toEqual([code, 'z = 3']);
    expect(state[1].tag).toBe('after-restart');
    expect(state.filter(c => c.tag === 'after-restart')).toHaveLength(1);
    await shot(page, '08-after-kernel-change');
  });

  test('(issue 9) the tuning panel reacts to a slider; Generate cell inserts below it and reproduces Apply', async ({ page }) => {
    await page.notebook.createNew('tune.ipynb');
    // (the magic takes names, not expressions: --example X_test[:8] is refused, so the probe batch is named)
    await page.notebook.setCell(0, 'code', SETUP + '\nfrom jupyter_compress import state_dict_hash\nprobe = X_test[:8]');
    await page.notebook.addCell('code', '%load_ext jupyter_compress\n%compress model --tune --example probe');
    await page.notebook.addCell('code', "print('applied', state_dict_hash(model_tuned))");
    await page.notebook.addCell('code', "print('regenerated', state_dict_hash(model_tuned))");
    await page.notebook.runCell(0);
    await waitForText(page, 0, /trained/);
    await page.notebook.runCell(1);
    const panel = page.locator('.jp-Cell').nth(1).locator('.jp-OutputArea-output')
      .filter({ has: page.getByRole('tab', { name: 'pruning' }) });
    await expect(panel.getByText('after (preview)')).toBeVisible();
    // its bokeh figure (jupyter_bokeh's BokehModel) is drawn, with the BokehJS the panel emits before it
    await expect(panel.locator('canvas').first()).toBeVisible();
    await expect(panel.getByText('Click to show javascript error')).toHaveCount(0);
    await shot(page, '09-tune-panel');

    // pruning tab: method 'prune' (the default amount 0.5 previews about half the weights gone)
    await panel.getByRole('tab', { name: 'pruning' }).click();
    await panel.locator('.widget-dropdown:visible').filter({ hasText: 'method' }).locator('select').selectOption('prune');
    const nonzeros = previewNonzeros(panel);
    const total = await previewNonzeros(panel, 1)();
    expect(total).toBeGreaterThan(1000);
    await expect.poll(nonzeros).toBeLessThan(total * 0.6);
    const atHalf = await nonzeros();
    expect(atHalf).toBeGreaterThan(total * 0.4);

    // the amount slider, moved with the keyboard: the preview follows at once
    const slider = panel.locator('.widget-slider:visible').filter({ hasText: 'amount' });
    await expect(slider.locator('.widget-readout')).toHaveText('0.50');
    // one step (0.01) per key press, each waited for: on a loaded machine a press that lands while the widget
    // re-renders can be lost (CI once read 0.66 after 20 presses), and how many presses it takes is not what
    // this test is about; the value reached, the preview following it and the value staying are
    const readout = slider.locator('.widget-readout');
    for (let i = 0; i < 40; i++) {
      const before = ((await readout.textContent()) ?? '').trim();
      if (before === '0.70') {
        break;
      }
      await slider.locator('.noUi-handle').focus();
      await page.keyboard.press('ArrowRight');
      await expect(readout).not.toHaveText(before, { timeout: 5000 }).catch(() => undefined);
    }
    await expect(readout).toHaveText('0.70');
    await expect.poll(nonzeros).toBeLessThan(atHalf);
    await expect(readout).toHaveText('0.70'); // the kernel's updates did not move the slider back
    expect(await nonzeros()).toBeGreaterThan(total * 0.2);
    await shot(page, '10-tune-slider-moved');

    // Generate cell, with focus in another cell: inserted right below the panel's cell, acknowledged
    await page.notebook.selectCells(3);
    await panel.getByRole('button', { name: 'Generate cell' }).click();
    await expect(panel.getByText('Inserted the %%compress cell below.')).toBeVisible();
    let state = await cells(page);
    expect(state).toHaveLength(5);
    expect(state[2].source).toMatch(/^%%compress model --as model_tuned\n/);
    expect(state[2].source).toContain('amount: 0.7');
    expect(state[2].tag).toMatch(/^jupyter_compress\.tune\./);
    expect(state[3].source).toContain("print('applied'");
    await shot(page, '11-tune-generated-cell');

    // Apply binds model_tuned; the generated cell, run, rebinds it to the same weights bit for bit
    await panel.getByRole('button', { name: 'Apply', exact: true }).click();
    await expect(panel.getByText(/Applied .* as 'model_tuned'/)).toBeVisible();
    await page.notebook.runCell(3);
    const applied = /applied ([0-9a-f]+)/.exec(await waitForText(page, 3, /applied [0-9a-f]+/))![1];
    await page.notebook.runCell(2);
    await waitForText(page, 2, /compressed model as 'model_tuned'/);
    await page.notebook.runCell(4);
    const rerun = await waitForText(page, 4, /regenerated [0-9a-f]+/);
    expect(/regenerated ([0-9a-f]+)/.exec(rerun)![1]).toBe(applied);
    state = await cells(page);
    expect(state.filter(c => c.tag !== null)).toHaveLength(1);
    await shot(page, '12-tune-generated-cell-reproduces-apply');
  });
});
