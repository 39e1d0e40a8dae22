/**
 * The quickstart as a new user runs it: Run All in JupyterLab, then no red stderr box anywhere (issue 18:
 * out-of-range floats in a report's JSON made jupyter_client warn on stderr) and no error output.
 */
import { expect, test } from '@jupyterlab/galata';
import * as fs from 'fs';
import * as path from 'path';

const QUICKSTART = path.join(__dirname, '..', '..', '..', 'notebooks', 'quickstart.ipynb');

test('the quickstart runs through with no stderr box and no error', async ({ page, tmpPath }) => {
  test.setTimeout(420_000);
  await page.contents.uploadContent(fs.readFileSync(QUICKSTART, 'utf8'), 'text', `${tmpPath}/quickstart.ipynb`);
  await page.notebook.openByPath(`${tmpPath}/quickstart.ipynb`);
  await page.notebook.activate('quickstart.ipynb');
  // Run All (not page.notebook.run(): that waits for every code cell to run, and the panel's Generate cell
  // inserts one, unexecuted, while the others run); done when the last cell has printed "ok"
  await page.evaluate(() => (window as any).jupyterapp.commands.execute('notebook:run-all-cells'));
  await expect.poll(() => page.evaluate(() => {
    const cells = (window as any).jupyterapp.shell.currentWidget.content.widgets;
    const last = cells[cells.length - 1];
    const text = last.model.outputs.toJSON().map((o: any) => o.text ?? '').join('');
    return text.includes('ok') || last.model.outputs.toJSON().some((o: any) => o.output_type === 'error');
  }), { timeout: 280_000, intervals: [2000] }).toBe(true);
  const outputs = await page.evaluate(() => {
    const panel = (window as any).jupyterapp.shell.currentWidget;
    return panel.content.widgets
      .filter((cell: any) => cell.model.type === 'code')
      .map((cell: any) => cell.model.outputs.toJSON());
  });
  expect(outputs.length).toBeGreaterThan(5);
  const stderr = outputs.flat().filter((o: any) => o.output_type === 'stream' && o.name === 'stderr');
  const errors = outputs.flat().filter((o: any) => o.output_type === 'error');
  expect(errors.map((o: any) => `${o.ename}: ${o.evalue}`)).toEqual([]);
  // progress bars are widgets here (tqdm.auto), so any stderr text is a warning the user should not meet
  expect(stderr.map((o: any) => String(o.text).slice(0, 300))).toEqual([]);
  await expect(page.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')).toHaveCount(0);
  await expect(page.locator('.jp-CompressReport').first()).toBeVisible();
});
