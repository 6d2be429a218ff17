// Bundles the browser code into dist/ with esbuild: every script and style
// comes from node_modules (npm ci, from package-lock.json), never from a
// CDN. dist/player.* is the page the playback test opens; dist/console/ is
// the console the api serves at /console/.
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";

const common = {
  bundle: true,
  minify: true,
  format: "iife",
  target: ["chrome110", "firefox115", "safari16"],
  logLevel: "warning",
};

await mkdir("dist/console", { recursive: true });
await build({ ...common, entryPoints: ["src/player.js"], outfile: "dist/player.js" });
await copyFile("src/player.html", "dist/player.html");
await build({
  ...common,
  entryPoints: ["src/console/console.js"],
  outfile: "dist/console/console.js",
  loader: { ".svg": "dataurl", ".png": "dataurl", ".woff": "dataurl", ".woff2": "dataurl" },
});
await copyFile("src/console/index.html", "dist/console/index.html");
