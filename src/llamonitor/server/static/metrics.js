// Metrics: /series lists the store's metrics (GET /api/metrics); /series/<name>
// draws one as series (GET /api/metrics/<name>/series) over the picked range,
// with a step, a field (increase/rate, avg/min/max/last, p50..p99...) and an
// optional grouping by labels. Every text goes through h() (textContent).

import { api, showError } from "./api.js";
import { timeChart } from "./charts.js";
import { clear, empty, h, int, rangePicker, table, when } from "./dom.js";

const STEPS = ["", "10s", "1m", "5m", "1h"];

function num(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.001 || a >= 1e9)) return Number(v).toExponential(3);
  return Number(v).toLocaleString(undefined, { maximumFractionDigits: 4 });
}

function labelText(labels) {
  const parts = Object.keys(labels || {}).sort().map((k) => `${k}=${labels[k]}`);
  return parts.length ? parts.join(", ") : "(all)";
}

export function mountList(root, ctx) {
  root.appendChild(h("div", { class: "toolbar" }, h("h1", null, "Metrics")));
  const body = h("div", null, h("p", { class: "loading" }, "Loading…"));
  root.appendChild(body);
  api("metrics", {}, ctx.signal).then((res) => {
    clear(body);
    const rows = (res && res.metrics) || [];
    if (!rows.length) {
      body.appendChild(empty("No metric points in this store yet.",
        "Instruments of llamonitor.metrics write them every metrics_interval_seconds."));
      return;
    }
    body.appendChild(h("section", { class: "card" }, table([
      { label: "metric", render: (r) => h("a", { href: "/series/" + encodeURIComponent(r.name), class: "metric-link" }, String(r.name)) },
      { label: "kind", render: (r) => String(r.kind) },
      { label: "series", num: true, render: (r) => int(r.series) },
      { label: "points", num: true, render: (r) => int(r.points) },
      { label: "resolutions", render: (r) => (r.resolutions || []).map((x) => (x ? x + "s" : "raw")).join(", ") },
      { label: "sources", render: (r) => (r.sources || []).join(", ") },
      { label: "last", render: (r) => (r.last ? when(r.last) : "—") },
    ], rows)));
  }, (err) => {
    clear(body);
    showError(err);
  });
}

export function mountOne(root, ctx, name) {
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
    const set = (changes) => {
      ctx.changeParams(changes);
      draw();
    };
    const step = STEPS.includes(p.get("step") || "") ? p.get("step") || "" : "";
    const stepSelect = h("select", { name: "step", "aria-label": "step", onchange: (e) => set({ step: e.target.value }) },
      STEPS.map((s) => h("option", { value: s, selected: s === step }, s || "auto")));
    const byInput = h("input", { type: "text", name: "by", placeholder: "labels, e.g. model", value: p.get("by") || "",
      "aria-label": "group by labels", onchange: (e) => set({ by: e.target.value.trim() }) });
    const fieldHolder = h("span");
    root.appendChild(h("div", { class: "toolbar" },
      h("h1", null, h("a", { href: "/series" }, "Metrics"), " / ", String(name)),
      rangePicker(p, (since, until) => set({ since, until })),
      h("label", { class: "inline" }, "step ", stepSelect),
      h("label", { class: "inline" }, "by ", byInput),
      fieldHolder));
    const body = h("div", null, h("p", { class: "loading" }, "Loading…"));
    root.appendChild(body);
    const params = new URLSearchParams();
    for (const [k, v] of [["start", p.get("since")], ["end", p.get("until")], ["step", step], ["field", p.get("field")]]) {
      if (v) params.set(k, v);
    }
    if (p.get("by") !== null) params.set("by", p.get("by"));
    for (const l of p.getAll("label")) params.append("label", l);
    api("metrics/" + encodeURIComponent(name) + "/series", params, ctx.signal).then((res) => {
      if (mine !== seq) return;
      clear(body);
      if (!res || !res.kind || !(res.series || []).length) {
        body.appendChild(empty(`No points of ${name} in this range.`, "Pick a longer range."));
        return;
      }
      const fieldSelect = h("select", { name: "field", "aria-label": "field", onchange: (e) => set({ field: e.target.value }) },
        (res.fields || []).map((f) => h("option", { value: f, selected: f === res.field }, f)));
      fieldHolder.appendChild(h("label", { class: "inline" }, "field ", fieldSelect));
      const times = [...new Set(res.series.flatMap((s) => s.points.map((pt) => pt[0])))].sort();
      const index = new Map(times.map((t, i) => [t, i]));
      const x = times.map((t) => new Date(t).getTime() / 1000);
      const series = res.series.slice(0, 20).map((s) => {
        const values = new Array(times.length).fill(null);
        for (const [t, v] of s.points) values[index.get(t)] = v;
        return { label: labelText(s.labels), values };
      });
      body.appendChild(h("p", { class: "muted subtitle" },
        `${res.kind} · ${res.field} per ${res.step}s · ${res.resolution ? res.resolution + "s rollups" : "raw points"} · ${res.series.length} series`));
      charts = [timeChart({ title: `${name} — ${res.field}`, x, step: res.step, fmt: num, series })];
      body.appendChild(h("div", { class: "charts" }, charts.map((c) => c.el)));
      body.appendChild(h("section", { class: "card" }, h("h2", null, "Series"), table([
        { label: "labels", render: (s) => labelText(s.labels) },
        { label: "points", num: true, render: (s) => int(s.points.length) },
        { label: "last", num: true, render: (s) => num(s.points.length ? s.points[s.points.length - 1][1] : null) },
        { label: "max", num: true, render: (s) => num(Math.max(...s.points.map((pt) => (pt[1] === null ? -Infinity : pt[1])))) },
      ], res.series)));
    }, (err) => {
      if (mine !== seq) return;
      clear(body);
      showError(err);
    });
  };
  draw();
  return destroy;
}
