// Report: /api/report (the `llamonitor report --json` document) over a range,
// a session and a project. Every figure links to the traces behind it: a
// model's cost to /traces?model=X, an operation to /traces?operation=Y, a trace
// id to its trace page, a session to its session page.

import { api, showError } from "./api.js";
import { STEP, timeChart } from "./charts.js";
import {
  NO_SPANS, clear, debounce, empty, h, int, money, ms, pct, rangeLabel, rangePicker, section, sessionLink,
  stat, table, traceLink, tracesHref, whenTitle,
} from "./dom.js";

export function mount(root, ctx) {
  let charts = [];
  let seq = 0;
  const destroy = () => {
    for (const c of charts) c.destroy();
    charts = [];
  };
  const set = (changes, push = true) => {
    ctx.changeParams(changes, push);
  };
  const typed = debounce((k, v) => {
    set({ [k]: v.trim() }, false);
    load();
  }, 400);
  const picker = h("div");
  const drawPicker = () => {
    clear(picker);
    picker.appendChild(rangePicker(ctx.params, (since, until) => {
      set({ since, until });
      drawPicker();
      load();
    }));
  };
  drawPicker();
  root.appendChild(h("div", { class: "toolbar" }, h("h1", null, "Report"), picker));
  root.appendChild(h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
    ["session", "project"].map((k) => h("label", { class: "field" }, h("span", null, k),
      h("input", { type: "text", name: k, value: ctx.params.get(k) || "", "aria-label": k, oninput: (e) => typed(k, e.target.value) }))),
    h("label", { class: "field narrow" }, h("span", null, "top"),
      h("input", { type: "number", name: "top", min: "1", max: "100", value: ctx.params.get("top") || "", placeholder: "10", oninput: (e) => typed("top", e.target.value) }))));
  const body = h("div");
  root.appendChild(body);

  function load() {
    const mine = ++seq;
    destroy();
    clear(body);
    body.appendChild(h("p", { class: "loading" }, "Computing the report…"));
    const p = ctx.params;
    const params = {};
    for (const k of ["since", "until", "session", "project", "top"]) if (p.get(k)) params[k] = p.get(k);
    api("report", params, ctx.signal).then((r) => {
      if (mine !== seq) return;
      clear(body);
      render(body, r, params, p);
    }, (err) => {
      if (mine !== seq) return;
      clear(body);
      showError(err);
    });
  }

  function render(body, r, params, p) {
    // The traces behind a figure: the report's own scope plus the figure's filter.
    const scope = { since: params.since, until: params.until, session: params.session, project: params.project };
    const to = (filters, text) => h("a", { href: tracesHref({ ...scope, ...filters }) }, text);
    const keyLink = (filter) => (row) => (row.key === null || row.key === undefined
      ? h("span", { class: "muted" }, "(none)") : to({ [filter]: row.key }, String(row.key)));
    const o = r.overview || {};
    body.appendChild(h("p", { class: "muted subtitle" },
      `${rangeLabel(p)}${params.session ? " · session " + params.session : ""}${params.project ? " · project " + params.project : ""} · generated ${r.generated_at ? new Date(r.generated_at).toLocaleString() : ""}`));
    if (!o.spans) {
      body.appendChild(empty(Object.keys(params).length ? "No spans in this scope." : NO_SPANS));
      return;
    }
    body.appendChild(section("Overview", h("div", { class: "stats" },
      stat("spans", to({}, int(o.spans))),
      stat("traces", int(o.traces)),
      stat("sessions", int(o.sessions)),
      stat("errors", o.errors ? h("a", { class: "bad", href: tracesHref({ ...scope, status: "error" }) }, int(o.errors)) : "0"),
      stat("LLM calls", to({ operation_type: "llm_call" }, int(o.llm_calls))),
      stat("first", whenTitle(o.first)),
      stat("last", whenTitle(o.last)))));

    const sugg = r.suggestions || [];
    if (sugg.length) body.appendChild(section("Suggestions", h("div", { class: "suggestions" }, sugg.map((s, i) => suggestion(s, to, i < 3)))));

    const c = r.cost || {};
    const costCols = (label, filter) => [
      { label, render: keyLink(filter) },
      { label: "calls", num: true, render: (g) => int(g.calls) },
      { label: "input", num: true, render: (g) => money(g.input_cost_usd) },
      { label: "output", num: true, render: (g) => money(g.output_cost_usd) },
      { label: "cost", num: true, render: (g) => to({ [filter]: g.key, sort: "-cost_usd" }, money(g.cost_usd)) },
      { label: "share", num: true, render: (g) => shareBar(g.share) },
      { label: "unpriced", num: true, render: (g) => (g.unpriced_calls ? h("span", { class: "warn" }, int(g.unpriced_calls)) : "0") },
    ];
    body.appendChild(section("Cost",
      h("div", { class: "stats" },
        stat("total", money(c.total_usd)), stat("input", money(c.input_usd)), stat("output", money(c.output_usd)),
        stat("priced calls", `${int(c.priced_calls)} / ${int(c.llm_calls)}`),
        stat("unpriced", int(c.unpriced_calls), c.unpriced_calls ? "warn" : "")),
      h("div", { class: "two" },
        sub("By model", table(costCols("model", "model"), c.by_model || [])),
        sub("By operation", table(costCols("operation", "operation"), c.by_operation || [])),
        sub("By agent", table(costCols("agent", "agent"), c.by_agent || [])),
        sub("By provider", table(costCols("provider", "provider"), c.by_provider || []))),
      h("div", { class: "two" },
        sub("Top sessions", table([
          { label: "session", render: (s) => sessionLink(s.session_id) },
          { label: "traces", num: true, render: (s) => h("a", { href: tracesHref({ ...scope, session: s.session_id }) }, int(s.traces)) },
          { label: "calls", num: true, render: (s) => int(s.llm_calls) },
          { label: "errors", num: true, render: (s) => int(s.errors) },
          { label: "tokens", num: true, render: (s) => int(s.tokens) },
          { label: "cost", num: true, render: (s) => money(s.cost_usd) },
        ], c.top_sessions || [])),
        sub("Top traces", traceTable(c.top_traces || [])))));

    const l = r.latency || {};
    const latCols = (label, filter) => [
      { label, render: keyLink(filter) },
      { label: "count", num: true, render: (g) => int(g.count) },
      { label: "avg", num: true, render: (g) => ms(g.avg_ms) },
      { label: "p50", num: true, render: (g) => ms(g.p50_ms) },
      { label: "p95", num: true, render: (g) => ms(g.p95_ms) },
      { label: "p99", num: true, render: (g) => ms(g.p99_ms) },
      { label: "max", num: true, render: (g) => (g.key === null || g.key === undefined ? ms(g.max_ms) : to({ [filter]: g.key, sort: "-duration_ms" }, ms(g.max_ms))) },
    ];
    const ov = l.overall || {};
    const cp = l.critical_path || {};
    body.appendChild(section("Latency",
      h("div", { class: "stats" },
        stat("p50", ms(ov.p50_ms)), stat("p95", ms(ov.p95_ms)), stat("p99", ms(ov.p99_ms)), stat("max", ms(ov.max_ms)),
        stat("critical path", ms(cp.total_ms)), stat("root spans", int(cp.roots))),
      sub("Bottlenecks (time on the critical path)", table([
        { label: "operation", render: (b) => to({ operation: b.operation, sort: "-duration_ms" }, String(b.operation)) },
        { label: "on path", num: true, render: (b) => ms(b.critical_ms) },
        { label: "share", num: true, render: (b) => shareBar(b.share) },
        { label: "spans", num: true, render: (b) => int(b.spans_on_path) },
        { label: "avg", num: true, render: (b) => ms(b.avg_ms_on_path) },
        { label: "excess", num: true, render: (b) => ms(b.excess_ms) },
      ], l.bottlenecks || [])),
      h("div", { class: "two" },
        sub("By operation", table(latCols("operation", "operation"), l.by_operation || [])),
        sub("By model", table(latCols("model", "model"), l.by_model || [])),
        sub("By agent", table(latCols("agent", "agent"), l.by_agent || [])),
        sub("Slowest traces", traceTable(l.slowest_traces || [])))));

    const t = r.tokens || {};
    const tokCols = (label, filter) => [
      { label, render: keyLink(filter) },
      { label: "calls", num: true, render: (g) => int(g.calls) },
      { label: "input", num: true, render: (g) => int(g.input_tokens) },
      { label: "output", num: true, render: (g) => int(g.output_tokens) },
      { label: "in / call", num: true, render: (g) => int(g.input_per_call) },
      { label: "out / call", num: true, render: (g) => int(g.output_per_call) },
    ];
    body.appendChild(section("Tokens",
      h("div", { class: "stats" },
        stat("input", int(t.input_tokens)), stat("output", int(t.output_tokens)), stat("total", int(t.total_tokens)),
        stat("cache read", int(t.cache_read_tokens)), stat("reasoning", int(t.reasoning_tokens)),
        stat("in / call", int(t.input_per_call)), stat("out / call", int(t.output_per_call)),
        stat("LLM calls without counts", int(t.llm_calls_without_tokens), t.llm_calls_without_tokens ? "warn" : "")),
      h("div", { class: "two" },
        sub("By model", table(tokCols("model", "model"), t.by_model || [])),
        sub("By operation", table(tokCols("operation", "operation"), t.top_operations || [])),
        sub("By agent", table(tokCols("agent", "agent"), t.by_agent || [])))));

    const q = r.quality || {};
    body.appendChild(section("Quality",
      h("div", { class: "stats" },
        stat("success rate", pct(q.success_rate)),
        stat("error rate", pct(q.error_rate), q.error_rate > 0.05 ? "bad" : ""),
        stat("errors", q.errors ? h("a", { class: "bad", href: tracesHref({ ...scope, status: "error" }) }, int(q.errors)) : "0"),
        stat("extra attempts", int(q.extra_attempts)), stat("retries after an error", int(q.after_error))),
      h("div", { class: "two" },
        sub("Failing operations", table([
          { label: "operation", render: (g) => to({ operation: g.operation, status: "error" }, String(g.operation)) },
          { label: "spans", num: true, render: (g) => int(g.spans) },
          { label: "errors", num: true, render: (g) => to({ operation: g.operation, status: "error" }, int(g.errors)) },
          { label: "rate", num: true, render: (g) => pct(g.error_rate) },
          { label: "types", render: (g) => Object.entries(g.error_types || {}).map(([k, v]) => `${k} ×${v}`).join(", ") },
        ], q.by_operation || [])),
        sub("Error types", table([
          { label: "type", render: (g) => to({ status: "error", q: g.error_type }, String(g.error_type)) },
          { label: "count", num: true, render: (g) => int(g.count) },
          { label: "share", num: true, render: (g) => shareBar(Number(g.share)) },
        ], q.by_error_type || []))),
      sub("Error patterns", table([
        { label: "pattern", render: (g) => to({ status: "error", q: g.example || g.pattern }, String(g.pattern)) },
        { label: "type", render: (g) => g.error_type },
        { label: "count", num: true, render: (g) => int(g.count) },
        { label: "operations", render: (g) => (g.operations || []).flatMap((op, i) => [i ? ", " : "", to({ operation: op, status: "error" }, String(op))]) },
        { label: "last", render: (g) => whenTitle(g.last) },
      ], q.patterns || [])),
      (q.retries || []).length ? sub("Retries", table([
        { label: "operation", render: (g) => to({ operation: g.operation }, String(g.operation)) },
        { label: "spans", num: true, render: (g) => int(g.spans) },
        { label: "extra attempts", num: true, render: (g) => int(g.extra_attempts) },
        { label: "after an error", num: true, render: (g) => int(g.after_error) },
      ], q.retries)) : null));

    const sc = r.scores || {};
    if (sc.scores) {
      const labels = (g) => (g.labels || []).slice(0, 4).map((x) => `${x.label} ${pct(x.share)}`).join(", ");
      const mean = (v) => (v === null || v === undefined ? "—" : Number(v).toPrecision(3));
      // score names and labels are free text: they wrap, so a table fits its half of the page
      const scoreCols = (label, filter) => [
        { label: "score", cls: "wrap", render: (g) => String(g.name) },
        ...(label ? [{ label, cls: "nowrap", render: filter ? keyLink(filter) : (g) => (g.key === null || g.key === undefined ? h("span", { class: "muted" }, "(none)") : String(g.key)) }] : []),
        { label: "count", num: true, render: (g) => int(g.count) },
        { label: "mean", num: true, render: (g) => mean(g.mean) },
        { label: "median", num: true, render: (g) => mean(g.median) },
        { label: "labels", cls: "wrap", render: labels },
      ];
      const by = sc.by || {};
      const scoreSection = section("Scores",
        h("div", { class: "stats" },
          stat("scores", int(sc.scores)),
          stat("score names", int((sc.names || []).length)),
          stat("outside the scope", int(sc.unmatched), sc.unmatched ? "warn" : "")),
        sub("Distribution", table([
          { label: "score", cls: "wrap", render: (g) => String(g.name) },
          { label: "count", num: true, render: (g) => int(g.count) },
          { label: "numeric", num: true, render: (g) => int(g.numeric) },
          { label: "mean", num: true, render: (g) => mean(g.mean) },
          { label: "median", num: true, render: (g) => mean(g.median) },
          { label: "min", num: true, render: (g) => mean(g.min) },
          { label: "max", num: true, render: (g) => mean(g.max) },
          { label: "labels", cls: "wrap", render: labels },
        ], sc.names || [])),
        h("div", { class: "two" },
          sub("By model", table(scoreCols("model", "model"), by.model || [])),
          sub("By operation", table(scoreCols("operation", "operation"), by.operation || [])),
          sub("By agent", table(scoreCols("agent", "agent"), by.agent || [])),
          sub("By prompt hash", table(scoreCols("prompt hash", null), by.prompt_hash || []))));
      body.appendChild(scoreSection);
      const spts = (sc.trend || {}).points || [];
      const xs = [...new Set(spts.map((pt) => new Date(pt.start).getTime() / 1000))].sort((a, b) => a - b);
      if (xs.length > 1) {
        const names = [...new Set(spts.map((pt) => pt.name))];
        const at = new Map(spts.map((pt) => [`${pt.name}\u0000${new Date(pt.start).getTime() / 1000}`, pt]));
        const series = names.map((n) => ({ label: String(n), values: xs.map((x) => { const pt = at.get(`${n}\u0000${x}`); return pt && pt.mean !== null ? pt.mean : null; }) }));
        const chart = timeChart({ title: `Mean score per ${(sc.trend || {}).bucket || "bucket"}`, x: xs, step: STEP[(sc.trend || {}).bucket], fmt: mean, series });
        charts.push(chart);
        scoreSection.appendChild(h("div", { class: "charts" }, chart.el));
      }
    }

    const tr = r.trends || {};
    const pts = tr.points || [];
    if (pts.length) {
      const x = pts.map((pt) => new Date(pt.start).getTime() / 1000);
      const step = STEP[tr.bucket];
      charts = [
        ...charts,
        timeChart({ title: `Cost per ${tr.bucket || "bucket"}`, x, step, bars: true, fmt: money, series: [{ label: "cost", values: pts.map((pt) => pt.cost_usd) }] }),
        timeChart({ title: "Latency", x, step, fmt: ms, series: ["p50", "p95", "p99"].map((k) => ({ label: k, values: pts.map((pt) => pt[k + "_ms"]) })) }),
        timeChart({ title: "Error rate", x, step, fmt: pct, series: [{ label: "error rate", values: pts.map((pt) => pt.error_rate), color: "#dc2626" }] }),
      ];
      body.appendChild(section("Trends", h("div", { class: "charts three" }, charts.map((ch) => ch.el))));
    }
  }

  load();
  return destroy;
}

