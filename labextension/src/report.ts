/**
 * The report summary, computed from the JSON of jupyter_compress.core.report.Report.to_dict().
 * summaryLines shows the summary lines Python embeds in the JSON; for JSON without them it mirrors an
 * earlier Report.summary() (checked against a fixture written from Python); renderReport builds the
 * summary with textContent only, so it is safe for untrusted notebooks. The report's plots are rendered
 * only for trusted outputs: bokeh JSON items (`plot_items`, data only) through the `embedBokeh` the
 * caller passes (mime.ts: the BokehJS this extension ships, bokeh.ts), or HTML fragments (`plots_html`,
 * older reports) through its `renderHTML` (@jupyterlab/rendermime's, which runs the scripts).
 */

export const REPORT_MIME = 'application/vnd.jupyter-compress.report+json';

export type SummaryLine = [string, string, string, string];

type Json = Record<string, any>;

/** Python's f"{n:,}" for an integer. */
function grouped(n: number): string {
  const sign = n < 0 ? '-' : '';
  return sign + Math.abs(Math.trunc(n)).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** Python's _fmt_bytes. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  for (const unit of units) {
    if (Math.abs(n) < 1024 || unit === 'GiB') {
      return unit === 'B' ? `${n.toFixed(0)} ${unit}` : `${n.toFixed(2)} ${unit}`;
    }
    n /= 1024;
  }
  return `${n.toFixed(2)} GiB`;
}

function ratio(before: number, after: number): string {
  return after ? `${(before / after).toFixed(2)}x` : 'inf';
}

/** Python's f"{v:.4g}" (enough of it: finite floats). */
export function format4g(v: number): string {
  if (!isFinite(v)) {
    return String(v);
  }
  if (v === 0) {
    return '0';
  }
  const exp = Math.floor(Math.log10(Math.abs(Number(v.toPrecision(4)))));
  if (exp < -4 || exp >= 4) {
    const [mant, e] = v.toExponential(3).split('e');
    const m = mant.includes('.') ? mant.replace(/0+$/, '').replace(/\.$/, '') : mant;
    const en = Number(e);
    return `${m}e${en < 0 ? '-' : '+'}${String(Math.abs(en)).padStart(2, '0')}`;
  }
  const digits = Math.max(0, 3 - exp);
  let fixed = v.toFixed(digits);
  // Python rounds exact ties to even (f"{1234.5:.4g}" is '1234'); toFixed rounds them away from zero.
  const scaled = Math.abs(v) * 10 ** digits;
  if (scaled % 1 === 0.5 && Math.floor(scaled) % 2 === 0) {
    fixed = (Math.sign(v) * Math.floor(scaled) / 10 ** digits).toFixed(digits);
  }
  return fixed.includes('.') ? fixed.replace(/0+$/, '').replace(/\.$/, '') : fixed;
}

function fmtMetric(value: unknown, isFloat: boolean): string {
  if (value === null || value === undefined) {
    return '-';
  }
  if (typeof value === 'number') {
    return isFloat ? format4g(value) : String(value);
  }
  if (typeof value === 'boolean') {
    return value ? 'True' : 'False';
  }
  return String(value);
}

/**
 * JSON loses Python's int/float distinction for whole floats (1.0 arrives as 1); the Python side
 * formats floats with .4g and ints plainly, and for whole numbers under 1e4 both print alike.
 */
function isFloatLike(v: unknown): boolean {
  return typeof v === 'number' && !Number.isInteger(v);
}

export function summaryLines(r: Json): SummaryLine[] {
  if (Array.isArray(r.summary)) {
    return r.summary as SummaryLine[]; // the lines Python rendered (Report.to_dict embeds them)
  }
  const lines: SummaryLine[] = [
    ['parameters', grouped(r.model_params_before), grouped(r.model_params_after),
      ratio(r.model_params_before, r.model_params_after)],
    ['non-zero parameters', grouped(r.model_nonzeros_before), grouped(r.model_nonzeros_after),
      ratio(r.model_nonzeros_before, r.model_nonzeros_after)],
    ['bytes in memory', formatBytes(r.model_bytes_before), formatBytes(r.model_bytes_after),
      ratio(r.model_bytes_before, r.model_bytes_after)]
  ];
  const before: Json = r.metrics_before ?? {};
  const after: Json = r.metrics_after ?? {};
  const keys = Array.from(new Set([...Object.keys(before), ...Object.keys(after)])).sort();
  for (const key of keys) {
    const b = before[key];
    const a = after[key];
    let change = '';
    if (typeof b === 'number' && typeof a === 'number') {
      if (key.includes('latency') && b) {
        change = `${(a / b).toFixed(2)}x time`;
      } else {
        const d = a - b;
        change = (d >= 0 ? '+' : '') + format4g(d);
      }
    }
    lines.push([key, fmtMetric(b, isFloatLike(b)), fmtMetric(a, isFloatLike(a)), change]);
  }
  return lines;
}

