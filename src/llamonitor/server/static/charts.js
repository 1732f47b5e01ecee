// Charts: a thin wrapper around the vendored uPlot (static/vendor, MIT).
// uPlot writes series labels with textContent, so model names stay text.

import { empty, h } from "./dom.js";

const PALETTE = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c"];

export function color(i) {
  return PALETTE[i % PALETTE.length];
}

/**
 * A time chart in a card.
 *   x: seconds since the epoch; series: [{label, values, color?, dash?}]
 *   fmt: value -> text (axis and legend); bars: draw bars instead of lines.
 * Returns {el, destroy}.
 */
export function timeChart({ title, x, series, fmt = String, bars = false, height = 200 }) {
  const holder = h("div", { class: "chart" });
  const el = h("figure", { class: "card chart-card" }, h("figcaption", null, title), holder);
  if (!x.length || !series.length || typeof window.uPlot !== "function") {
    holder.appendChild(empty(typeof window.uPlot !== "function" ? "charts unavailable" : "no data in this range"));
    return { el, destroy() {} };
  }
  const U = window.uPlot;
  const single = x.length === 1;
  const paths = bars || single ? U.paths.bars({ size: [0.6, 64] }) : undefined;
  const opts = {
    width: 400,
    height,
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
    axes: [
      { stroke: "#555", grid: { stroke: "#eee" }, ticks: { stroke: "#ddd" } },
      { stroke: "#555", grid: { stroke: "#eee" }, ticks: { stroke: "#ddd" }, size: 70, values: (u, vals) => vals.map(fmt) },
    ],
    series: [
      { label: "time", value: (u, v) => (v == null ? "—" : new Date(v * 1000).toLocaleString()) },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: s.color || color(i),
        fill: bars || single ? (s.color || color(i)) + "99" : undefined,
        width: 1.5,
        dash: s.dash,
        paths,
        points: { show: x.length < 60, size: 5 },
        value: (u, v) => (v == null ? "—" : fmt(v)),
        spanGaps: false,
      })),
    ],
  };
  if (single) opts.scales.x = { time: true, range: (u, min, max) => [min - 1800, max + 1800] };
  const data = [x, ...series.map((s) => s.values)];
  let plot = null;
  const ro = new ResizeObserver(() => {
    const w = Math.max(200, Math.floor(holder.clientWidth));
    if (!plot) plot = new U(opts, data, holder);
    if (plot.width !== w) plot.setSize({ width: w, height });
  });
  ro.observe(holder);
  return {
    el,
    destroy() {
      ro.disconnect();
      if (plot) plot.destroy();
    },
  };
}

/** Rows of the aggregates' series, by time and group: {x, groups, value(group, t)}. */
export function pivot(rows, key = "group") {
  const times = [...new Set(rows.map((r) => r.t))].sort();
  const index = new Map(times.map((t, i) => [t, i]));
  const groups = [];
  const seen = new Map();
  for (const r of rows) {
    const g = r[key] === null || r[key] === undefined ? "(none)" : String(r[key]);
    if (!seen.has(g)) {
      seen.set(g, []);
      groups.push(g);
    }
    seen.get(g).push(r);
  }
  return {
    x: times.map((t) => new Date(t).getTime() / 1000),
    groups,
    /** [values per time] of field for one group (null where it has no bucket) */
    column(group, field) {
      const out = new Array(times.length).fill(null);
      for (const r of seen.get(group) || []) out[index.get(r.t)] = r[field];
      return out;
    },
    /** [sum over groups per time] of field */
    sum(field) {
      const out = new Array(times.length).fill(0);
      for (const r of rows) out[index.get(r.t)] += Number(r[field] || 0);
      return out;
    },
  };
}
