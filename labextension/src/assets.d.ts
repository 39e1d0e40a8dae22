// webpack.config.js emits these files as static assets of the extension: importing one gives its URL.
declare module '@bokeh/bokehjs/build/js/*.min.js' {
  const url: string;
  export default url;
}
