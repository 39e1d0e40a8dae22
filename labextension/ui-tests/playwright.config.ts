/**
 * Galata / Playwright configuration. scripts/e2e.sh starts JupyterLab and sets TARGET_URL.
 * The browser is Debian's Chromium (/usr/bin/chromium, or $CHROMIUM): Playwright never downloads one.
 */
import { defineConfig } from '@playwright/test';

const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

export default defineConfig({
  ...baseConfig,
  testDir: './tests',
  outputDir: './test-results',
  reporter: [['list'], ['html', { open: 'never', outputFolder: 'playwright-report' }]],
  timeout: 240_000,
  expect: { timeout: 60_000 },
  // One retry: a browser test on a loaded 2-core machine can miss a timeout once. A test that passes only
  // on its retry is reported as flaky, and scripts/test.sh prints its first failure last, so it is seen.
  retries: Number(process.env.E2E_RETRIES ?? 1),
  workers: 1,
  use: {
    ...baseConfig.use,
    baseURL: process.env.TARGET_URL ?? 'http://127.0.0.1:8888',
    video: 'off',
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-quic'
      ]
    }
  }
});
