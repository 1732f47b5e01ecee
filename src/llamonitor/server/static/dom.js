// DOM helpers. Everything from the store is hostile: text goes in with
// textContent only, links are built from encoded path segments and
// URLSearchParams, and nothing here ever parses HTML.

/** h("div", {class: "x", onclick: fn}, child, "text", [more]) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = String(value);
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key.startsWith("on") && typeof value === "function") {
        el.addEventListener(key.slice(2), value);
      } else if (key === "href") el.setAttribute("href", safeHref(value));
      else if (key === "style") throw new Error("use classes, not inline styles");
      else if (value === true) el.setAttribute(key, "");
      else el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Only same-origin paths are ever put in an href. */
function safeHref(value) {
  const s = String(value);
  if (s.startsWith("/") && !s.startsWith("//")) return s;
  if (s.startsWith("?") || s.startsWith("#")) return s;
  return "#";
}

/** "/traces/<id>" with each segment encoded, plus a query string from an object. */
export function path(segments, params) {
  const p = "/" + segments.map((s) => encodeURIComponent(String(s))).join("/");
  const qs = query(params);
  return qs ? `${p}?${qs}` : p;
}

export function query(params) {
  if (!params) return "";
  const usp = params instanceof URLSearchParams ? new URLSearchParams(params) : new URLSearchParams();
  if (!(params instanceof URLSearchParams)) {
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined || v === null || v === "") continue;
      usp.set(k, String(v));
    }
  }
  return usp.toString();
}

/** An internal link (the router intercepts it: no page load). */
export function link(text, segments, params, cls) {
  return h("a", { href: path(segments, params), class: cls }, text);
}

export const traceHref = (id, params) => path(["traces", id], params);
export const sessionHref = (id) => path(["sessions", id]);
export const tracesHref = (params) => path(["traces"], params);

export function traceLink(id, params, text) {
  if (!id) return dash();
  return h("a", { href: traceHref(id, params), class: "id", title: id }, text || shortId(id));
}

export function sessionLink(id, text) {
  if (!id) return dash();
  return h("a", { href: sessionHref(id), class: "id", title: id }, text || id);
}

// A 32-hex id begins with the time (llamonitor's session and trace ids): its
// random end tells the traces of one minute apart (see llamonitor/schema/_ids.py).
export function shortId(id) {
  const s = String(id);
  if (/^[0-9a-f]{32}$/.test(s)) return "…" + s.slice(-12);
  return s.length > 14 ? s.slice(0, 12) + "…" : s;
}

export function dash() {
  return h("span", { class: "muted" }, "—");
}

// ---- numbers ------------------------------------------------------------------

export function money(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  const n = Number(v);
  if (n === 0) return "$0";
  const a = Math.abs(n);
  if (a >= 100) return "$" + n.toFixed(2);
  if (a >= 1) return "$" + n.toFixed(3);
  if (a >= 0.0001) return "$" + n.toFixed(4);
  return "$" + n.toFixed(8).replace(/0+$/, "");
}

export function ms(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  const n = Number(v);
  if (n < 1) return n.toFixed(2) + " ms";
  if (n < 1000) return (n < 10 ? n.toFixed(1) : Math.round(n)) + " ms";
  if (n < 60000) return (n / 1000).toFixed(n < 10000 ? 2 : 1) + " s";
  const m = Math.floor(n / 60000);
  return `${m}m ${Math.round((n % 60000) / 1000)}s`;
}

export function int(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  return Number(v).toLocaleString("en-US", { maximumFractionDigits: 0 });
}

