// Dashboard: /api/aggregates over the picked range: totals, charts (spend by
// group, tokens in/out, latency percentiles, error rate) and the most expensive
// and slowest operations (each a link to the traces behind it).

import { api, showError } from "./api.js";
import { STEP, pivot, timeChart } from "./charts.js";
import { NO_SPANS, clear, empty, h, int, money, ms, pct, rangeLabel, rangePicker, stat, table, tracesHref } from "./dom.js";

const GROUP_BY = ["model", "provider", "agent", "operation", "project", "operation_type"];
/** group_by -> the traces filter of the same thing */
const FILTER_OF = { model: "model", provider: "provider", agent: "agent", operation: "operation", project: "project", operation_type: "operation_type" };
const LATENCY = ["p50", "p95", "p99"];

export function mount(root, ctx) {
  let charts = [];
  let seq = 0;
  const destroy = () => {
    for (const c of charts) c.destroy();
    charts = [];
  };
  const draw = () => {
    destroy();
    clear(root);
    const mine = ++seq;
    const p = ctx.params;
    const groupBy = GROUP_BY.includes(p.get("group_by")) ? p.get("group_by") : "model";
    const lat = LATENCY.includes(p.get("latency")) ? p.get("latency") : "p95";

    const set = (changes) => {
      ctx.changeParams(changes);
      draw();
    };

    const groupSelect = h("select", { name: "group_by", "aria-label": "group by", onchange: (e) => set({ group_by: e.target.value === "model" ? "" : e.target.value }) },
      GROUP_BY.map((g) => h("option", { value: g, selected: g === groupBy }, g)));
    root.appendChild(h("div", { class: "toolbar" },
      h("h1", null, "Dashboard"),
      rangePicker(p, (since, until) => set({ since, until })),
      h("label", { class: "inline" }, "group by ", groupSelect)));

    const body = h("div", { class: "dash" }, h("p", { class: "loading" }, "Loading…"));
    root.appendChild(body);

    const params = { since: p.get("since"), until: p.get("until"), group_by: groupBy, bucket: p.get("bucket") };
    api("aggregates", params, ctx.signal).then((agg) => {
      if (mine !== seq) return;
      clear(body);
      const t = agg.totals || {};
      const filtered = p.get("since") || p.get("until");
      body.appendChild(h("p", { class: "muted subtitle" }, `${rangeLabel(p)} · per ${agg.bucket || "bucket"} · by ${groupBy}`));
      if (!t.spans) {
        body.appendChild(empty(filtered ? "No spans in this range." : NO_SPANS, filtered ? "Pick a longer range, or all." : null));
        return;
      }
      const range = { since: p.get("since"), until: p.get("until") };
      body.appendChild(h("div", { class: "stats" },
        stat("spans", h("a", { href: tracesHref(range) }, int(t.spans))),
        stat("errors", h("a", { href: tracesHref({ ...range, status: "error" }) }, int(t.errors)), t.errors ? "bad" : ""),
        stat("error rate", pct(t.error_rate), t.error_rate > 0.05 ? "bad" : ""),
        stat("spend", money(t.cost_usd)),
        stat("tokens in", int(t.input_tokens)),
        stat("tokens out", int(t.output_tokens)),
        stat("p50", ms(t.p50_ms)),
        stat("p95", ms(t.p95_ms)),
        stat("p99", ms(t.p99_ms))));

      const pv = pivot(agg.series || []);
      const errRate = pv.sum("errors").map((e, i, arr) => {
        const spans = pv.sum("spans")[i];
        return spans ? e / spans : null;
      });
      const latencyToggle = h("span", { class: "segs small" }, LATENCY.map((l) => h("button", {
        type: "button", class: "seg" + (l === lat ? " active" : ""), onclick: () => set({ latency: l === "p95" ? "" : l }),
      }, l)));
      charts = [
        timeChart({ title: `Spend by ${groupBy}`, x: pv.x, step: STEP[agg.bucket], bars: true, stacked: true, fmt: money,
          series: pv.groups.map((g) => ({ label: g, values: pv.column(g, "cost_usd") })) }),
        timeChart({ title: "Tokens in / out", x: pv.x, step: STEP[agg.bucket], bars: true, stacked: true, fmt: int,
          series: [{ label: "input", values: pv.sum("input_tokens") }, { label: "output", values: pv.sum("output_tokens") }] }),
        timeChart({ title: `Latency ${lat} by ${groupBy}`, x: pv.x, step: STEP[agg.bucket], fmt: ms,
          series: pv.groups.map((g) => ({ label: g, values: pv.column(g, lat + "_ms") })) }),
        timeChart({ title: "Error rate", x: pv.x, step: STEP[agg.bucket], fmt: pct, series: [{ label: "error rate", values: errRate, color: "#dc2626" }] }),
      ];
      charts[2].el.querySelector("figcaption").appendChild(latencyToggle);
      body.appendChild(h("div", { class: "charts" }, charts.map((c) => c.el)));

      const filter = FILTER_OF[groupBy];
      const groupLink = (key) => (key === null || key === undefined ? h("span", { class: "muted" }, "(none)")
        : h("a", { href: tracesHref({ ...range, [filter]: key }) }, String(key)));
      body.appendChild(h("section", { class: "card" }, h("h2", null, `By ${groupBy}`),
        table([
          { label: groupBy, render: (g) => groupLink(g.key) },
          { label: "spans", num: true, render: (g) => int(g.spans) },
          { label: "errors", num: true, render: (g) => (g.errors ? h("a", { href: tracesHref({ ...range, [filter]: g.key, status: "error" }), class: "bad" }, int(g.errors)) : "0") },
          { label: "error rate", num: true, render: (g) => pct(g.error_rate) },
          { label: "spend", num: true, render: (g) => money(g.cost_usd) },
          { label: "tokens in", num: true, render: (g) => int(g.input_tokens) },
          { label: "tokens out", num: true, render: (g) => int(g.output_tokens) },
          { label: "p50", num: true, render: (g) => ms(g.p50_ms) },
          { label: "p95", num: true, render: (g) => ms(g.p95_ms) },
          { label: "p99", num: true, render: (g) => ms(g.p99_ms) },
        ], agg.groups || [])));

      const opLink = (name, extra) => h("a", { href: tracesHref({ ...range, operation: name, ...extra }) }, String(name));
      body.appendChild(h("div", { class: "two" },
        h("section", { class: "card" }, h("h2", null, "Most expensive operations"),
          (agg.top_cost || []).length ? table([
            { label: "operation", render: (r) => opLink(r.operation_name, { sort: "-cost_usd" }) },
            { label: "spans", num: true, render: (r) => int(r.spans) },
            { label: "spend", num: true, render: (r) => money(r.cost_usd) },
          ], agg.top_cost) : empty("No priced spans.")),
        h("section", { class: "card" }, h("h2", null, "Slowest operations"),
          table([
            { label: "operation", render: (r) => opLink(r.operation_name, { sort: "-duration_ms" }) },
            { label: "spans", num: true, render: (r) => int(r.spans) },
            { label: "p95", num: true, render: (r) => ms(r.p95_ms) },
            { label: "max", num: true, render: (r) => ms(r.max_ms) },
          ], agg.top_slow || []))));
    }, (err) => {
      if (mine !== seq) return;
      clear(body);
      showError(err);
    });
  };
  draw();
  return destroy;
}
