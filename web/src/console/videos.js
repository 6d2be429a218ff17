// A user's side: upload through Uppy's tus plugin, follow the status as
// the app polls it, list, rename, delete, set as profile video, read the
// history, watch, react, bookmark and comment.

import Uppy from "@uppy/core";
import Dashboard from "@uppy/dashboard";
import Tus from "@uppy/tus";
import { claims, del, get, patch, post, put, token } from "./api.js";
import { act, bytes, h, notice, progress, replace, when } from "./dom.js";
import { watch } from "./watch.js";

const FINAL = new Set(["READY", "FAILED", "DELETED"]);
const POLL_MS = 1000;

/// The status as the app shows it: uploaded and encoded shares as bars.
function status(video) {
  return h(
    "div",
    { class: "status", dataset: { status: video.status } },
    h("span", { class: `badge ${video.status.toLowerCase()}`, id: "status" }, video.status),
    video.uploaded_percentage !== undefined &&
      h("label", {}, "Uploaded ", progress("Uploaded", video.uploaded_percentage, "uploaded")),
    video.encoding_percentage !== undefined &&
      ["UPLOADED", "ENCODING", "READY"].includes(video.status) &&
      h("label", {}, "Encoded ", progress("Encoded", video.encoding_percentage, "encoded")),
    video.failure_reason && h("p", { class: "error" }, video.failure_reason),
  );
}

/// Polls a video until it is READY, FAILED or DELETED (or the answer is a
/// 4xx: not there, not ours, signed out); nothing is drawn once stopped.
function follow(id, render) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    try {
      const video = await get(`/v1/videos/${id}`);
      if (stopped) return;
      render(video);
      if (FINAL.has(video.status)) return;
    } catch (e) {
      if (stopped) return;
      notice(e.message);
      if (e.status >= 400 && e.status < 500) return;
    }
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// One Uppy for the page's life: leaving the Upload view unmounts its
// Dashboard but never cancels an upload (a cancelled tus upload is
// terminated, that is deleted, on the server).
let uppy = null;
const followers = new Map();

function uploader() {
  if (uppy) return uppy;
  uppy = new Uppy({ restrictions: { allowedFileTypes: ["video/*"] }, autoProceed: false }).use(Tus, {
    endpoint: "/files/",
    chunkSize: 5 * 1024 * 1024,
    retryDelays: [0, 1000, 3000, 5000, 10000],
    removeFingerprintOnSuccess: true,
    allowedMetaFields: ["name", "type"],
    onBeforeRequest: (request) => request.setHeader("Authorization", `Bearer ${token()}`),
  });
  // Sent only when ticked: the flag's mere presence asks for onboarding.
  uppy.on("file-added", (file) => uppy.setFileMeta(file.id, { onboarding: "1" }));
  window.addEventListener("beforeunload", (e) => {
    if (uppy.getFiles().some((f) => f.progress.uploadStarted && !f.progress.uploadComplete)) e.preventDefault();
  });
  return uppy;
}

export function upload(main) {
  const target = h("div", { id: "uppy" });
  const live = h("div", { id: "uploads", "aria-live": "polite" });
  const overall = progress("Upload progress", 0, "upload-progress");
  const onboarding =
    claims()?.role === "admin" &&
    h("label", { class: "inline" }, h("input", { type: "checkbox", id: "onboarding" }), " Onboarding video");
  replace(
    main,
    h("h1", {}, "Upload"),
    h("p", {}, "Videos go up through tus in 5 MiB chunks; a broken connection resumes where it stopped, and leaving this page does not stop them."),
    onboarding,
    h("label", {}, "Upload ", overall),
    target,
    live,
  );
  const u = uploader();
  u.getPlugin("Tus").setOptions({ allowedMetaFields: ["name", "type"] });
  u.use(Dashboard, {
    inline: true,
    target,
    height: 320,
    proudlyDisplayPoweredByUppy: false,
    showProgressDetails: true,
  });
  document.getElementById("onboarding")?.addEventListener("change", (e) =>
    u.getPlugin("Tus").setOptions({
      allowedMetaFields: e.target.checked ? ["name", "type", "onboarding"] : ["name", "type"],
    }),
  );
  const rows = new Map();
  const row = (id, name) => {
    if (!rows.has(id)) {
      const el = h("div", { class: "card upload", dataset: { id } });
      rows.set(id, el);
      live.append(el);
      followers.get(id)?.();
      followers.set(
        id,
        follow(id, (video) => replace(el, h("a", { href: `#/videos/${id}` }, name), " ", status(video))),
      );
    }
  };
  const onProgress = (value) => replaceProgress(overall, value);
  const onSuccess = (file, response) => row(response.uploadURL.split("/").filter(Boolean).pop(), file.name);
  const onError = (file, error) => notice(`${file?.name}: ${error.message}`);
  u.on("progress", onProgress);
  u.on("upload-success", onSuccess);
  u.on("upload-error", onError);
  onProgress(u.getState().totalProgress ?? 0);
  return () => {
    u.off("progress", onProgress);
    u.off("upload-success", onSuccess);
    u.off("upload-error", onError);
    const dashboard = u.getPlugin("Dashboard");
    if (dashboard) u.removePlugin(dashboard);
    for (const id of rows.keys()) {
      followers.get(id)?.();
      followers.delete(id);
    }
  };
}