/** Counts shown under the table: layers changed / skipped, and the plan's methods. */
export function reportCounts(r: Json): { compressed: number; skipped: number; methods: string[] } {
  const rows: Json[] = Array.isArray(r.rows) ? r.rows : [];
  const skipped = rows.filter(row => row.skipped !== null && row.skipped !== undefined).length;
  const steps: Json[] = Array.isArray(r.plan?.steps) ? r.plan.steps : [];
  const methods = steps.map(s => String(s.method ?? '?'));
  return { compressed: rows.length - skipped, skipped, methods };
}

export type ThresholdStatus = 'pass' | 'fail' | 'unchecked';

/**
 * The threshold lines Python wrote (Report.threshold_lines(), parallel to `thresholds`), each with its
 * status from the threshold's `ok` (false: crossed). Crossed ones come first, as the renderer shows them.
 */
export function thresholdLines(r: Json): { line: string; status: ThresholdStatus }[] {
  const lines: unknown[] = Array.isArray(r.threshold_lines) ? r.threshold_lines : [];
  const thresholds: unknown[] = Array.isArray(r.thresholds) ? r.thresholds : [];
  const out = lines.map((line, i) => {
    const ok = (thresholds[i] as Json | undefined)?.ok;
    const status: ThresholdStatus = ok === false ? 'fail' : ok === true ? 'pass' : 'unchecked';
    return { line: String(line), status };
  });
  return [...out.filter(t => t.status === 'fail'), ...out.filter(t => t.status !== 'fail')];
}

/** The per-layer table Python wrote (Report._HEAD and _row_cells), or null for JSON without it. */
export function layerTable(r: Json): { head: string[]; rows: string[][] } | null {
  const t = r.layer_table;
  if (!t || !Array.isArray(t.head) || !Array.isArray(t.rows)) {
    return null;
  }
  return {
    head: t.head.map(String),
    rows: t.rows.filter(Array.isArray).map((row: unknown[]) => row.map(String))
  };
}

/** Whether data looks like a report (the renderer says so plainly instead of failing). */
export function isReport(data: unknown): data is Json {
  if (!data || typeof data !== 'object') {
    return false;
  }
  const d = data as Json;
  return ['model_params_before', 'model_params_after', 'model_bytes_before', 'model_bytes_after'].every(
    k => typeof d[k] === 'number'
  );
}

function el<K extends keyof HTMLElementTagNameMap>(
  doc: Document, tag: K, text?: string, cls?: string
): HTMLElementTagNameMap[K] {
  const node = doc.createElement(tag);
  if (text !== undefined) {
    node.textContent = text;
  }
  if (cls) {
    node.className = cls;
  }
  return node;
}

/** Renders trusted HTML (scripts run) into host; mime.ts binds @jupyterlab/rendermime's renderHTML. */
export type HtmlRenderer = (host: HTMLElement, html: string) => Promise<void>;

export interface IReportRenderOptions {
  /** Whether the output is trusted (the kernel produced it this session, or the notebook is trusted). */
  trusted: boolean;
  /** Needed to show the plots of a trusted output; without it they are listed as not shown. */
  renderHTML?: HtmlRenderer;
  /** Draws a bokeh JSON item into host (mime.ts: with the BokehJS this extension ships, see bokeh.ts). */
  embedBokeh?: (host: HTMLElement, item: unknown) => Promise<void>;
}

/** The report's plots as bokeh JSON items, [title, item] pairs (Report.plot_items, data only). */
export function reportPlotItems(r: Json): [string, unknown][] {
  const plots: unknown[] = Array.isArray(r.plot_items) ? r.plot_items : [];
  return plots
    .filter((p): p is unknown[] => Array.isArray(p) && p.length === 2)
    .map(([title, item]) => [String(title), item]);
}

/** The report's plots as [title, html] pairs (Report._repr_mimebundle_ puts them in the JSON). */
export function reportPlots(r: Json): [string, string][] {
  const plots: unknown[] = Array.isArray(r.plots_html) ? r.plots_html : [];
  return plots
    .filter((p): p is unknown[] => Array.isArray(p) && p.length === 2)
    .map(([title, html]) => [String(title), String(html)]);
}

function plotHost(box: HTMLElement, title: string): HTMLElement {
  const doc = box.ownerDocument;
  const plot = el(doc, 'div', undefined, 'jp-CompressReport-plot');
  plot.appendChild(el(doc, 'div', title, 'jp-CompressReport-plotTitle'));
  const body = el(doc, 'div', undefined, 'jp-CompressReport-plotBody');
  plot.appendChild(body);
  box.appendChild(plot);
  return body;
}

