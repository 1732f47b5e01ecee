// Sessions: the list (/api/sessions: sortable, load more) and one session
// (/api/sessions/{id}) as a conversation: each trace's first prompt and last
// completion, with its cost, duration and a link to the trace.

import { api, showError } from "./api.js";
import { loadMore } from "./pager.js";
import {
  NO_SPANS, clear, debounce, empty, h, int, money, ms, path, rangePicker, sessionHref, sessionLink,
  stat, table, traceHref, traceLink, tracesHref, whenTitle,
} from "./dom.js";

const LIST_FILTERS = [["model", "model"], ["agent", "agent"], ["operation", "operation"]];

export function mountList(root, ctx) {
  let seq = 0;
  const remount = () => {
    seq++;
    clear(root);
    mountList(root, ctx);
  };
  const update = (changes, push) => {
    ctx.changeParams(changes, push);
    load();
  };
  const typed = debounce((k, v) => update({ [k]: v.trim() }, false), 300);
  root.appendChild(h("div", { class: "toolbar" }, h("h1", null, "Sessions"),
    rangePicker(ctx.params, (since, until) => {
      const next = new URLSearchParams(ctx.params);
      for (const [k, v] of [["since", since], ["until", until]]) {
        if (v) next.set(k, v);
        else next.delete(k);
      }
      ctx.setParams(next, true);
      remount();
    })));
  root.appendChild(h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
    LIST_FILTERS.map(([k, label]) => h("label", { class: "field" }, h("span", null, label),
      h("input", { type: "text", name: k, value: ctx.params.get(k) || "", "aria-label": label, oninput: (e) => typed(k, e.target.value) }))),
    h("label", { class: "field narrow" }, h("span", null, "status"),
      h("select", { name: "status", onchange: (e) => update({ status: e.target.value }, true) },
        [["", "any"], ["error", "with errors"], ["ok", "ok spans"]].map(([v, l]) => h("option", { value: v, selected: (ctx.params.get("status") || "") === v }, l))))));
  const summary = h("p", { class: "muted subtitle" });
  const results = h("div");
  root.appendChild(summary);
  root.appendChild(results);

  const cols = [
    { label: "session", render: (s) => sessionLink(s.session_id) },
    { label: "first seen", sort: "first_seen", render: (s) => whenTitle(s.first_seen) },
    { label: "last seen", sort: "last_seen", render: (s) => whenTitle(s.last_seen) },
    { label: "traces", num: true, sort: "traces", render: (s) => h("a", { href: tracesHref({ session: s.session_id }) }, int(s.traces)) },
    { label: "spans", num: true, sort: "spans", render: (s) => int(s.spans) },
    { label: "errors", num: true, sort: "errors", render: (s) => (s.errors ? h("a", { class: "bad", href: tracesHref({ session: s.session_id, status: "error" }) }, int(s.errors)) : "0") },
    { label: "tokens in", num: true, render: (s) => int(s.input_tokens) },
    { label: "tokens out", num: true, render: (s) => int(s.output_tokens) },
    { label: "cost", num: true, sort: "cost_usd", render: (s) => money(s.cost_usd) },
  ];

  function load() {
    const mine = ++seq;
    const params = new URLSearchParams();
    for (const k of ["since", "until", "status", "sort", ...LIST_FILTERS.map((f) => f[0])]) if (ctx.params.get(k)) params.set(k, ctx.params.get(k));
    const filtered = [...params.keys()].some((k) => k !== "sort");
    params.set("limit", "50");
    api("sessions", params, ctx.signal).then((page) => {
      if (mine !== seq) return;
      clear(results);
      const rows = page.sessions || [];
      if (!rows.length) {
        summary.textContent = "";
        results.appendChild(empty(filtered ? "No sessions match these filters." : NO_SPANS));
        return;
      }
      const rowHref = (s) => sessionHref(s.session_id);
      const t = table(cols, rows, { sort: ctx.params.get("sort") || "-last_seen", rowHref, onSort: (s) => update({ sort: s === "-last_seen" ? "" : s }, true) });
      results.appendChild(t);
      const more = loadMore({ kind: "sessions", params, page, table: t, cols, rowHref, summary,
        signal: ctx.signal, stale: () => mine !== seq });
      results.appendChild(more);
    }, (err) => {
      if (mine !== seq) return;
      clear(results);
      showError(err);
    });
  }
  load();
}

export function mountOne(root, ctx, sessionId) {
  root.appendChild(h("div", { class: "toolbar" }, h("h1", null, "Session ", h("code", { class: "id" }, sessionId)),
    h("a", { class: "btn agents-link", href: path(["agents"], { session_id: sessionId }),
      title: "the coordination graph of this session's agents" }, "Agents view")));
  const body = h("div", null, h("p", { class: "loading" }, "Loading…"));
  root.appendChild(body);
  api("sessions/" + encodeURIComponent(sessionId), null, ctx.signal).then((data) => {
    clear(body);
    const s = data.session || {};
    body.appendChild(h("div", { class: "stats" },
      stat("traces", h("a", { href: tracesHref({ session: sessionId }) }, int(s.traces))),
      stat("spans", int(s.spans)),
      stat("errors", s.errors ? h("a", { class: "bad", href: tracesHref({ session: sessionId, status: "error" }) }, int(s.errors)) : "0"),
      stat("tokens", int(s.total_tokens)),
      stat("cost", money(s.cost_usd)),
      stat("first seen", whenTitle(s.first_seen)),
      stat("last seen", whenTitle(s.last_seen))));
    const traces = data.traces || [];
    if (!traces.length) {
      body.appendChild(empty("This session has no traces."));
      return;
    }
    const timeline = h("ol", { class: "timeline" });
    for (const t of traces) {
      const meta = h("div", { class: "turn-meta" },
        traceLink(t.trace_id, null, t.root_operation ?? t.trace_id),
        h("span", { class: "muted" }, " · "), whenTitle(t.start),
        h("span", { class: "muted" }, " · "), ms(t.duration_ms),
        h("span", { class: "muted" }, " · "), money(t.cost_usd),
        h("span", { class: "muted" }, " · "), `${int(t.total_tokens)} tokens`,
        h("span", { class: "muted" }, " · "), `${int(t.spans)} spans`,
        t.errors ? h("a", { class: "badge bad", href: traceHref(t.trace_id) }, `${int(t.errors)} ${t.errors === 1 ? "error" : "errors"}`) : null);
      const bubbles = h("div", { class: "bubbles" });
      if (t.prompt !== null && t.prompt !== undefined) bubbles.appendChild(bubble("prompt", t.prompt));
      if (t.completion !== null && t.completion !== undefined) bubbles.appendChild(bubble("completion", t.completion));
      if (!bubbles.firstChild) bubbles.appendChild(h("p", { class: "muted small" }, "no prompt or completion captured"));
      timeline.appendChild(h("li", { class: "turn" + (t.errors ? " has-error" : "") }, meta, bubbles));
    }
    body.appendChild(h("section", { class: "card" }, h("h2", null, "Conversation"), timeline));
  }, (err) => {
    clear(body);
    body.appendChild(empty(err.status === 404 ? "No such session." : "The session could not be loaded."));
    showError(err);
  });
}

function bubble(kind, text) {
  const p = h("pre", { class: "bubble-text" });
  p.textContent = typeof text === "string" ? text : JSON.stringify(text, null, 2);
  return h("div", { class: "bubble " + kind }, h("div", { class: "bubble-label" }, kind), p);
}
