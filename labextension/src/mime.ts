import { renderHTML } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { embedBokehItem } from './bokeh';
import { REPORT_MIME, renderReport } from './report';

/**
 * Renders a report's JSON (a saved notebook shows the summary with no kernel). The summary is text
 * only; the plots (HTML with scripts) are rendered, scripts run, only when the output is trusted,
 * as JupyterLab's own text/html renderer would.
 */
export class ReportWidget extends Widget implements IRenderMime.IRenderer {
  constructor(private _options: IRenderMime.IRendererOptions) {
    super();
    this.addClass('jp-CompressReportOutput');
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const { sanitizer, resolver, linkHandler, translator } = this._options;
    return renderReport(this.node, model.data[this._options.mimeType], {
      trusted: model.trusted,
      embedBokeh: embedBokehItem,
      renderHTML: (host, source) =>
        renderHTML({
          host,
          source,
          trusted: model.trusted,
          sanitizer,
          resolver,
          linkHandler,
          shouldTypeset: false,
          latexTypesetter: null,
          translator
        })
    });
  }
}

export const rendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [REPORT_MIME],
  createRenderer: options => new ReportWidget(options)
};

const extension: IRenderMime.IExtension = {
  id: 'jupyter-compress:report-renderer',
  description: 'Renders jupyter_compress reports.',
  rendererFactory,
  // Ahead of text/html (rank 50), so untrusted saved notebooks show it too.
  rank: 40,
  dataType: 'json'
};

export default extension;
