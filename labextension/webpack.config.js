// Extra webpack (rspack) config for `jupyter-builder build` (package.json jupyterlab.webpackConfig):
// BokehJS's prebuilt bundles (@bokeh/bokehjs, the version of the Python bokeh package) are emitted as
// static assets, byte for byte (kept out of the minimizer); src/bokeh.ts imports their URLs.
const rspack = require('@rspack/core');

const BOKEHJS = /[\\/]@bokeh[\\/]bokehjs[\\/]build[\\/]js[\\/][^\\/]+\.min\.js$/;

module.exports = {
  module: {
    rules: [{ test: BOKEHJS, type: 'asset/resource', generator: { filename: 'bokehjs/[name].[contenthash][ext]' } }]
  },
  optimization: {
    minimizer: [
      new rspack.SwcJsMinimizerRspackPlugin({ exclude: /^bokehjs\// }),
      new rspack.LightningCssMinimizerRspackPlugin()
    ]
  }
};
