// Agents: the coordination graph of a session or a time range
// (GET /api/agents/graph), drawn as an SVG built with DOM calls (text only
// through textContent), then the agents, handoffs, loops and the longest chain
// as tables. /agents?session_id=<id> or /agents?since=1d.

import { api, showError } from "./api.js";
import {
  clear, debounce, empty, h, int, money, ms, pct, rangePicker, section, sessionLink, stat, table,
  traceHref,
} from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 860;
const LABEL_FONT_PX = 11;
const LABEL_CHAR_PX = 6.8; // a generous mean glyph width at 11px: boxes are not measured (the SVG is drawn detached)
const LABEL_PAD_PX = 3;

/** An SVG element; attrs are set with setAttribute, text with textContent. */
function s(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = String(text);
  return el;
}

function heightFor(n) {
  return n <= 3 ? 400 : n <= 5 ? 520 : 600;
}

/** Agents on an ellipse (the first at the top): wide, so labels fit between them. */
function layout(nodes, height) {
  const n = nodes.length;
  const cx = WIDTH / 2;
  const cy = height / 2;
  const rx = n > 1 ? WIDTH / 2 - 150 : 0;
  const ry = n > 1 ? height / 2 - 105 : 0;
  const at = new Map();
  nodes.forEach((node, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / n;
    at.set(node.agent, { x: cx + rx * Math.cos(a), y: cy + ry * Math.sin(a), angle: a });
  });
  return at;
}

function radius(node, maxTime) {
  return 14 + 22 * Math.sqrt(maxTime > 0 ? node.time_ms / maxTime : 0);
}

function quad(p0, p1, p2, t) {
  const u = 1 - t;
  return { x: u * u * p0.x + 2 * u * t * p1.x + t * t * p2.x, y: u * u * p0.y + 2 * u * t * p1.y + t * t * p2.y };
}

function cubic(p0, p1, p2, p3, t) {
  const u = 1 - t;
  const a = u * u * u;
  const b = 3 * u * u * t;
  const c = 3 * u * t * t;
  const d = t * t * t;
  return { x: a * p0.x + b * p1.x + c * p2.x + d * p3.x, y: a * p0.y + b * p1.y + c * p2.y + d * p3.y };
}

function overlapArea(a, b) {
  const w = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
  const hh = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
  return w > 0 && hh > 0 ? w * hh : 0;
}

/**
 * Where each edge's label goes: the point along its curve (middle first, then
 * further out both ways, then a little to either side of the curve) whose box
 * covers no label placed before it, no agent's circle and no agent's name; else
 * the one that covers least. Heavier edges are placed first (they keep the middle).
 */
function placeLabels(items, obstacles, height) {
  const placed = [];
  const order = [...items].sort((a, b) => b.weight - a.weight);
  const ts = [0.5, 0.42, 0.58, 0.34, 0.66, 0.27, 0.73, 0.2, 0.8];
  const sides = [0, 1, -1, 2, -2];
  for (const it of order) {
    const w = it.text.length * LABEL_CHAR_PX + 2 * LABEL_PAD_PX;
    const hgt = LABEL_FONT_PX + 2 * LABEL_PAD_PX;
    let best = null;
    for (const side of sides) {
      for (const t of ts) {
        const p = it.at(t);
        const q = it.at(Math.min(1, t + 0.01));
        const len = Math.hypot(q.x - p.x, q.y - p.y) || 1;
        const nx = -(q.y - p.y) / len;
        const ny = (q.x - p.x) / len;
        const x = p.x + nx * side * (hgt - 1);
        const y = p.y + ny * side * (hgt - 1);
        const box = { x: x - w / 2, y: y - hgt / 2, w, h: hgt };
        let cost = 0;
        for (const o of obstacles) cost += overlapArea(box, o) * 4;
        for (const o of placed) cost += overlapArea(box, o);
        if (box.x < 0 || box.y < 0 || box.x + w > WIDTH || box.y + hgt > height) cost += 1e6;
        cost += Math.abs(side) * 0.5 + Math.abs(t - 0.5); // prefer the middle, on the curve
        if (!best || cost < best.cost) best = { cost, x, y, box };
        if (cost < 1) break;
      }
      if (best && best.cost < 2) break;
    }
    placed.push(best.box);
    it.x = best.x;
    it.y = best.y;
    it.box = best.box;
  }
}

