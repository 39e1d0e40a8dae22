/**
 * jupyter-compress in a real JupyterLab, in headless Chromium. Screenshots of each step go to
 * ui-tests/artifacts/ (git-ignored). Started by scripts/e2e.sh.
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
  test('report, generated cell below its own cell, replaced, and re-run', async ({ page, tmpPath }) => {
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
    await shot(page, '01-report');

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
              data: { 'text/plain': 'jupyter_compress report', [REPORT_MIME]: fixture.report }
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

  // Not available yet: these need work from other issues; they are placeholders, not passes.
  test.fixme('(issue 7) %compress shows a rendered bokeh plot (a canvas is present)', async () => {});
  test.fixme('(issue 9) the tuning panel renders, reacts to a slider, and "Generate cell" inserts below it', async () => {});
});
