// Watching a READY video: the poster first, hls.js (or dash.js behind a
// switch) on the playback URLs, and the engagement product's player events
// sent as a real app would: one session per playback, a heartbeat every
// 5 s while playing, batches flushed on pause, end and leaving the page.

import Hls from "hls.js";
import * as dashjs from "dashjs";
import { post } from "./api.js";
import { h, uuid } from "./dom.js";

const HEARTBEAT_MS = 5000;

export function watch(videoId, playback, onError) {
  const video = h("video", {
    id: "player",
    controls: true,
    playsinline: true,
    preload: "none",
    poster: playback.poster,
    "aria-label": "Video player",
  });
  const engine = h(
    "select",
    { id: "engine", "aria-label": "Streaming format" },
    h("option", { value: "hls" }, "HLS (hls.js)"),
    h("option", { value: "dash" }, "DASH (dash.js)"),
  );
  const events = new PlayerEvents(videoId, video, onError);
  let player = null;

  const stop = () => {
    if (player) {
      player.destroy ? player.destroy() : player.reset();
      player = null;
    }
  };
  const load = () => {
    stop();
    events.newSession();
    if (engine.value === "dash") {
      const dash = dashjs.MediaPlayer().create();
      dash.on(dashjs.MediaPlayer.events.ERROR, (e) => {
        const error = e.error || {};
        events.error(`dash ${error.code ?? ""}`);
        onError(`dash.js: ${error.message ?? "playback error"}`);
      });
      dash.initialize(video, playback.dash, false);
      player = dash;
    } else if (Hls.isSupported()) {
      const hls = new Hls();
      hls.on(Hls.Events.ERROR, (_, data) => {
        if (!data.fatal) return;
        events.error(data.details);
        onError(`hls.js: ${data.details}`);
      });
      hls.on(Hls.Events.LEVEL_SWITCHED, (_, data) => {
        const level = hls.levels[data.level];
        events.rendition(level ? `${level.height}p` : null);
      });
      hls.loadSource(playback.hls);
      hls.attachMedia(video);
      player = hls;
    } else {
      video.src = playback.hls; // Safari plays HLS itself
    }
  };
  engine.addEventListener("change", load);
  load();

  const element = h(
    "section",
    { class: "watch", "aria-label": "Watch" },
    video,
    h("label", { class: "inline" }, "Format ", engine),
  );
  return {
    element,
    stop() {
      events.close();
      stop();
    },
  };
}

class PlayerEvents {
  constructor(videoId, video, onError) {
    this.videoId = videoId;
    this.video = video;
    this.onError = onError;
    this.queue = [];
    this.timer = null;
    this.stalled = false;
    const on = (name, handler) => video.addEventListener(name, handler);
    // A session opens when the viewer asks to play; start-up time runs
    // until the first frame plays.
    on("play", () => {
      if (!this.opened) {
        this.opened = true;
        this.send("open");
      } else if (this.started) {
        this.send("play");
        this.heartbeat(true);
      }
    });
    on("playing", () => {
      if (!this.started) {
        this.started = true;
        this.send("play");
        this.heartbeat(true);
      } else if (this.stalled) {
        this.stalled = false;
        this.send("rebuffer_end");
      }
    });
    on("pause", () => {
      if (video.ended || !this.started) return;
      this.send("pause");
      this.heartbeat(false);
      this.flush();
    });
    on("seeking", () => this.send("seek"));
    on("waiting", () => {
      // Buffering before the first frame is start-up time, and after a
      // seek it is the seek's, not a stall.
      if (this.started && !video.paused && !video.seeking && !this.stalled) {
        this.stalled = true;
        this.send("rebuffer_start");
      }
    });
    on("ended", () => {
      this.send("complete");
      this.heartbeat(false);
      this.flush();
    });
    on("error", () => this.error(`media ${video.error?.code ?? ""}`));
    this.leave = () => this.flush(true);
    window.addEventListener("pagehide", this.leave);
  }

  newSession() {
    this.heartbeat(false);
    this.flush();
    this.session = uuid();
    this.opened = false;
    this.started = false;
    this.stalled = false;
    this.renditions = 0;
  }

  /// hls.js names the first rendition it picks too: that is no change.
  rendition(name) {
    this.renditions += 1;
    if (this.renditions > 1) this.send("quality_change", name ? { rendition: name } : {});
  }

  send(type, extra = {}) {
    if (!this.opened) return; // nothing before the viewer asked to play
    this.queue.push({
      event_id: uuid(),
      session_id: this.session,
      video_id: this.videoId,
      type,
      playhead_ms: Math.round((this.video.currentTime || 0) * 1000),
      client_time: new Date().toISOString(),
      ...extra,
    });
    if (this.queue.length >= 50) this.flush();
  }

  error(code) {
    this.send("error", { error_code: String(code).slice(0, 64) });
    this.flush();
  }

  heartbeat(on) {
    clearInterval(this.timer);
    this.timer = on
      ? setInterval(() => {
          if (this.video.seeking) return;
          this.send("position");
          this.flush();
        }, HEARTBEAT_MS)
      : null;
  }

  flush(leaving = false) {
    if (!this.queue.length) return;
    const events = this.queue.splice(0, 100);
    post("/v1/events", { events }, { keepalive: leaving }).catch((e) =>
      this.onError(`player events: ${e.message}`),
    );
  }

  close() {
    this.heartbeat(false);
    this.flush(true);
    window.removeEventListener("pagehide", this.leave);
  }
}
