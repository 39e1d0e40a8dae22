import { defineConfig } from 'vitest/config';

export default defineConfig({
  // The package index of @jupyterlab/rendermime also loads apputils' web-components design system,
  // which needs a real browser; its renderHTML (all mime.ts uses) lives in lib/renderers, unchanged.
  // BokehJS's bundles are URLs of the extension's assets (webpack.config.js), never run in the unit tests.
  resolve: {
    alias: [
      { find: /^@jupyterlab\/rendermime$/, replacement: '@jupyterlab/rendermime/lib/renderers' },
      { find: /^@bokeh\/bokehjs\/build\/js\/.*\.min\.js$/, replacement: new URL('./tests/stubs/asset-url.ts', import.meta.url).pathname }
    ]
  },
  test: { include: ['tests/**/*.test.ts'], environment: 'node' }
});
