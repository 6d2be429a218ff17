// A small DOM builder: text always goes in as text (titles and comments
// are other people's input), never as HTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && key !== "list" && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export function notice(message, kind = "error") {
  const box = document.getElementById("notice");
  replace(box, message ? h("p", { class: kind }, message) : null);
}

/// Runs an action of a button: disables it meanwhile and shows what failed.
export async function act(button, action) {
  button.disabled = true;
  notice(null);
  try {
    await action();
  } catch (e) {
    notice(e.message);
  } finally {
    button.disabled = false;
  }
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

export function bytes(n) {
  if (n == null) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/// A labelled progress bar (role progressbar, value 0–100).
export function progress(label, value, id) {
  const bar = h("progress", { max: 100, value: value ?? 0, id, "aria-label": label });
  return h("span", { class: "progress" }, bar, h("span", { class: "pct" }, `${Math.round(value ?? 0)} %`));
}
