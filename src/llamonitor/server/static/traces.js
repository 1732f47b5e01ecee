// Traces: /api/traces with every filter in the URL, sortable headers and a
// cursor "load more"; a row opens its trace.

import { api, hideError, showError } from "./api.js";
import { loadMore } from "./pager.js";
import {
  NO_SPANS, clear, debounce, empty, h, int, money, ms, rangePicker, sessionLink, table,
  traceHref, traceLink, whenTitle,
} from "./dom.js";

/** The filters of the form, by URL parameter (the API's own names). */
const TEXT_FILTERS = [
  ["q", "search", "name, error, prompt, completion"],
  ["operation", "operation", "exact, or a glob: tool.*"],
  ["model", "model", ""],
  ["session", "session", ""],
  ["agent", "agent", ""],
];
const NUM_FILTERS = [
  ["min_duration_ms", "min ms"],
  ["min_cost_usd", "min $"],
];
/** Filters shown only when the URL has them (links from other pages). */
const OTHER_FILTERS = ["provider", "project", "operation_type", "max_duration_ms", "max_cost_usd", "trace"];
const API_PARAMS = ["since", "until", "status", "sort", ...TEXT_FILTERS.map((f) => f[0]), ...NUM_FILTERS.map((f) => f[0]), ...OTHER_FILTERS];

function datalistOf(id, groupBy, signal) {
  const list = h("datalist", { id });
  api("aggregates", { group_by: groupBy }, signal).then((agg) => {
    for (const g of (agg && agg.groups) || []) if (g.key !== null && g.key !== undefined) list.appendChild(h("option", { value: String(g.key) }));
  }, () => {});
  return list;
}

export function mount(root, ctx) {
  let seq = 0;
  const p = () => ctx.params;

  const update = (changes, push) => {
    ctx.changeParams(changes, push);
    load();
  };
  const remount = () => {
    seq++;
    clear(root);
    mount(root, ctx);
  };
  const typed = debounce((name, value) => update({ [name]: value.trim() }, false), 300);

  const inputs = TEXT_FILTERS.map(([name, label, placeholder]) => {
    const listId = name === "model" || name === "operation" || name === "agent" ? "dl-" + name : null;
    const input = h("input", {
      type: name === "q" ? "search" : "text", name, value: p().get(name) || "", placeholder: placeholder || label,
      list: listId, "aria-label": label, autocomplete: "off", oninput: (e) => typed(name, e.target.value),
    });
    return h("label", { class: "field" + (name === "q" ? " wide" : "") }, h("span", null, label), input);
  });
  const nums = NUM_FILTERS.map(([name, label]) => h("label", { class: "field narrow" }, h("span", null, label),
    h("input", { type: "number", min: "0", step: "any", name, value: p().get(name) || "", "aria-label": label,
      oninput: (e) => typed(name, e.target.value) })));
  const status = h("select", { name: "status", "aria-label": "status", onchange: (e) => update({ status: e.target.value }, true) },
    [["", "any"], ["error", "errors"], ["ok", "ok"]].map(([v, l]) => h("option", { value: v, selected: (p().get("status") || "") === v }, l)));
  const extra = h("div", { class: "chips" });

  root.appendChild(h("div", { class: "toolbar" }, h("h1", null, "Traces"),
    rangePicker(p(), (since, until) => {
      const next = new URLSearchParams(ctx.params);
      for (const [k, v] of [["since", since], ["until", until]]) {
        if (v) next.set(k, v);
        else next.delete(k);
      }
      ctx.setParams(next, true);
      remount();
    })));
  root.appendChild(h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
    inputs, h("label", { class: "field narrow" }, h("span", null, "status"), status), nums,
    h("button", { type: "button", class: "btn", onclick: () => {
      const keep = new URLSearchParams();
      if (ctx.params.get("sort")) keep.set("sort", ctx.params.get("sort"));
      ctx.setParams(keep, true);
      remount();
    } }, "Clear"),
    datalistOf("dl-model", "model", ctx.signal), datalistOf("dl-operation", "operation", ctx.signal),
    datalistOf("dl-agent", "agent", ctx.signal)));
  root.appendChild(extra);
  const summary = h("p", { class: "muted subtitle" });
  const results = h("div", { class: "results" });
  root.appendChild(summary);
  root.appendChild(results);

  function columns() {
    const params = {};
    for (const k of ["since", "until"]) if (p().get(k)) params[k] = p().get(k);
    return [
      { label: "start", sort: "start", render: (t) => whenTitle(t.start) },
      { label: "trace", render: (t) => traceLink(t.trace_id) },
      { label: "root operation", render: (t) => h("span", { class: "op" }, t.root_operation ?? "—") },
      { label: "session", render: (t) => sessionLink(t.session_id) },
      { label: "models", render: (t) => (t.models || []).join(", ") || null },
      { label: "spans", num: true, sort: "spans", render: (t) => int(t.spans) },
      { label: "errors", num: true, sort: "errors", render: (t) => (t.errors ? h("span", { class: "bad" }, int(t.errors)) : "0") },
      { label: "duration", num: true, sort: "duration_ms", render: (t) => ms(t.duration_ms) },
      { label: "tokens", num: true, render: (t) => int(t.total_tokens) },
      { label: "cost", num: true, sort: "cost_usd", render: (t) => money(t.cost_usd) },
    ];
  }

  function load() {
    const mine = ++seq;
    hideError();
    clear(extra);
    for (const name of OTHER_FILTERS) {
      const v = p().get(name);
      if (v) extra.appendChild(h("span", { class: "chip" }, `${name}: `, h("code", null, v),
        h("button", { type: "button", title: "remove filter", onclick: () => update({ [name]: "" }, true) }, "×")));
    }
    const params = new URLSearchParams();
    for (const k of API_PARAMS) if (p().get(k)) params.set(k, p().get(k));
    params.set("limit", "50");
    const cols = columns();
    const filtered = [...params.keys()].some((k) => k !== "limit" && k !== "sort");
    const onSort = (sort) => update({ sort: sort === "-start" ? "" : sort }, true);
    api("traces", params, ctx.signal).then((page) => {
      if (mine !== seq) return;
      clear(results);
      const rows = page.traces || [];
      if (!rows.length) {
        results.appendChild(empty(filtered ? "No traces match these filters." : NO_SPANS));
        summary.textContent = "";
        return;
      }
      const t = table(cols, rows, { sort: p().get("sort") || "-start", onSort, rowHref: (r) => traceHref(r.trace_id), cls: "traces" });
      results.appendChild(t);
      const more = loadMore({ kind: "traces", params, page, table: t, cols, summary,
        rowHref: (r) => traceHref(r.trace_id), signal: ctx.signal, stale: () => mine !== seq });
      results.appendChild(more);
    }, (err) => {
      if (mine !== seq) return;
      clear(results);
      showError(err);
    });
  }
  load();
}
