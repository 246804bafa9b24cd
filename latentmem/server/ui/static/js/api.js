// The REST API, with the key from the login form. Nothing else reaches the server.

const KEY = "latentmem.key";
const USER = "latentmem.user";

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) { value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY); },
  get user() { return sessionStorage.getItem(USER); },
  set user(value) { value ? sessionStorage.setItem(USER, value) : sessionStorage.removeItem(USER); },
};

// Shared between views: the last search, so the graph can show how a hit came in.
export const state = { search: null, stats: null };

export class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

const HINTS = {
  401: "The key was refused: log out and log in again with a valid key.",
  403: "This key may not do this.",
};

export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${session.key}` };
  const init = { method, headers, credentials: "omit", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "NetworkError", "The server did not answer. Is latentmem serve still running?");
  }
  let data = null;
  try { data = await resp.json(); } catch (err) { data = null; }
  if (!resp.ok) {
    const kind = data && typeof data.error === "string" ? data.error : `HTTP ${resp.status}`;
    let message = data && typeof data.message === "string" ? data.message : resp.statusText;
    if (HINTS[resp.status]) message = `${message}. ${HINTS[resp.status]}`;
    throw new ApiError(resp.status, kind, message);
  }
  return data;
}

export function userPath(suffix) {
  return `/v1/users/${encodeURIComponent(session.user || "default")}/${suffix}`;
}

export function memoryPath(id, suffix) {
  return `/v1/memories/${encodeURIComponent(id)}${suffix ? "/" + suffix : ""}`;
}
