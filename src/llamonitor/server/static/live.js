// Live: spans as they land, from the WebSocket /api/live/ws (or, when it
// cannot be opened, the EventSource /api/live/sse) with the page's filters.
// New spans go on top of a bounded table; pause holds them back.

import { showError } from "./api.js";
import { clear, debounce, h, int, money, ms, sessionLink, traceHref, traceLink, whenTitle } from "./dom.js";

const MAX_ROWS = 500;
const FILTERS = [["operation", "operation"], ["model", "model"], ["session", "session"], ["agent", "agent"], ["q", "search"]];

export function mount(root, ctx) {
  let source = null;
  let closed = false;
  let paused = false;
  let received = 0;
  let held = [];
  let retry = null;
  let triedWs = false;

  const statusEl = h("span", { class: "conn" }, "connecting…");
  const countEl = h("span", { class: "count" }, "0 spans");
  const pauseBtn = h("button", { type: "button", class: "btn", "aria-pressed": "false", onclick: () => setPaused(!paused) }, "Pause");
  const clearBtn = h("button", { type: "button", class: "btn", onclick: () => {
    clear(tbody);
    waiting.hidden = false;
    updateCount();
  } }, "Clear");
  const reconnect = debounce(() => {
    const next = new URLSearchParams();
    for (const [k] of FILTERS) {
      const v = form.elements[k].value.trim();
      if (v) next.set(k, v);
    }
    const st = form.elements.status.value;
    if (st) next.set("status", st);
    ctx.setParams(next, false);
    connect();
  }, 400);
  const form = h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
    FILTERS.map(([k, label]) => h("label", { class: "field" }, h("span", null, label),
      h("input", { type: "text", name: k, value: ctx.params.get(k) || "", "aria-label": label, oninput: reconnect }))),
    h("label", { class: "field narrow" }, h("span", null, "status"),
      h("select", { name: "status", onchange: reconnect },
        [["", "any"], ["error", "errors"], ["ok", "ok"]].map(([v, l]) => h("option", { value: v, selected: (ctx.params.get("status") || "") === v }, l)))));

  root.appendChild(h("div", { class: "toolbar" }, h("h1", null, "Live"), statusEl, countEl, pauseBtn, clearBtn));
  root.appendChild(form);
  const tbody = h("tbody");
  const waiting = h("p", { class: "empty muted" }, "Waiting for spans… (run your app, or `llamonitor demo` against this store)");
  root.appendChild(h("section", { class: "card" }, h("table", { class: "grid live" },
    h("thead", null, h("tr", null, ["time", "operation", "trace", "session", "model", "duration", "tokens", "cost", "status"].map((l, i) => h("th", { class: i >= 5 && i <= 7 ? "num" : null }, l)))),
    tbody), waiting));

  function setPaused(value) {
    paused = value;
    pauseBtn.textContent = paused ? "Resume" : "Pause";
    pauseBtn.setAttribute("aria-pressed", String(paused));
    pauseBtn.classList.toggle("active", paused);
    if (!paused && held.length) {
      const spans = held;
      held = [];
      add(spans);
    }
    updateCount();
  }

  function updateCount() {
    countEl.textContent = `${int(received)} spans received` + (paused && held.length ? ` · ${int(held.length)} held` : "") +
      ` · ${int(tbody.rows.length)} shown`;
  }

  function row(s) {
    return h("tr", { class: s.error ? "error" : null },
      h("td", null, whenTitle(s.timestamp)),
      h("td", null, h("a", { href: traceHref(s.trace_id, { span: s.span_id }), class: "op" }, s.operation_name ?? "—")),
      h("td", null, traceLink(s.trace_id)),
      h("td", null, sessionLink(s.session_id)),
      h("td", null, s.model ?? ""),
      h("td", { class: "num" }, ms(s.duration_ms)),
      h("td", { class: "num" }, int(s.total_tokens)),
      h("td", { class: "num" }, money(s.cost_usd)),
      h("td", null, s.error ? h("span", { class: "badge bad", title: s.error_message ?? "" }, s.error_type ?? "error") : h("span", { class: "badge ok" }, "ok")));
  }

  function add(spans) {
    const frag = document.createDocumentFragment();
    // Newest first: the message's last span on top.
    for (let i = spans.length - 1; i >= 0 && frag.childNodes.length < MAX_ROWS; i--) frag.appendChild(row(spans[i]));
    tbody.insertBefore(frag, tbody.firstChild);
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
    waiting.hidden = tbody.rows.length > 0;
  }

  function onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    const spans = Array.isArray(msg && msg.spans) ? msg.spans : [];
    if (msg && msg.error) showError(new Error(String(msg.error)));
    if (!spans.length) return;
    received += spans.length;
    if (paused) {
      held.push(...spans);
      if (held.length > MAX_ROWS) held = held.slice(-MAX_ROWS);
    } else add(spans);
    updateCount();
  }

  function filterQuery() {
    const usp = new URLSearchParams();
    for (const k of [...FILTERS.map((f) => f[0]), "status"]) if (ctx.params.get(k)) usp.set(k, ctx.params.get(k));
    const qs = usp.toString();
    return qs ? "?" + qs : "";
  }

  function setStatus(text, cls) {
    statusEl.textContent = text;
    statusEl.className = "conn " + (cls || "");
  }

  function stop() {
    clearTimeout(retry);
    if (source) {
      source.onclose = source.onerror = source.onmessage = source.onopen = null;
      source.close();
      source = null;
    }
  }

  function connect() {
    stop();
    if (closed) return;
    if (typeof WebSocket === "function" && !triedWs) connectWs();
    else connectSse();
  }

  function connectWs() {
    const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${window.location.host}/api/live/ws${filterQuery()}`);
    let opened = false;
    source = ws;
    ws.onopen = () => {
      opened = true;
      setStatus("live (WebSocket)", "ok");
    };
    ws.onmessage = (e) => onMessage(e.data);
    ws.onclose = (e) => {
      if (closed || source !== ws) return;
      if (!opened) {
        // The WebSocket cannot be opened here (a proxy, an old server): use SSE.
        triedWs = true;
        connectSse();
        return;
      }
      setStatus(`disconnected${e.reason ? ": " + e.reason : ""} — retrying`, "bad");
      retry = setTimeout(connect, 2000);
    };
  }

  function connectSse() {
    const es = new EventSource(`/api/live/sse${filterQuery()}`);
    source = es;
    es.onopen = () => setStatus("live (server-sent events)", "ok");
    es.addEventListener("spans", (e) => onMessage(e.data));
    es.onmessage = (e) => onMessage(e.data);
    es.onerror = () => {
      if (closed || source !== es) return;
      setStatus("disconnected — retrying", "bad");
      if (es.readyState === EventSource.CLOSED) retry = setTimeout(connect, 3000);
    };
  }

  updateCount();
  connect();
  return () => {
    closed = true;
    stop();
  };
}