function sub(title, content) {
  return h("div", { class: "sub" }, h("h3", null, title), content);
}

function shareBar(share) {
  if (share === null || share === undefined || Number.isNaN(share)) return "—";
  const fill = h("span", { class: "share-fill" });
  fill.style.width = `${Math.max(0, Math.min(100, share * 100))}%`;
  return h("span", { class: "share" }, h("span", { class: "share-track" }, fill), pct(share));
}

function traceTable(rows) {
  return table([
    { label: "trace", render: (t) => traceLink(t.trace_id) },
    { label: "root", render: (t) => t.root_operation },
    { label: "session", render: (t) => sessionLink(t.session_id) },
    { label: "spans", num: true, render: (t) => int(t.spans) },
    { label: "errors", num: true, render: (t) => (t.errors ? h("span", { class: "bad" }, int(t.errors)) : "0") },
    { label: "duration", num: true, render: (t) => ms(t.duration_ms) },
    { label: "cost", num: true, render: (t) => money(t.cost_usd) },
  ], rows);
}

const LINKED = { model: "model", candidate: null, operation: "operation" };

function suggestion(s, to, open) {
  const figures = h("table", { class: "kv small" });
  for (const [k, v] of Object.entries(s.figures || {})) {
    let value;
    if (LINKED[k] && v !== null && v !== undefined) value = to({ [LINKED[k]]: v }, String(v));
    else if (k.endsWith("_usd")) value = money(v);
    else if (k.endsWith("_ms")) value = ms(v);
    else if (k === "share" || k.endsWith("_rate")) value = pct(v);
    else if (v !== null && typeof v === "object") value = h("code", null, JSON.stringify(v));
    else value = v === null || v === undefined ? "—" : String(v);
    figures.appendChild(h("tr", null, h("th", null, k.replaceAll("_", " ")), h("td", null, value)));
  }
  const saving = [];
  if (s.saving_usd) saving.push(h("span", { class: "badge ok" }, `save ${money(s.saving_usd)}`));
  if (s.saving_ms) saving.push(h("span", { class: "badge ok" }, `save ${ms(s.saving_ms)}`));
  return h("details", { class: "suggestion", open },
    h("summary", null, h("span", { class: "badge" }, String(s.kind ?? "")), " ", h("strong", null, String(s.title ?? "")), " ", saving),
    h("p", null, String(s.detail ?? "")), figures);
}
