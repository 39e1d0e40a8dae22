/**
 * BokehJS, shipped with this extension (@bokeh/bokehjs, the version of the Python bokeh package) and
 * loaded once per page: reports carry only their plots' data (bokeh JSON items), so a saved notebook
 * holds no BokehJS. The files are emitted as static assets of the extension by webpack.config.js.
 * `window.jupyterCompressBokeh()` (set by the plugin in index.ts) lets HTML outputs of the kernel
 * (plotting.figure_html in "extension" mode) draw with it too; jupyter_bokeh's widgets (the tuning
 * panel) use the `window.Bokeh` it defines.
 */
import bokehUrl from '@bokeh/bokehjs/build/js/bokeh.min.js';
import widgetsUrl from '@bokeh/bokehjs/build/js/bokeh-widgets.min.js';
import { version as BOKEH_VERSION } from '@bokeh/bokehjs/package.json';

export { BOKEH_VERSION };

type Bokeh = any;

function addScript(src: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.async = false;
    script.onload = () => resolve();
    script.onerror = () => reject(new Error(`could not load BokehJS from ${src}`));
    document.head.appendChild(script);
  });
}

/** window.Bokeh, loaded from this extension's assets unless the page already has this version. */
export function loadBokeh(): Promise<Bokeh> {
  const w = window as any;
  if (!w.__jupyterCompressBokeh) {
    w.__jupyterCompressBokeh = (async () => {
      const ready = (b: any) => b && b.version === BOKEH_VERSION && b.embed && b.Widgets;
      if (!ready(w.Bokeh)) {
        if (!(w.Bokeh && w.Bokeh.version === BOKEH_VERSION && w.Bokeh.embed)) {
          await addScript(bokehUrl);
        }
        await addScript(widgetsUrl);
      }
      return w.Bokeh;
    })();
    w.__jupyterCompressBokeh.catch(() => {
      w.__jupyterCompressBokeh = undefined; // a later call tries again
    });
  }
  return w.__jupyterCompressBokeh;
}

/**
 * Resolves once ``host`` is in the document (or after ``timeoutMs``): BokehJS refuses to draw into an
 * element that is not under <body>, and a reopened notebook renders its outputs before attaching them.
 */
async function whenAttached(host: HTMLElement, timeoutMs = 30_000): Promise<void> {
  const start = Date.now();
  while (!host.isConnected && Date.now() - start < timeoutMs) {
    await new Promise(resolve => setTimeout(resolve, 50));
  }
}

/**
 * Draws a bokeh JSON item (bokeh.embed.json_item) into host; reports carry it as JSON text (a saved
 * notebook sorts object keys, which would put references ahead of their definitions). BokehJS decodes
 * the item in place, so it always gets a fresh copy: the output's data stays intact.
 */
export async function embedBokehItem(host: HTMLElement, item: unknown): Promise<void> {
  const Bokeh = await loadBokeh();
  await whenAttached(host);
  await Bokeh.embed.embed_item(JSON.parse(typeof item === 'string' ? item : JSON.stringify(item)), host);
}

/** Exposes loadBokeh to the kernel's HTML outputs (trusted ones run scripts). */
export function exposeBokehLoader(): void {
  (window as any).jupyterCompressBokeh = loadBokeh;
}