function replaceProgress(wrapper, value) {
  wrapper.querySelector("progress").value = value;
  wrapper.querySelector(".pct").textContent = `${Math.round(value)} %`;
}

export function list(main) {
  const rows = h("tbody");
  const more = h("button", { type: "button", hidden: true }, "More");
  const filter = h(
    "select",
    { id: "status-filter", "aria-label": "Status" },
    ["", "PENDING", "LOADING", "UPLOADED", "ENCODING", "READY", "FAILED", "DELETED"].map((s) =>
      h("option", { value: s }, s || "All but deleted"),
    ),
  );
  let cursor = null;
  const load = async (reset) => {
    if (reset) {
      cursor = null;
      rows.replaceChildren();
    }
    const query = new URLSearchParams({ limit: "20" });
    if (filter.value) query.set("status", filter.value);
    if (cursor) query.set("cursor", cursor);
    const page = await get(`/v1/videos?${query}`);
    for (const v of page.videos) {
      rows.append(
        h(
          "tr",
          { dataset: { id: v.id } },
          h("td", {}, h("a", { href: `#/videos/${v.id}` }, v.title || v.filename || v.id)),
          h("td", {}, h("span", { class: `badge ${v.status.toLowerCase()}` }, v.status)),
          h("td", {}, `${v.uploaded_percentage} %`),
          h("td", {}, bytes(v.size_bytes)),
          h("td", {}, when(v.created_at)),
        ),
      );
    }
    if (!page.videos.length && reset) rows.append(h("tr", {}, h("td", { colspan: 5 }, "No videos yet.")));
    cursor = page.next_cursor;
    more.hidden = !cursor;
  };
  filter.addEventListener("change", () => load(true).catch((e) => notice(e.message)));
  more.addEventListener("click", () => act(more, () => load(false)));
  replace(
    main,
    h("h1", {}, "My videos"),
    h("p", {}, h("a", { href: "#/upload", class: "button" }, "Upload a video")),
    h("label", { class: "inline" }, "Show ", filter),
    h(
      "table",
      { id: "videos" },
      h("thead", {}, h("tr", {}, ["Title", "Status", "Uploaded", "Size", "Created"].map((t) => h("th", { scope: "col" }, t)))),
      rows,
    ),
    more,
  );
  load(true).catch((e) => notice(e.message));
}

export function detail(main, id) {
  const head = h("div");
  const player = h("div", { id: "watch" });
  const owner = h("div");
  const engagement = h("div");
  const comments = h("section", { "aria-label": "Comments" });
  replace(main, head, player, engagement, owner, comments);
  let watching = null;
  let left = false;
  let ownerDrawn = false;
  let socialDrawn = false;

  const render = (video) => {
    replace(
      head,
      h("h1", {}, video.title || video.filename || "Untitled video"),
      video.description && h("p", {}, video.description),
      status(video),
    );
    if (video.status === "READY" && !watching) {
      watching = { stop() {} };
      get(`/v1/videos/${id}/playback`)
        .then((playback) => {
          if (left) return;
          watching = watch(id, playback, (message) => notice(message));
          replace(player, watching.element);
        })
        .catch((e) => notice(e.message));
    }
    if (!ownerDrawn && video.owner_id === claims()?.user) {
      ownerDrawn = true;
      ownerTools(owner, video);
    }
    if (!socialDrawn && ["UPLOADED", "ENCODING", "READY"].includes(video.status)) {
      socialDrawn = true;
      reactions(engagement, id, video);
      commentList(comments, id, video);
    }
  };
  const stop = follow(id, render);
  return () => {
    left = true;
    stop();
    watching?.stop();
  };
}