/** The graph as an <svg>: circles sized by time (red ring: failures), arrows by count. */
export function drawGraph(graph) {
  const nodes = graph.nodes || [];
  const edges = graph.edges || [];
  const height = heightFor(nodes.length);
  const svg = s("svg", { viewBox: `0 0 ${WIDTH} ${height}`, class: "agent-graph", role: "img",
    "aria-label": "coordination graph of the agents" });
  const defs = s("defs");
  for (const kind of ["call", "sequence"]) {
    const marker = s("marker", { id: "arrow-" + kind, viewBox: "0 0 10 10", refX: 9, refY: 5,
      markerWidth: 10, markerHeight: 10, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" });
    marker.appendChild(s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow " + kind }));
    defs.appendChild(marker);
  }
  svg.appendChild(defs);
  const at = layout(nodes, height);
  const cx = WIDTH / 2;
  const cy = height / 2;
  const maxTime = Math.max(0, ...nodes.map((n) => n.time_ms));
  const maxCount = Math.max(1, ...edges.map((e) => e.count));
  const rOf = new Map(nodes.map((n) => [n.agent, radius(n, maxTime)]));
  const pairs = new Set(edges.map((e) => e.source + "\u0000" + e.target));
  // What labels must not cover: each circle and each name under it.
  const obstacles = [];
  for (const n of nodes) {
    const p = at.get(n.agent);
    const r = rOf.get(n.agent) + 2;
    obstacles.push({ x: p.x - r, y: p.y - r, w: 2 * r, h: 2 * r });
    const w = n.agent.length * 7.8 + 4;
    obstacles.push({ x: p.x - w / 2, y: p.y + r + 2, w, h: 18 });
  }
  const edgeLayer = s("g", { class: "edges" });
  const labelLayer = s("g", { class: "edge-labels" });
  const labels = [];
  for (const e of edges) {
    const a = at.get(e.source);
    const b = at.get(e.target);
    if (!a || !b) continue;
    const g = s("g", { class: "edge " + e.kind, "data-source": e.source, "data-target": e.target, "data-kind": e.kind });
    const width = 1.5 + 4 * (e.count / maxCount);
    let d;
    let along;
    if (e.source === e.target) {
      // A loop on the outer side of its agent (beside it for one at the bottom, over its name).
      const r = rOf.get(e.source);
      let angle = Math.atan2(a.y - cy, a.x - cx);
      if (nodes.length === 1) angle = -Math.PI / 2;
      if (Math.sin(angle) > 0.5) angle = Math.cos(angle) >= 0 ? 0.15 : Math.PI - 0.15;
      const reach = 58 + (e.kind === "call" ? 0 : 16);
      const spread = 0.45;
      const p0 = { x: a.x + r * Math.cos(angle - spread), y: a.y + r * Math.sin(angle - spread) };
      const p3 = { x: a.x + r * Math.cos(angle + spread), y: a.y + r * Math.sin(angle + spread) };
      const c1 = { x: a.x + (r + reach) * Math.cos(angle - 0.9), y: a.y + (r + reach) * Math.sin(angle - 0.9) };
      const c2 = { x: a.x + (r + reach) * Math.cos(angle + 0.9), y: a.y + (r + reach) * Math.sin(angle + 0.9) };
      d = `M${p0.x.toFixed(1)},${p0.y.toFixed(1)} C${c1.x.toFixed(1)},${c1.y.toFixed(1)} ${c2.x.toFixed(1)},${c2.y.toFixed(1)} ${p3.x.toFixed(1)},${p3.y.toFixed(1)}`;
      along = (t) => cubic(p0, c1, c2, p3, t);
    } else {
      const dx = b.x - a.x;
      const dy = b.y - a.y;
      const len = Math.hypot(dx, dy) || 1;
      const ux = dx / len;
      const uy = dy / len;
      // Bend both ways of a pair apart, and the two kinds of one way apart.
      const both = pairs.has(e.target + "\u0000" + e.source);
      const bend = (both ? 30 : 0) + (e.kind === "sequence" ? 26 : 0);
      const p0 = { x: a.x + ux * rOf.get(e.source), y: a.y + uy * rOf.get(e.source) };
      const p2 = { x: b.x - ux * (rOf.get(e.target) + 2), y: b.y - uy * (rOf.get(e.target) + 2) };
      const m = { x: (p0.x + p2.x) / 2 - uy * bend * 2, y: (p0.y + p2.y) / 2 + ux * bend * 2 };
      d = `M${p0.x.toFixed(1)},${p0.y.toFixed(1)} Q${m.x.toFixed(1)},${m.y.toFixed(1)} ${p2.x.toFixed(1)},${p2.y.toFixed(1)}`;
      along = (t) => quad(p0, m, p2, t);
    }
    g.appendChild(s("path", { d, class: "edge-line", "stroke-width": width.toFixed(1), "marker-end": `url(#arrow-${e.kind})` }));
    const text = `${int(e.count)}× ${ms(e.latency_ms)}`;
    const title = `${e.source} → ${e.target} (${e.kind}): ${e.count} handoffs, ` +
      `latency ${ms(e.latency_ms)}, success ${pct(e.success_rate)}`;
    g.appendChild(s("title", {}, title));
    edgeLayer.appendChild(g);
    labels.push({ edge: e, text, title, at: along, weight: e.count + (e.source === e.target ? 1e6 : 0) });
  }
  placeLabels(labels, obstacles, height);
  for (const l of labels) {
    // Over the edges and the agents, on a white box: readable where lines cross.
    const lg = s("g", { class: "edge-label-box " + l.edge.kind, "data-source": l.edge.source, "data-target": l.edge.target });
    lg.appendChild(s("rect", { x: l.box.x.toFixed(1), y: l.box.y.toFixed(1), width: l.box.w.toFixed(1), height: l.box.h.toFixed(1), rx: 3 }));
    lg.appendChild(s("text", { x: l.x.toFixed(1), y: (l.y + LABEL_FONT_PX / 2 - 1.5).toFixed(1), class: "edge-label", "text-anchor": "middle" }, l.text));
    lg.appendChild(s("title", {}, l.title));
    labelLayer.appendChild(lg);
  }
  svg.appendChild(edgeLayer);
  const nodeLayer = s("g", { class: "nodes" });
  for (const n of nodes) {
    const p = at.get(n.agent);
    const g = s("g", { class: "node" + (n.failed ? " failed" : ""), "data-agent": n.agent });
    g.appendChild(s("circle", { cx: p.x.toFixed(1), cy: p.y.toFixed(1), r: rOf.get(n.agent).toFixed(1) }));
    g.appendChild(s("text", { x: p.x.toFixed(1), y: (p.y + rOf.get(n.agent) + 16).toFixed(1), class: "node-label", "text-anchor": "middle" }, n.agent));
    g.appendChild(s("text", { x: p.x.toFixed(1), y: (p.y + 4).toFixed(1), class: "node-count", "text-anchor": "middle" }, int(n.invocations)));
    g.appendChild(s("title", {}, `${n.agent}: ${n.invocations} invocations, ${ms(n.time_ms)}, ` +
      `${money(n.cost_usd)}, ${n.failed} failed, ${pct(n.critical_share)} of the critical path`));
    nodeLayer.appendChild(g);
  }
  svg.appendChild(nodeLayer);
  svg.appendChild(labelLayer);
  return svg;
}

function tables(graph) {
  const out = [];
  out.push(section("Agents", table([
    { label: "agent", render: (n) => h("span", { class: "agent-name" }, n.agent) },
    { label: "invocations", num: true, render: (n) => int(n.invocations) },
    { label: "time", num: true, render: (n) => ms(n.time_ms) },
    { label: "avg", num: true, render: (n) => ms(n.avg_ms) },
    { label: "critical path", num: true, render: (n) => pct(n.critical_share) },
    { label: "cost", num: true, render: (n) => money(n.cost_usd) },
    { label: "tokens in", num: true, render: (n) => int(n.input_tokens) },
    { label: "failed", num: true, render: (n) => (n.failed ? h("span", { class: "bad" }, int(n.failed)) : "0") },
    { label: "handoffs", num: true, render: (n) => int(n.handoffs_out) },
    { label: "came back", num: true, render: (n) => pct(n.return_rate) },
  ], graph.nodes, { cls: "agents-table" })));
  out.push(section("Handoffs", table([
    { label: "from", render: (e) => e.source },
    { label: "to", render: (e) => e.target },
    { label: "kind", render: (e) => e.kind },
    { label: "count", num: true, render: (e) => int(e.count) },
    { label: "latency", num: true, render: (e) => ms(e.latency_ms) },
    { label: "p50", num: true, render: (e) => ms(e.p50_latency_ms) },
    { label: "success", num: true, render: (e) => pct(e.success_rate) },
    { label: "context tokens", num: true, render: (e) => (e.context_tokens === null ? null : int(Math.round(e.context_tokens))) },
    { label: "text chars", num: true, render: (e) => (e.text_chars === null ? null : int(Math.round(e.text_chars))) },
  ], graph.edges, { cls: "handoffs-table" })));
  if ((graph.loops || []).length) {
    out.push(section("Loops", table([
      { label: "path", render: (l) => l.path.join(" → ") },
      { label: "count", num: true, render: (l) => int(l.count) },
      { label: "traces", num: true, render: (l) => int(l.traces) },
    ], graph.loops, { cls: "loops-table" })));
  }
  const chain = graph.longest_chain || {};
  if ((chain.steps || []).length) {
    out.push(section(`Longest chain: ${chain.handoffs} handoffs, ${ms(chain.duration_ms)}`,
      h("p", { class: "muted" }, "trace ", h("a", { href: traceHref(chain.trace_id) }, chain.trace_id),
        chain.context_growth ? ` · context grew ${chain.context_growth.toFixed(1)} times` : ""),
      table([
        { label: "#", num: true, render: (st) => String(st.i + 1) },
        { label: "agent", render: (st) => st.agent },
        { label: "via", render: (st) => st.kind || "start" },
        { label: "at", num: true, render: (st) => "+" + ms(st.offset_ms) },
        { label: "took", num: true, render: (st) => ms(st.duration_ms) },
        { label: "context tokens", num: true, render: (st) => (st.context_tokens === null ? null : int(st.context_tokens)) },
        { label: "text handed", num: true, render: (st) => (st.text_chars === null ? null : int(st.text_chars)) },
        { label: "failed", render: (st) => (st.failed ? h("span", { class: "bad" }, "yes") : "") },
      ], chain.steps.map((st, i) => ({ ...st, i })), { cls: "chain-table" })));
  }
  return out;
}

export function mount(root, ctx) {
  let seq = 0;
  const body = h("div");
  const load = () => {
    const mine = ++seq;
    clear(body);
    body.appendChild(h("p", { class: "loading" }, "Loading…"));
    const params = {};
    for (const k of ["session_id", "since", "until", "project"]) if (ctx.params.get(k)) params[k] = ctx.params.get(k);
    api("agents/graph", params, ctx.signal).then((graph) => {
      if (mine !== seq) return;
      clear(body);
      if (!graph.nodes || !graph.nodes.length) {
        body.appendChild(empty(graph.spans ? "No span in this scope carries an agent name." : "No spans in this scope.",
          "Agents are spans with agent_name: @monitor_llm(agent_name=\"planner\")."));
        return;
      }
      body.appendChild(h("div", { class: "stats" },
        stat("agents", int(graph.nodes.length)), stat("invocations", int(graph.invocations)),
        stat("handoffs", int(graph.handoffs)), stat("traces", int(graph.traces)),
        stat("spans", int(graph.spans)), stat("critical path", ms(graph.critical_ms))));
      for (const sug of graph.suggestions || []) {
        body.appendChild(h("div", { class: "suggestion-note" }, h("strong", null, sug.title), " ", sug.detail));
      }
      body.appendChild(section("Coordination graph", h("p", { class: "muted" },
        "Circles: agents (size: time; number: invocations). Solid arrows: calls (parent → child); dashed: sequence (one after the other). Labels: count × mean latency."),
      h("div", { class: "graph-box" }, drawGraph(graph))));
      for (const t of tables(graph)) body.appendChild(t);
    }, (err) => {
      if (mine !== seq) return;
      clear(body);
      showError(err);
    });
  };
  const typed = debounce((v) => {
    ctx.changeParams({ session_id: v.trim() }, false);
    load();
  }, 300);
  const session = ctx.params.get("session_id");
  root.appendChild(h("div", { class: "toolbar" }, h("h1", null, "Agents"),
    session ? h("span", { class: "muted" }, "session ", sessionLink(session)) : null,
    rangePicker(ctx.params, (since, until) => {
      ctx.changeParams({ since, until }, true);
      clear(root);
      mount(root, ctx);
    })));
  root.appendChild(h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
    h("label", { class: "field" }, h("span", null, "session"),
      h("input", { type: "text", name: "session_id", value: session || "", "aria-label": "session", oninput: (e) => typed(e.target.value) }))));
  root.appendChild(body);
  load();
  return () => { seq++; };
}
