// The console's only way to the server: reelay's public API, same origin,
// with the signed-in token. Problems (RFC 9457) become ApiError with the
// server's own words.

const KEY = "reelay.token";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function signIn(jwt) {
  sessionStorage.setItem(KEY, jwt.trim());
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

/// What the token says about its bearer (the server checks it; this only
/// decides what to show).
export function claims() {
  const jwt = token();
  if (!jwt) return null;
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
    return { user: json.sub, role: json.role || "user", exp: json.exp };
  } catch {
    return null;
  }
}

export async function call(method, path, body, { auth = true, keepalive = false } = {}) {
  const headers = {};
  if (auth && token()) headers.authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    keepalive,
  });
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = { detail: text };
  }
  if (!response.ok) throw new ApiError(response.status, json || {});
  return json;
}

export const get = (path, options) => call("GET", path, undefined, options);
export const post = (path, body, options) => call("POST", path, body ?? {}, options);
export const put = (path, body) => call("PUT", path, body ?? {});
export const patch = (path, body) => call("PATCH", path, body);
export const del = (path) => call("DELETE", path);
