// Uploads files with tus-js-client under Node.js (the client Uppy and
// browsers use), the way an app does: in chunks, retrying with its own
// delays (HEAD, then resume), and starting over from HEAD once those are
// spent, until the upload is whole, the server says it is gone, or the
// deadline passes.
//
//     node tusjs_uploads.mjs spec.json      (spec as tuspy_uploads.py's)
//
// Prints one JSON line per upload: {"path", "id", "ok", "error",
// "regressed"}: how far below an offset the server once acknowledged a
// later chunk ended, that is how many acknowledged bytes it asked for
// again after a resume (0 unless an acknowledged byte was lost).
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

// tus-js-client comes from the web bundle's npm install (make web).
const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../../web/package.json"));
const tus = require("tus-js-client");

const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const deadline = Date.now() + spec.deadline_secs * 1000;

async function uploadOne(item) {
  // Apps start their uploads at different moments.
  await new Promise((done) => setTimeout(done, item.start_ms));
  return new Promise((resolve) => {
    const size = fs.statSync(item.path).size;
    let acked = 0;
    let regressed = 0;
    const upload = new tus.Upload(fs.createReadStream(item.path), {
      endpoint: spec.endpoint,
      chunkSize: item.chunk_size,
      uploadSize: size,
      headers: { Authorization: `Bearer ${spec.token}` },
      metadata: { filename: path.basename(item.path) },
      retryDelays: [0, 500, 1000, 2000, 4000, 4000, 4000],
      // A phone's pace: a pause before each chunk.
      onBeforeRequest: (request) =>
        request.getMethod() === "PATCH"
          ? new Promise((done) => setTimeout(done, item.pause_ms))
          : undefined,
      onChunkComplete: (_chunk, accepted) => {
        regressed = Math.max(regressed, acked - accepted);
        acked = Math.max(acked, accepted);
      },
      onSuccess: () => resolve({ url: upload.url, error: null, regressed }),
      onError: (error) => {
        const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
        const gone = status === 404 || status === 410;
        if (!gone && Date.now() < deadline) {
          setTimeout(() => upload.start(), 1000);
        } else {
          resolve({ url: upload.url, error: `${status}: ${error.message}`, regressed });
        }
      },
    });
    upload.start();
  });
}

await Promise.all(
  spec.uploads.map(async (item) => {
    const { url, error, regressed } = await uploadOne(item);
    process.stdout.write(
      `${JSON.stringify({
        path: item.path,
        id: url ? url.replace(/\/+$/, "").split("/").pop() : null,
        ok: error === null,
        error,
        regressed,
      })}\n`,
    );
  }),
);
