/**
 * A static fallback for widget outputs: where a widget output's model cannot be found (a notebook reopened
 * after its kernel went away, a new kernel), JupyterLab's widget renderer writes "Error displaying widget:
 * model not found" (or, with no kernel at all, "Loading widget..." for good). When the output's bundle also
 * holds `text/html` (jupyter_compress's tuning panel puts a static summary there), that HTML is shown instead.
 * Live widgets are untouched.
 *
 * The widget renderer factory is wrapped on each notebook's rendermime registry (ipywidgets registers its
 * factory there, possibly after us: addFactory is wrapped too). The renderer stays ipywidgets' own object
 * (ipywidgets looks for its renderers in the output area by class to hand them their widget manager);
 * only its renderModel is extended.
 */
import type { NotebookPanel } from '@jupyterlab/notebook';
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';

import { WIDGET_VIEW_MIME, fallbackHtml, isMissingModel } from './widgetstatic';

const WRAPPED = Symbol('jupyter-compress-widget-fallback');

interface IRegistry {
  getFactory(mimeType: string): IRenderMime.IRendererFactory | undefined;
  getRank(mimeType: string): number | undefined;
  addFactory(factory: IRenderMime.IRendererFactory, rank?: number): void;
  createRenderer(mimeType: string): IRenderMime.IRenderer;
}

type Panelish = IRenderMime.IRenderer & { addWidget?: (w: IRenderMime.IRenderer) => void };

/** Resolves true once the notebook's kernel choice is made and it is "No Kernel" (no widget can ever load). */
export type NoKernel = () => Promise<boolean>;

function withFallback(renderer: Panelish, registry: IRegistry, noKernel: NoKernel): IRenderMime.IRenderer {
  const render = renderer.renderModel.bind(renderer);
  let model: IRenderMime.IMimeModel | null = null;
  let fallback: IRenderMime.IRenderer | null = null;
  let observer: MutationObserver | null = null;

  const check = (force = false): void => {
    const html = model ? fallbackHtml(model.data) : null;
    if (fallback || html === null || !(force || isMissingModel(renderer.node.textContent))) {
      return;
    }
    observer?.disconnect();
    observer = null;
    renderer.node.textContent = '';
    const staticView = registry.createRenderer('text/html');
    staticView.addClass('jp-CompressWidgetFallback');
    fallback = staticView;
    if (typeof renderer.addWidget === 'function') {
      renderer.addWidget(staticView);
    } else {
      renderer.node.appendChild(staticView.node);
    }
    void staticView.renderModel({
      trusted: model!.trusted,
      data: { 'text/html': html },
      metadata: {},
      setData: () => undefined
    });
  };

  renderer.renderModel = async (next: IRenderMime.IMimeModel): Promise<void> => {
    model = next;
    if (fallback) {
      fallback.dispose();
      fallback = null;
    }
    await render(next);
    check();
    if (!fallback && fallbackHtml(next.data) !== null) {
      // without a kernel ipywidgets shows "Loading widget..." for good: the static view instead
      void noKernel().then(none => {
        if (none && model === next) {
          check(true);
        }
      });
    }
    if (!fallback && !observer && fallbackHtml(next.data) !== null && typeof MutationObserver !== 'undefined') {
      // the "model not found" text can come later (once the widget manager is restored)
      observer = new MutationObserver(() => check());
      observer.observe(renderer.node, { childList: true, characterData: true, subtree: true });
    }
  };
  renderer.disposed.connect(() => observer?.disconnect());
  return renderer;
}

function wrap(
  factory: IRenderMime.IRendererFactory, registry: IRegistry, noKernel: NoKernel
): IRenderMime.IRendererFactory {
  if ((factory as any)[WRAPPED]) {
    return factory;
  }
  const wrapped: IRenderMime.IRendererFactory = {
    safe: factory.safe,
    mimeTypes: factory.mimeTypes,
    defaultRank: factory.defaultRank,
    createRenderer: options => withFallback(factory.createRenderer(options), registry, noKernel)
  };
  (wrapped as any)[WRAPPED] = true;
  return wrapped;
}

/** Give this notebook's widget outputs their static fallback (idempotent). */
export function installWidgetFallback(panel: NotebookPanel): void {
  const registry = panel.content.rendermime as unknown as IRegistry;
  if (!registry || (registry as any)[WRAPPED]) {
    return;
  }
  (registry as any)[WRAPPED] = true;
  const noKernel: NoKernel = async () => {
    const context = panel.sessionContext;
    await context.ready;
    return !context.session?.kernel;
  };
  const current = registry.getFactory(WIDGET_VIEW_MIME);
  if (current) {
    registry.addFactory(wrap(current, registry, noKernel), registry.getRank(WIDGET_VIEW_MIME));
  }
  const add = registry.addFactory.bind(registry);
  registry.addFactory = (factory: IRenderMime.IRendererFactory, rank?: number) =>
    add(factory.mimeTypes.includes(WIDGET_VIEW_MIME) ? wrap(factory, registry, noKernel) : factory, rank);
}