export function pct(v) {
  if (v === null || v === undefined || Number.isNaN(Number(v))) return "—";
  const n = Number(v) * 100;
  return (n > 0 && n < 0.1 ? n.toFixed(2) : n.toFixed(1)) + "%";
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (x, n = 2) => String(x).padStart(n, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function whenTitle(iso) {
  const el = h("span", { class: "time", title: iso || "" }, when(iso));
  return el;
}

// ---- building blocks ------------------------------------------------------------

/** A stat tile. */
export function stat(label, value, cls) {
  return h("div", { class: "stat" + (cls ? " " + cls : "") },
    h("div", { class: "stat-value" }, value),
    h("div", { class: "stat-label" }, label));
}

export function empty(text, hint) {
  return h("div", { class: "empty" }, h("p", null, text), hint ? h("p", { class: "muted" }, hint) : null);
}

export const NO_SPANS = "No spans yet — run `llamonitor demo`, then reload.";

/**
 * A table: columns [{key, label, num, sort, render(row)}]. `sort` is the
 * current sort ("-cost_usd"), `onSort(key)` makes headers clickable.
 */
export function table(columns, rows, opts = {}) {
  const thead = h("thead", null, h("tr", null, columns.map((c) => {
    const th = h("th", { class: c.num ? "num" : null, scope: "col" });
    if (c.sort && opts.onSort) {
      const cur = opts.sort || "";
      const active = cur.replace(/^-/, "") === c.sort;
      const desc = cur.startsWith("-");
      const btn = h("button", { class: "sort" + (active ? " active" : ""), type: "button",
        onclick: () => opts.onSort(active && desc ? c.sort : "-" + c.sort),
        title: "sort by " + c.label },
      c.label, active ? (desc ? " ▼" : " ▲") : "");
      th.appendChild(btn);
      if (active) th.setAttribute("aria-sort", desc ? "descending" : "ascending");
    } else th.textContent = c.label;
    return th;
  })));
  const tbody = h("tbody");
  const t = h("table", { class: "grid" + (opts.cls ? " " + opts.cls : "") }, thead, tbody);
  addRows(t, columns, rows, opts);
  return t;
}

export function addRows(t, columns, rows, opts = {}) {
  const tbody = t.tBodies[0];
  for (const row of rows) {
    const tr = h("tr");
    for (const c of columns) {
      const v = c.render ? c.render(row) : row[c.key];
      tr.appendChild(h("td", { class: c.num ? "num" : c.cls }, v === undefined || v === null ? dash() : v));
    }
    if (opts.rowHref) {
      const href = opts.rowHref(row);
      tr.classList.add("clickable");
      tr.addEventListener("click", (e) => {
        if (e.target.closest("a, button, input")) return;
        navigate(href);
      });
    }
    tbody.appendChild(tr);
  }
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", null, title), ...children);
}

// ---- navigation: the router (app.js) registers itself here ------------------------

let router = (href) => { window.location.assign(href); };

export function setRouter(fn) {
  router = fn;
}

/** Go to an internal page (pushState; replace=true for replaceState). */
export function navigate(href, replace = false) {
  router(href, replace);
}

/** Debounce. */
export function debounce(fn, wait) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), wait);
  };
}

// ---- the time range picker (since / until in the URL) ------------------------------

export const RANGES = [["15m", "15m"], ["1h", "1h"], ["24h", "1d"], ["7d", "1w"], ["all", ""]];

function toLocalInput(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/**
 * Presets (15m, 1h, 24h, 7d, all) and a custom since/until. params: the page's
 * URLSearchParams; onChange(since, until) with "" for "not set".
 */
export function rangePicker(params, onChange) {
  const since = params.get("since") || "";
  const until = params.get("until") || "";
  const preset = RANGES.find(([, v]) => v === since && !until);
  const custom = !preset;
  const from = h("input", { type: "datetime-local", name: "since", "aria-label": "from",
    value: custom && since ? toLocalInput(since) : "" });
  const to = h("input", { type: "datetime-local", name: "until", "aria-label": "to",
    value: custom && until ? toLocalInput(until) : "" });
  const customBox = h("span", { class: "custom-range" + (custom ? "" : " hidden") }, from, " – ", to,
    h("button", { type: "button", class: "btn", onclick: () => {
      const s = from.value ? new Date(from.value).toISOString() : "";
      const u = to.value ? new Date(to.value).toISOString() : "";
      onChange(s, u);
    } }, "Apply"));
  const buttons = RANGES.map(([label, value]) => h("button", {
    type: "button",
    class: "seg" + (preset && preset[1] === value ? " active" : ""),
    "data-range": label,
    onclick: () => onChange(value, ""),
  }, label));
  buttons.push(h("button", { type: "button", class: "seg" + (custom ? " active" : ""), "data-range": "custom",
    onclick: () => customBox.classList.toggle("hidden") }, "custom"));
  return h("div", { class: "range" }, h("span", { class: "segs", role: "group", "aria-label": "time range" }, buttons), customBox);
}

/** "since 1h" etc., for headings. */
export function rangeLabel(params) {
  const since = params.get("since");
  const until = params.get("until");
  const preset = RANGES.find(([, v]) => v === (since || "") && !until);
  if (preset) return preset[0] === "all" ? "all time" : "last " + preset[0];
  return `${since ? when(since) : "start"} → ${until ? when(until) : "now"}`;
}
