// Fleet (admins): firmware per hardware type, devices per version as bars,
// and rollouts with per-wave progress and live counts, started, paused,
// resumed, approved or cancelled from here. Refreshed every 2 s.

import { get, post } from "./api.js";
import { act, h, notice, progress, replace, when } from "./dom.js";

const REFRESH_MS = 2000;
const STATES = ["queued", "requested", "acknowledged", "succeeded", "failed", "timed_out", "cancelled"];

export function fleet(main) {
  const kind = h("select", { id: "hardware-type", "aria-label": "Hardware type" });
  const firmware = h("tbody");
  const versions = h("div", { id: "versions", class: "bars" });
  const rollouts = h("div", { id: "rollouts" });
  replace(
    main,
    h("h1", {}, "Fleet"),
    h("section", { "aria-label": "Rollouts" }, h("h2", {}, "Rollouts"), rollouts),
    h("section", { "aria-label": "Devices per version" }, h("h2", {}, "Devices per version"), versions),
    h(
      "section",
      { "aria-label": "Firmware" },
      h("h2", {}, "Firmware"),
      h("label", { class: "inline" }, "Hardware type ", kind),
      h(
        "table",
        { id: "firmware" },
        h("thead", {}, h("tr", {}, ["Hardware type", "Version", "Number", "Status", "Size", "Models", "Created"].map((t) => h("th", { scope: "col" }, t)))),
        firmware,
      ),
    ),
  );
  const loadFirmware = async () => {
    const query = new URLSearchParams({ limit: "100", hardware_type: kind.value });
    const page = await get(`/v1/fleet/firmware?${query}`);
    replace(
      firmware,
      page.firmware.length
        ? page.firmware.map((f) =>
            h(
              "tr",
              {},
              h("td", {}, f.hardware_type),
              h("td", {}, f.version),
              h("td", {}, f.version_num),
              h("td", {}, h("span", { class: `badge ${f.status}` }, f.status)),
              h("td", {}, f.size_bytes ?? "—"),
              h("td", {}, f.models.join(", ")),
              h("td", {}, when(f.created_at)),
            ),
          )
        : h("tr", {}, h("td", { colspan: 7 }, "No firmware yet.")),
    );
  };
  kind.addEventListener("change", () => loadFirmware().catch((e) => notice(e.message)));

  // One refresh loop: a command's own refresh replaces the next tick, and
  // an answer older than one already drawn is dropped.
  let timer = null;
  let stopped = false;
  let asked = 0;
  let drawn = 0;
  const refresh = async () => {
    clearTimeout(timer);
    const mine = ++asked;
    try {
      const [page, counts] = await Promise.all([get("/v1/fleet/rollouts?limit=20"), get("/v1/fleet/versions")]);
      if (stopped || mine < drawn) return;
      drawn = mine;
      drawRollouts(rollouts, page.rollouts, refresh);
      drawVersions(versions, counts.versions);
    } catch (e) {
      notice(e.message);
    }
    if (!stopped && mine === asked) timer = setTimeout(refresh, REFRESH_MS);
  };
  refresh();
  get("/v1/fleet/hardware-types")
    .then(({ hardware_types }) => {
      replace(kind, hardware_types.map((t) => h("option", { value: t.name }, t.name)));
      return hardware_types.length ? loadFirmware() : null;
    })
    .catch((e) => notice(e.message));
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function drawVersions(box, versions) {
  const byType = new Map();
  for (const v of versions) {
    if (!byType.has(v.hardware_type)) byType.set(v.hardware_type, []);
    byType.get(v.hardware_type).push(v);
  }
  const most = Math.max(1, ...versions.map((v) => v.devices));
  replace(
    box,
    byType.size
      ? [...byType].map(([type, rows]) =>
          h(
            "figure",
            { class: "bar-chart", "aria-label": `Devices per version of ${type}` },
            h("figcaption", {}, type),
            rows.map((v) =>
              h(
                "div",
                { class: "bar-row" },
                h("span", { class: "bar-label" }, v.version),
                h("span", { class: "bar", style: `width: ${(v.devices / most) * 100}%` }),
                h("span", { class: "bar-value" }, String(v.devices)),
              ),
            ),
          ),
        )
      : h("p", {}, "No device has reported a version yet."),
  );
}

function counts(c) {
  return h(
    "span",
    { class: "counts" },
    STATES.filter((s) => c[s]).map((s) => h("span", { class: `count ${s}`, dataset: { count: s } }, `${s.replace("_", " ")} ${c[s]}`)),
  );
}

/// Updates of a set of counts: each device's update of each component.
const total = (counts) => Object.values(counts).reduce((n, c) => n + c, 0);

function drawRollouts(box, rollouts, refresh) {
  replace(
    box,
    rollouts.length
      ? rollouts.map((r) => {
          const done = r.counts.succeeded ?? 0;
          const command = (name, label, cls = "") => {
            const b = h("button", { type: "button", class: cls, dataset: { command: name } }, label);
            b.addEventListener("click", () =>
              act(b, async () => {
                await post(`/v1/fleet/rollouts/${r.id}/${name}`, {});
                await refresh();
              }),
            );
            return b;
          };
          const commands = [];
          if (r.state === "draft") commands.push(command("start", "Start"));
          if (r.state === "running") commands.push(command("pause", "Pause"));
          if (r.state === "paused") commands.push(command("resume", "Resume"));
          if (r.awaiting_approval) commands.push(command("approve", "Approve next wave"));
          if (["draft", "running", "paused"].includes(r.state)) commands.push(command("cancel", "Cancel", "danger"));
          return h(
            "article",
            { class: "card rollout", dataset: { id: r.id, state: r.state } },
            h("h3", {}, r.name || r.id, " ", h("span", { class: `badge ${r.state}`, "data-field": "state" }, r.state)),
            r.paused_reason && h("p", { class: "muted" }, `Paused: ${r.paused_reason}`),
            h("p", {}, progress("Succeeded", (done / (total(r.counts) || 1)) * 100), " ", counts(r.counts)),
            h(
              "ol",
              { class: "waves" },
              r.waves.map((w) =>
                h(
                  "li",
                  { class: w.wave === r.current_wave ? "current" : "" },
                  `Wave ${w.wave + 1} (${w.size}) `,
                  progress(`Wave ${w.wave + 1} succeeded`, ((w.counts.succeeded ?? 0) / (total(w.counts) || 1)) * 100),
                  " ",
                  counts(w.counts),
                ),
              ),
            ),
            h(
              "p",
              { class: "muted" },
              `${r.current_rate_per_sec.toFixed(1)} updates/s`,
              r.eta_secs != null ? ` · about ${r.eta_secs} s left` : "",
              ` · started ${when(r.started_at)}`,
            ),
            h("p", { class: "actions" }, commands.flatMap((c) => [c, " "])),
          );
        })
      : h("p", {}, "No rollouts yet. Create them through POST /v1/fleet/rollouts."),
  );
}
