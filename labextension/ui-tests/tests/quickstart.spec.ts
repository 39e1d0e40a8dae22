/**
 * The quickstart as a new user runs it: Run All in JupyterLab, then no red stderr box anywhere (issue 18:
 * out-of-range floats in a report's JSON made jupyter_client warn on stderr) and no error output.
 */
import { expect, test } from '@jupyterlab/galata';
import * as fs from 'fs';
import * as path from 'path';

const QUICKSTART = path.join(__dirname, '..', '..', '..', 'notebooks', 'quickstart.ipynb');

test('the quickstart runs through with no stderr box and no error', async ({ page, tmpPath }) => {
  test.setTimeout(600_000);
  await page.contents.uploadContent(fs.readFileSync(QUICKSTART, 'utf8'), 'text', `${tmpPath}/quickstart.ipynb`);
  await page.notebook.openByPath(`${tmpPath}/quickstart.ipynb`);
  await page.notebook.activate('quickstart.ipynb');
  await page.notebook.run();
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
