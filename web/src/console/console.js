// reelay's web console: a hash-routed page on the api's own origin that
// uses only the public API. Sign in by pasting a token, with
// `#token=<jwt>` in the URL (the fragment never reaches a server), or, in
// development, with a button that mints one.

import "./console.css";
import { claims, get, post, signIn, signOut, token } from "./api.js";
import { act, h, notice, replace } from "./dom.js";
import { detail, list, upload } from "./videos.js";
import { stats } from "./stats.js";
import { moderation, onboarding } from "./admin.js";
import { fleet } from "./fleet.js";

const routes = [
  [/^#\/upload$/, upload],
  [/^#\/videos\/([0-9a-f-]{36})\/stats$/, stats],
  [/^#\/videos\/([0-9a-f-]{36})$/, detail],
  [/^#\/videos$/, list],
  [/^#\/admin\/moderation$/, moderation, "admin"],
  [/^#\/admin\/onboarding$/, onboarding, "admin"],
  [/^#\/admin\/fleet$/, fleet, "admin"],
];

let leave = null;

/// Goes to `hash`, also when the address already shows it (no hashchange
/// fires then).
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function takeTokenFromFragment() {
  const match = location.hash.match(/^#token=([^&]+)/);
  if (!match) return;
  signIn(decodeURIComponent(match[1]));
  history.replaceState(null, "", `${location.pathname}#/videos`);
}

function drawNav() {
  const who = claims();
  const nav = document.getElementById("nav");
  const link = (href, label) => h("a", { href, "aria-current": location.hash === href ? "page" : null }, label);
  if (!who) {
    replace(nav);
    replace(document.getElementById("who"));
    return;
  }
  replace(
    nav,
    link("#/upload", "Upload"),
    link("#/videos", "My videos"),
    who.role === "admin" && [
      link("#/admin/moderation", "Moderation"),
      link("#/admin/onboarding", "Onboarding"),
      link("#/admin/fleet", "Fleet"),
    ],
  );
  const out = h("button", { type: "button", class: "link", id: "sign-out" }, "Sign out");
  out.addEventListener("click", () => {
    signOut();
    go("#/");
  });
  replace(document.getElementById("who"), `${who.role} ${who.user.slice(0, 8)} `, out);
}

function signInView(main) {
  const field = h("textarea", { id: "token", rows: 4, autocomplete: "off", spellcheck: "false" });
  const submit = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { class: "card" }, h("label", {}, "Bearer token (JWT) ", field), submit);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    act(submit, async () => {
      signIn(field.value);
      // Checks the token with a call every role may make.
      try {
        await get("/v1/videos?limit=1");
      } catch (error) {
        if (error.status === 401) {
          signOut();
          throw error;
        }
      }
      go(wanted());
    });
  });
  const dev = h("div");
  replace(
    main,
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste a token (", h("code", {}, "make token"), " prints one), or open the console with ", h("code", {}, "#token=<jwt>"), "."),
    form,
    dev,
  );
  get("/v1/dev/tokens", { auth: false })
    .then(({ roles }) => {
      replace(
        dev,
        h("h2", {}, "Development"),
        h("p", {}, "This server mints tokens (REELAY_DEV_TOKENS): "),
        roles.map((role) => {
          const b = h("button", { type: "button", id: `mint-${role}` }, role === "admin" ? "Sign in as a new admin" : "Sign in as a new user");
          b.addEventListener("click", () =>
            act(b, async () => {
              signIn((await post("/v1/dev/tokens", { role }, { auth: false })).token);
              go(wanted());
            }),
          );
          return [b, " "];
        }),
      );
    })
    .catch(() => {}); // 404: not a development server
}

/// Where a sign-in goes: the page asked for, or the videos.
function wanted() {
  return routes.some(([pattern]) => pattern.test(location.hash)) ? location.hash : "#/videos";
}

function route() {
  // In-page anchors (the skip link) are not pages.
  if (location.hash && !location.hash.startsWith("#/") && !location.hash.startsWith("#token=")) {
    document.getElementById(location.hash.slice(1))?.focus();
    return;
  }
  takeTokenFromFragment();
  leave?.();
  leave = null;
  notice(null);
  drawNav();
  const main = document.getElementById("main");
  const who = claims();
  if (!who || (who.exp && who.exp * 1000 < Date.now())) {
    if (who) notice("The token has expired; sign in again.");
    signOut();
    drawNav();
    signInView(main);
    return;
  }
  for (const [pattern, view, role] of routes) {
    const match = location.hash.match(pattern);
    if (!match) continue;
    if (role && who.role !== role) {
      replace(main, h("h1", {}, "Not for this role"), h("p", {}, `This page is for ${role}s.`));
      return;
    }
    leave = view(main, ...match.slice(1)) || null;
    return;
  }
  location.replace("#/videos");
}

window.addEventListener("hashchange", route);
route();
if (token()) document.getElementById("main").focus();