/** Plots as bokeh JSON items: drawn (trusted outputs only: a bokeh document may hold CustomJS code). */
async function renderPlotItems(
  box: HTMLElement, plots: [string, unknown][], options: IReportRenderOptions
): Promise<void> {
  const doc = box.ownerDocument;
  const titles = plots.map(([title]) => title).join(', ');
  if (!options.trusted || !options.embedBokeh) {
    const why = options.trusted ? 'no BokehJS' : 'notebook not trusted';
    box.appendChild(el(doc, 'div', `plots hidden: ${why} (${titles})`, 'jp-CompressReport-plotsHidden'));
    return;
  }
  for (const [title, item] of plots) {
    const body = plotHost(box, title);
    try {
      await options.embedBokeh(body, item);
    } catch (e) {
      body.appendChild(el(doc, 'div', `plot not drawn: ${e}`, 'jp-CompressReport-error'));
    }
  }
}

async function renderPlots(
  box: HTMLElement, plots: [string, string][], options: IReportRenderOptions
): Promise<void> {
  const doc = box.ownerDocument;
  if (!plots.length) {
    return;
  }
  const titles = plots.map(([title]) => title).join(', ');
  if (!options.trusted || !options.renderHTML) {
    const why = options.trusted ? 'no HTML renderer' : 'notebook not trusted';
    box.appendChild(el(doc, 'div', `plots hidden: ${why} (${titles})`, 'jp-CompressReport-plotsHidden'));
    return;
  }
  // one host per plot, in order: the first may hold BokehJS itself, which the later ones use
  for (const [title, html] of plots) {
    await options.renderHTML(plotHost(box, title), html);
  }
}

export async function renderReport(
  host: HTMLElement, data: unknown, options: IReportRenderOptions = { trusted: false }
): Promise<void> {
  const doc = host.ownerDocument;
  host.textContent = '';
  if (!isReport(data)) {
    host.appendChild(el(doc, 'div', 'jupyter_compress: this output is not a report (missing totals).',
      'jp-CompressReport-error'));
    return;
  }
  const box = el(doc, 'div', undefined, 'jp-CompressReport');
  box.appendChild(el(doc, 'div', 'jupyter_compress report' + (data.inplace ? ' (in place)' : ''),
    'jp-CompressReport-title'));
  if (typeof data.headline === 'string' && data.headline) {
    // Python's Report.headline: the compressed model is larger than the original, and why (first line)
    box.appendChild(el(doc, 'div', data.headline, 'jp-CompressReport-warning'));
  }
  const thresholds = thresholdLines(data);
  // a crossed threshold comes first, in red: the text and HTML views open with it too
  for (const t of thresholds.filter(t => t.status === 'fail')) {
    box.appendChild(el(doc, 'div', t.line, 'jp-CompressReport-threshold jp-CompressReport-fail'));
  }
  const table = el(doc, 'table', undefined, 'jp-CompressReport-summary');
  const head = el(doc, 'tr');
  for (const h of ['', 'before', 'after', 'ratio / change']) {
    head.appendChild(el(doc, 'th', h));
  }
  table.appendChild(head);
  for (const line of summaryLines(data)) {
    const tr = el(doc, 'tr');
    line.forEach(v => tr.appendChild(el(doc, 'td', v)));
    table.appendChild(tr);
  }
  box.appendChild(table);
  for (const t of thresholds.filter(t => t.status !== 'fail')) {
    box.appendChild(el(doc, 'div', t.line, `jp-CompressReport-threshold jp-CompressReport-${t.status}`));
  }
  const counts = reportCounts(data);
  const methods = counts.methods.length ? ` (plan: ${counts.methods.join(' -> ')})` : '';
  const countsText = `${counts.compressed} layer changes, ${counts.skipped} skipped${methods}`;
  const layers = layerTable(data);
  if (layers) {
    // the per-layer table, open like the HTML view's, collapsible by its summary line
    const details = el(doc, 'details', undefined, 'jp-CompressReport-layers');
    details.open = true;
    details.appendChild(el(doc, 'summary', countsText, 'jp-CompressReport-counts'));
    const lt = el(doc, 'table', undefined, 'jp-CompressReport-layerTable');
    const ltHead = el(doc, 'tr');
    layers.head.forEach(h => ltHead.appendChild(el(doc, 'th', h)));
    lt.appendChild(ltHead);
    for (const row of layers.rows) {
      const tr = el(doc, 'tr');
      row.forEach(v => tr.appendChild(el(doc, 'td', v)));
      lt.appendChild(tr);
    }
    details.appendChild(lt);
    box.appendChild(details);
  } else {
    box.appendChild(el(doc, 'div', countsText, 'jp-CompressReport-counts'));
  }
  const notes: unknown[] = Array.isArray(data.notes) ? data.notes : [];
  if (notes.length) {
    const ul = el(doc, 'ul', undefined, 'jp-CompressReport-notes');
    notes.forEach(n => ul.appendChild(el(doc, 'li', String(n))));
    box.appendChild(ul);
  }
  host.appendChild(box);
  const items = reportPlotItems(data);
  if (items.length) {
    await renderPlotItems(box, items, options);
  } else {
    await renderPlots(box, reportPlots(data), options); // HTML plots (older reports, attach_html)
  }
}
