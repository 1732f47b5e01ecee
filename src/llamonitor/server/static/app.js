// The router: the URL (path + query string) is the whole state of a view, so
// any view can be shared or reloaded. Internal links are followed with
// history.pushState; each page module exports mount(root, ctx) and may return
// a cleanup function (called when the page is left).

import { api, hideError, showError } from "./api.js";
import { clear, h, int, setRouter } from "./dom.js";
import * as agents from "./agents.js";
import * as alerts from "./alerts.js";
import * as dashboard from "./dashboard.js";
import * as live from "./live.js";
import * as metrics from "./metrics.js";
import * as report from "./report.js";
import * as sessions from "./sessions.js";
import * as trace from "./trace.js";
import * as traces from "./traces.js";

const NAV = [
  ["/", "Dashboard"],
  ["/traces", "Traces"],
  ["/sessions", "Sessions"],
  ["/agents", "Agents"],
  ["/alerts", "Alerts"],
  ["/report", "Report"],
  ["/live", "Live"],
  ["/series", "Metrics"],
];

function route(pathname) {
  const parts = pathname.split("/").filter(Boolean).map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
  if (parts.length === 0) return { page: dashboard.mount, nav: "/", title: "Dashboard" };
  const [head, ...rest] = parts;
  if (head === "traces" && rest.length === 0) return { page: traces.mount, nav: "/traces", title: "Traces" };
  if (head === "traces") return { page: trace.mount, nav: "/traces", title: "Trace", args: [rest.join("/")] };
  if (head === "sessions" && rest.length === 0) return { page: sessions.mountList, nav: "/sessions", title: "Sessions" };
  if (head === "sessions") return { page: sessions.mountOne, nav: "/sessions", title: "Session", args: [rest.join("/")] };
  if (head === "agents") return { page: agents.mount, nav: "/agents", title: "Agents" };
  if (head === "alerts") return { page: alerts.mount, nav: "/alerts", title: "Alerts" };
  if (head === "report") return { page: report.mount, nav: "/report", title: "Report" };
  if (head === "live") return { page: live.mount, nav: "/live", title: "Live" };
  if (head === "series" && rest.length === 0) return { page: metrics.mountList, nav: "/series", title: "Metrics" };
  if (head === "series") return { page: metrics.mountOne, nav: "/series", title: "Metric", args: [rest.join("/")] };
  if (head === "spans" && rest.length >= 2) {
    // /spans/<trace>/<span>: the span's panel on its trace page.
    return { redirect: "/traces/" + encodeURIComponent(rest[0]) + "?span=" + encodeURIComponent(rest[1]) };
  }
  return { page: notFound, nav: null, title: "Not found" };
}

function notFound(root) {
  root.appendChild(h("div", { class: "empty" }, h("p", null, "No such page."), h("a", { href: "/" }, "Dashboard")));
}

let cleanup = null;
let controller = null;

function render() {
  const { pathname, search } = window.location;
  const r = route(pathname);
  if (r.redirect) {
    history.replaceState(null, "", r.redirect);
    render();
    return;
  }
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.error(err);
    }
    cleanup = null;
  }
  if (controller) controller.abort();
  controller = new AbortController();
  hideError();
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === r.nav);
  }
  document.title = `${r.title} · llamonitor`;
  const root = clear(document.getElementById("main"));
  const ctx = {
    params: new URLSearchParams(search),
    signal: controller.signal,
    /** Put params in the URL without re-rendering the page (the page refreshes itself). */
    setParams(params, push = true) {
      const qs = params.toString();
      const url = window.location.pathname + (qs ? "?" + qs : "");
      if (url === window.location.pathname + window.location.search) return;
      if (push) history.pushState(null, "", url);
      else history.replaceState(null, "", url);
      ctx.params = new URLSearchParams(qs);
    },
    /** setParams with ``changes`` merged into the current params ("" or null removes one). */
    changeParams(changes, push = true) {
      const next = new URLSearchParams(ctx.params);
      for (const [k, v] of Object.entries(changes)) {
        if (v !== "" && v !== null && v !== undefined) next.set(k, v);
        else next.delete(k);
      }
      ctx.setParams(next, push);
    },
  };
  try {
    const result = r.page(root, ctx, ...(r.args || []));
    if (typeof result === "function") cleanup = result;
    else if (result && typeof result.then === "function") {
      result.then((c) => {
        if (typeof c === "function") cleanup = c;
      }, showError);
    }
  } catch (err) {
    showError(err);
  }
}

function go(href, replace = false) {
  if (replace) history.replaceState(null, "", href);
  else history.pushState(null, "", href);
  render();
  window.scrollTo(0, 0);
}

setRouter(go);

// Follow same-origin links to UI pages without a page load.
document.addEventListener("click", (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest("a[href]");
  if (!a || a.target || a.hasAttribute("download")) return;
  const url = new URL(a.href, window.location.href);
  if (url.origin !== window.location.origin || url.pathname.startsWith("/api/") || url.pathname.startsWith("/static/")) return;
  e.preventDefault();
  if (url.pathname + url.search === window.location.pathname + window.location.search) return;
  go(url.pathname + url.search);
});

window.addEventListener("popstate", render);

function buildChrome() {
  const nav = document.getElementById("nav");
  for (const [href, label] of NAV) nav.appendChild(h("a", { href }, label));
  api("health").then((health) => {
    const el = document.getElementById("store");
    if (!el || !health) return;
    const store = health.store || {};
    el.textContent = `${store.label || store.kind || "store"} · ${int(store.rows)} spans · v${health.version || "?"}`;
    el.title = store.label || "";
  }, () => {});
}

buildChrome();
render();
