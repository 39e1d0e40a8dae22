import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { REPORT_MIME, renderReport } from './report';

/** Renders a report's JSON (a saved notebook shows the summary with no kernel). */
export class ReportWidget extends Widget implements IRenderMime.IRenderer {
  constructor(private _mimeType: string) {
    super();
    this.addClass('jp-CompressReportOutput');
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    renderReport(this.node, model.data[this._mimeType]);
    return Promise.resolve();
  }
}

export const rendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [REPORT_MIME],
  createRenderer: options => new ReportWidget(options.mimeType)
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
