// What a web app does with reelay's playback URLs: hls.js for HLS, dash.js
// for DASH, a plain <video> for the original's link. Errors are collected
// in window.reelay.errors so a test can read them.
import Hls from "hls.js";
import * as dashjs from "dashjs";

const errors = [];
let current = null;

function video() {
  return document.getElementById("video");
}

function stop() {
  if (current) {
    current.destroy ? current.destroy() : current.reset();
    current = null;
  }
  const v = video();
  v.removeAttribute("src");
  v.load();
}

function playHls(url) {
  stop();
  if (!Hls.isSupported()) {
    errors.push("hls.js: MediaSource is not supported here");
    return;
  }
  const hls = new Hls();
  hls.on(Hls.Events.ERROR, (_, data) => {
    errors.push(`hls.js ${data.fatal ? "fatal " : ""}${data.type}: ${data.details}`);
  });
  hls.loadSource(url);
  hls.attachMedia(video());
  current = hls;
  video().play().catch((e) => errors.push(`play: ${e}`));
}

function playDash(url) {
  stop();
  const player = dashjs.MediaPlayer().create();
  player.on(dashjs.MediaPlayer.events.ERROR, (e) => {
    const error = e.error || {};
    errors.push(`dash.js: ${error.code ?? ""} ${error.message ?? JSON.stringify(e)}`);
  });
  player.initialize(video(), url, true);
  current = player;
}

function playFile(url) {
  stop();
  const v = video();
  v.src = url;
  v.play().catch((e) => errors.push(`play: ${e}`));
}

function showPoster(url) {
  return new Promise((resolve) => {
    const img = document.getElementById("poster");
    img.onload = () => resolve({ width: img.naturalWidth, height: img.naturalHeight });
    img.onerror = () => resolve(null);
    img.src = url;
  });
}

video().addEventListener("error", () => {
  const e = video().error;
  errors.push(`video element: ${e ? `${e.code} ${e.message}` : "unknown"}`);
});

window.reelay = { errors, playHls, playDash, playFile, showPoster, video };
