// The API client. The session (access token, refresh token, name, role) lives in
// sessionStorage: it survives a reload of the tab, is not shared with other tabs, is gone
// when the tab closes, and is never sent by the browser on its own (no cookie, so no CSRF).
// Script injection, the risk of any script-readable storage, is what the strict CSP blocks.

const KEY = "redfl.session";
const RANK = { viewer: 0, researcher: 1, admin: 2 };
let session = load();
let refreshing = null;

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY));
  } catch {
    return null;
  }
}

function save(value) {
  session = value;
  if (value) sessionStorage.setItem(KEY, JSON.stringify(value));
  else sessionStorage.removeItem(KEY);
}

function keep(pair) {
  save({ access: pair.access_token, refresh: pair.refresh_token, name: pair.username, role: pair.role });
}

/** An HTTP error with the status and the server's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The logged-in user ({name, role, access, refresh}) or null. */
export function user() {
  return session;
}

/** Whether the logged-in user has `role` or a higher one. */
export function can(role) {
  return session !== null && RANK[session.role] >= RANK[role];
}

function detail(body, status) {
  const text = body && body.detail;
  return text ? String(text) : `HTTP ${status}`;
}

async function json(response) {
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, detail(body, response.status));
  return body;
}

function post(path, body) {
  return fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

/** Log in; resolves to the session, rejects with an ApiError. */
export async function login(username, password) {
  keep(await json(await post("/api/auth/login", { username, password })));
  return session;
}

/** Forget the session and end it on the server (its refresh and access tokens revoked). */
export async function logout() {
  const old = session;
  save(null);
  window.dispatchEvent(new Event("redfl:logout"));
  if (!old) return;
  const headers = { "Content-Type": "application/json", Authorization: `Bearer ${old.access}` };
  await fetch("/api/auth/logout", { method: "POST", headers, body: JSON.stringify({ refresh_token: old.refresh }) }).catch(() => null);
}

/** Spend the refresh token for a new pair (one refresh at a time); false when refused. */
export function refresh() {
  if (!session) return Promise.resolve(false);
  refreshing ??= post("/api/auth/refresh", { refresh_token: session.refresh })
    .then(json)
    .then((pair) => (keep(pair), true))
    .catch(() => false)
    .finally(() => (refreshing = null));
  return refreshing;
}

/** Call the API with the access token; one refresh on 401. `raw` returns the Response. */
export async function request(method, path, body, raw = false) {
  for (let attempt = 0; ; attempt++) {
    if (!session) throw new ApiError(401, "not logged in");
    const token = session.access;
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (response.status === 401 && attempt === 0 && (session?.access !== token || (await refresh()))) continue;
    if (response.status === 401) await logout();
    if (!raw) return json(response);
    if (!response.ok) await json(response);
    return response;
  }
}

/** Fetch `path` with the access token and save it as `filename` (a download link). */
export async function download(path, filename) {
  const response = await request("GET", path, undefined, true);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** The WebSocket URL of an API `path`, with the access token (browsers send no headers). */
export function socketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const join = path.includes("?") ? "&" : "?";
  return `${scheme}://${location.host}${path}${join}token=${encodeURIComponent(session.access)}`;
}
