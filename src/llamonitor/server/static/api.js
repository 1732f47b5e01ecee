// The API: GET /api/... as JSON. An error answer is {"error", "parameter"};
// it becomes an ApiError, which pages show in the banner (showError).

import { clear, h } from "./dom.js";

export class ApiError extends Error {
  constructor(status, message, parameter) {
    super(message);
    this.status = status;
    this.parameter = parameter || null;
  }
}

/** GET /api/<path>?<params>; params: an object (empty values left out) or URLSearchParams. */
export async function api(path, params, signal) {
  const usp = new URLSearchParams();
  if (params instanceof URLSearchParams) {
    for (const [k, v] of params) if (v !== "") usp.append(k, v);
  } else if (params) {
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined || v === null || v === "") continue;
      usp.set(k, String(v));
    }
  }
  const qs = usp.toString();
  const url = "/api/" + path + (qs ? "?" + qs : "");
  let response;
  try {
    response = await fetch(url, { headers: { accept: "application/json" }, signal, credentials: "same-origin" });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "the server cannot be reached (" + (err && err.message ? err.message : err) + ")");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    // A page left while its answer was being read: not an empty answer.
    if ((err && err.name === "AbortError") || (signal && signal.aborted)) throw err;
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
    throw new ApiError(response.status, message, body && body.parameter);
  }
  return body;
}

/** Show an error in the banner at the top of the page (aborts are ignored). */
export function showError(err) {
  if (err && err.name === "AbortError") return;
  const banner = document.getElementById("banner");
  if (!banner) return;
  clear(banner);
  const what = err instanceof ApiError ? err.message : String((err && err.message) || err);
  banner.appendChild(h("strong", null, err instanceof ApiError && err.status ? `Error ${err.status}: ` : "Error: "));
  banner.appendChild(document.createTextNode(what));
  if (err instanceof ApiError && err.parameter) {
    banner.appendChild(h("span", { class: "param" }, " (parameter: ", h("code", null, err.parameter), ")"));
  }
  banner.appendChild(h("button", { type: "button", class: "close", title: "dismiss", onclick: hideError }, "×"));
  banner.hidden = false;
  if (!(err instanceof ApiError)) console.error(err);
}

export function hideError() {
  const banner = document.getElementById("banner");
  if (banner) {
    banner.hidden = true;
    clear(banner);
  }
}
