// Statistics of one video (its owner or an admin): the headline figures,
// views and watch time per day, and the retention curve, drawn with uPlot.

import uPlot from "uplot";
import { get } from "./api.js";
import { h, notice, replace } from "./dom.js";

function chart(charts, title, series, x, ys, options) {
  const box = h("figure", { class: "chart", "aria-label": title }, h("figcaption", {}, title));
  const width = Math.min(720, document.getElementById("main").clientWidth - 32);
  // uPlot needs the element in the document to measure it.
  requestAnimationFrame(() => {
    if (charts.left) return;
    charts.drawn.push(new uPlot(
      {
        width,
        height: 220,
        series: [{}, ...series],
        axes: [{}, { size: 60 }],
        ...options,
      },
      [x, ...ys],
      box,
    ));
  });
  return box;
}

const seconds = (ms) => (ms / 1000).toFixed(1);

export function stats(main, id) {
  // What this view drew (uPlot listens on window until destroyed), and
  // whether it was left before the figures came.
  const charts = { drawn: [], left: false };
  replace(main, h("h1", {}, "Statistics"), h("p", {}, "Loading…"));
  get(`/v1/videos/${id}/stats`)
    .then((s) => {
      if (charts.left) return;
      const figures = [
        ["Views", s.views],
        ["Unique viewers", s.unique_viewers],
        ["Watch time", `${seconds(s.watch_time_ms)} s`],
        ["Average view", `${seconds(s.average_view_duration_ms)} s`],
        ["Completion", `${Math.round(s.completion_rate * 100)} %`],
        ["Start-up p50 / p95", `${s.startup_time_ms?.p50 ?? "—"} / ${s.startup_time_ms?.p95 ?? "—"} ms`],
        ["Rebuffering", `${(s.rebuffer_ratio * 100).toFixed(2)} %`],
        ["Quality changes", s.quality_changes],
      ];
      const days = s.days ?? [];
      const x = days.map((d) => Date.parse(d.date) / 1000);
      replace(
        main,
        h("h1", {}, "Statistics"),
        h("p", {}, h("a", { href: `#/videos/${id}` }, "← Back to the video")),
        h("dl", { class: "figures", id: "figures" }, figures.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, String(v))))),
        days.length
          ? chart(
              charts,
              "Views and watch time per day",
              [
                { label: "Views", stroke: "#2563eb", width: 2 },
                { label: "Watch time (s)", stroke: "#16a34a", width: 2, scale: "s" },
              ],
              x,
              [days.map((d) => d.views), days.map((d) => d.watch_time_ms / 1000)],
              {
                // Half a day either side, so a single day is not lost in a range of years.
                scales: { x: { time: true, auto: false, range: [x[0] - 43200, x[x.length - 1] + 43200] } },
                axes: [{}, { size: 60 }, { side: 1, scale: "s", size: 60 }],
              },
            )
          : h("p", {}, "No views yet."),
        chart(
          charts,
          "Retention: share of sessions past each point of the video",
          [{ label: "Share", stroke: "#9333ea", width: 2, fill: "rgba(147,51,234,0.1)" }],
          (s.retention ?? []).map((p) => p.at_percent),
          [(s.retention ?? []).map((p) => p.share)],
          { scales: { x: { time: false }, y: { range: [0, 1] } } },
        ),
      );
    })
    .catch((e) => {
      if (charts.left) return;
      notice(e.message);
      replace(main, h("h1", {}, "Statistics"), h("p", {}, e.message));
    });
  return () => {
    charts.left = true;
    charts.drawn.forEach((u) => u.destroy());
  };
}
