// Stands in for BokehJS's bundles in the unit tests (webpack gives src/bokeh.ts their URLs).
export default 'bokehjs-asset.min.js';
