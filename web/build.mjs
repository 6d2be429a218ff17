// Bundles the browser code into dist/ with esbuild: every script comes from
// node_modules (npm ci, from package-lock.json), never from a CDN.
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";

await mkdir("dist", { recursive: true });
await build({
  entryPoints: ["src/player.js"],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["chrome110"],
  outfile: "dist/player.js",
  logLevel: "warning",
});
await copyFile("src/player.html", "dist/player.html");
