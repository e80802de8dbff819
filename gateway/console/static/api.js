// The public API, same origin, signed in by the session cookie; writes carry the CSRF token.
let csrf = sessionStorage.getItem("crm.csrf") || null;

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export function setCsrf(token) {
  csrf = token;
  if (token) sessionStorage.setItem("crm.csrf", token);
  else sessionStorage.removeItem("crm.csrf");
}

let onUnauthorized = () => {};
export function whenSignedOut(fn) {
  onUnauthorized = fn;
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const res = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json() : await res.text();
  if (!res.ok) {
    if (res.status === 401 && !path.startsWith("/api/v1/sessions")) onUnauthorized();
    throw new ApiError(res.status, typeof data === "object" ? data : { detail: data });
  }
  return data;
}

export const get = (path, params) => {
  const q = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null)) : null;
  return api("GET", q && [...q].length ? `${path}?${q}` : path);
};
export const post = (path, body = {}) => api("POST", path, body);
export const patch = (path, body) => api("PATCH", path, body);
export const put = (path, body) => api("PUT", path, body);
export const del = (path) => api("DELETE", path);
