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
const WIDTH = 760;
const HEIGHT = 460;

/** An SVG element; attrs are set with setAttribute, text with textContent. */
function s(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = String(text);
  return el;
}

function layout(nodes) {
  const n = nodes.length;
  const cx = WIDTH / 2;
  const cy = HEIGHT / 2;
  const r = n > 1 ? Math.min(WIDTH, HEIGHT) / 2 - 70 : 0;
  const at = new Map();
  nodes.forEach((node, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / n;
    at.set(node.agent, { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a) });
  });
  return at;
}

function radius(node, maxTime) {
  return 14 + 22 * Math.sqrt(maxTime > 0 ? node.time_ms / maxTime : 0);
}

/** The graph as an <svg>: circles sized by time (red ring: failures), arrows by count. */
export function drawGraph(graph) {
  const nodes = graph.nodes || [];
  const edges = graph.edges || [];
  const svg = s("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "agent-graph", role: "img",
    "aria-label": "coordination graph of the agents" });
  const defs = s("defs");
  for (const kind of ["call", "sequence"]) {
    const marker = s("marker", { id: "arrow-" + kind, viewBox: "0 0 10 10", refX: 9, refY: 5,
      markerWidth: 10, markerHeight: 10, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" });
    marker.appendChild(s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow " + kind }));
    defs.appendChild(marker);
  }
  svg.appendChild(defs);
  const at = layout(nodes);
  const maxTime = Math.max(0, ...nodes.map((n) => n.time_ms));
  const maxCount = Math.max(1, ...edges.map((e) => e.count));
  const rOf = new Map(nodes.map((n) => [n.agent, radius(n, maxTime)]));
  const pairs = new Set(edges.map((e) => e.source + "\u0000" + e.target));
  const edgeLayer = s("g", { class: "edges" });
  for (const e of edges) {
    const a = at.get(e.source);
    const b = at.get(e.target);
    if (!a || !b) continue;
    const g = s("g", { class: "edge " + e.kind, "data-source": e.source, "data-target": e.target, "data-kind": e.kind });
    const width = 1.5 + 4 * (e.count / maxCount);
    let d;
    let lx;
    let ly;
    if (e.source === e.target) {
      const r = rOf.get(e.source);
      const off = e.kind === "call" ? 0 : 10;
      d = `M${a.x - 8},${a.y - r} C${a.x - 40 - off},${a.y - r - 60 - off} ${a.x + 40 + off},${a.y - r - 60 - off} ${a.x + 8},${a.y - r}`;
      lx = a.x;
      ly = a.y - r - 50 - off;
    } else {
      const dx = b.x - a.x;
      const dy = b.y - a.y;
      const len = Math.hypot(dx, dy) || 1;
      const ux = dx / len;
      const uy = dy / len;
      // Bend both ways of a pair apart, and the two kinds of one way apart.
      const both = pairs.has(e.target + "\u0000" + e.source);
      const bend = (both ? 30 : 0) + (e.kind === "sequence" ? 22 : 0);
      const sx = a.x + ux * rOf.get(e.source);
      const sy = a.y + uy * rOf.get(e.source);
      const tx = b.x - ux * (rOf.get(e.target) + 2);
      const ty = b.y - uy * (rOf.get(e.target) + 2);
      const mx = (sx + tx) / 2 - uy * bend;
      const my = (sy + ty) / 2 + ux * bend;
      d = `M${sx},${sy} Q${mx},${my} ${tx},${ty}`;
      lx = (sx + tx) / 4 + mx / 2;
      ly = (sy + ty) / 4 + my / 2;
    }
    g.appendChild(s("path", { d, class: "edge-line", "stroke-width": width.toFixed(1), "marker-end": `url(#arrow-${e.kind})` }));
    const label = s("text", { x: lx.toFixed(1), y: ly.toFixed(1), class: "edge-label", "text-anchor": "middle" }, `${int(e.count)}× ${ms(e.latency_ms)}`);
    const title = s("title", {}, `${e.source} → ${e.target} (${e.kind}): ${e.count} handoffs, ` +
      `latency ${ms(e.latency_ms)}, success ${pct(e.success_rate)}`);
    g.appendChild(title);
    g.appendChild(label);
    edgeLayer.appendChild(g);
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