function ownerTools(box, video) {
  const id = video.id;
  const title = h("input", { id: "title", value: video.title ?? "", maxlength: 200 });
  const description = h("textarea", { id: "description", maxlength: 5000 }, video.description ?? "");
  const save = h("button", { type: "submit" }, "Save");
  const form = h(
    "form",
    { class: "card", "aria-label": "Details" },
    h("label", {}, "Title ", title),
    h("label", {}, "Description ", description),
    save,
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    act(save, async () => {
      await patch(`/v1/videos/${id}`, { title: title.value || null, description: description.value || null });
      notice("Saved.", "ok");
    });
  });
  const profile = h("button", { type: "button", id: "set-profile" }, "Set as profile video");
  profile.addEventListener("click", () => {
    if (!window.confirm("Make this your profile video? Your current profile video, if any, is deleted.")) return;
    act(profile, async () => {
      const set = await put("/v1/profile/video", { video_id: id });
      notice(
        set.previous_video_id
          ? `This is now your profile video; the previous one (${set.previous_video_id}) was deleted.`
          : "This is now your profile video.",
        "ok",
      );
    });
  });
  const remove = h("button", { type: "button", class: "danger", id: "delete" }, "Delete");
  remove.addEventListener("click", () => {
    if (!window.confirm("Delete this video and every file of it?")) return;
    act(remove, async () => {
      await del(`/v1/videos/${id}`);
      location.hash = "#/videos";
    });
  });
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const history = h("details", {}, h("summary", {}, "History"), timeline);
  history.addEventListener("toggle", async () => {
    if (!history.open) return;
    try {
      const { events } = await get(`/v1/videos/${id}/events`);
      replace(
        timeline,
        events.map((e) => h("li", {}, h("time", { datetime: e.recorded_at }, when(e.recorded_at)), " ", h("strong", {}, e.kind))),
      );
    } catch (e) {
      notice(e.message);
    }
  });
  replace(
    box,
    form,
    h(
      "p",
      { class: "actions" },
      profile,
      " ",
      h("a", { class: "button", href: `#/videos/${id}/stats` }, "Statistics"),
      " ",
      remove,
    ),
    history,
  );
}

function reactions(box, id, video) {
  const draw = (e) => {
    const button = (kind, label, count) => {
      const mine = e.my_reaction === kind;
      const b = h("button", { type: "button", "aria-pressed": String(mine), id: kind }, `${label} ${count}`);
      b.addEventListener("click", () =>
        act(b, async () =>
          draw(mine ? await del(`/v1/videos/${id}/reaction`) : await put(`/v1/videos/${id}/reaction`, { reaction: kind })),
        ),
      );
      return b;
    };
    const mark = h("button", { type: "button", "aria-pressed": String(e.bookmarked), id: "bookmark" }, e.bookmarked ? "Bookmarked" : "Bookmark");
    mark.addEventListener("click", () =>
      act(mark, async () => {
        if (e.bookmarked) await del(`/v1/bookmarks/${id}`);
        else await put(`/v1/bookmarks/${id}`);
        draw({ ...e, bookmarked: !e.bookmarked });
      }),
    );
    replace(
      box,
      h(
        "p",
        { class: "actions" },
        e.reactions_enabled ? [button("like", "👍", e.likes), " ", button("dislike", "👎", e.dislikes), " "] : "Reactions are off. ",
        mark,
        h("span", { class: "muted" }, ` ${e.views} views`),
      ),
    );
  };
  if (claims()?.role === "user" || claims()?.role === "admin") draw(video);
}

function commentList(box, id, video) {
  const items = h("ul", { class: "comments", id: "comments" });
  const load = async () => {
    const { comments } = await get(`/v1/videos/${id}/comments?limit=50`);
    replace(
      items,
      comments.map((c) => {
        const li = h("li", {}, h("p", {}, c.text), h("small", {}, when(c.created_at)));
        if (c.author_id === claims()?.user || claims()?.role === "admin") {
          const remove = h("button", { type: "button", class: "link" }, "Delete");
          remove.addEventListener("click", () =>
            act(remove, async () => {
              await del(`/v1/comments/${c.id}`);
              await load();
            }),
          );
          li.append(" ", remove);
        }
        return li;
      }),
    );
  };
  const text = h("textarea", { id: "comment", maxlength: 2000, required: true });
  const send = h("button", { type: "submit" }, "Comment");
  const form = h("form", {}, h("label", {}, "Add a comment ", text), send);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    act(send, async () => {
      await post(`/v1/videos/${id}/comments`, { text: text.value });
      text.value = "";
      await load();
    });
  });
  replace(box, h("h2", {}, `Comments`), video.comments_enabled === false ? h("p", {}, "Comments are off.") : form, items);
  load().catch((e) => notice(e.message));
}
