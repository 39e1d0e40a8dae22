import { defineConfig } from 'vitest/config';

export default defineConfig({
  // The package index of @jupyterlab/rendermime also loads apputils' web-components design system,
  // which needs a real browser; its renderHTML (all mime.ts uses) lives in lib/renderers, unchanged.
  resolve: { alias: [{ find: /^@jupyterlab\/rendermime$/, replacement: '@jupyterlab/rendermime/lib/renderers' }] },
  test: { include: ['tests/**/*.test.ts'], environment: 'node' }
});
