// One trace: a waterfall of its spans (depth-first, as /api/traces/{id} gives
// them), bars to scale of the trace, subtrees that collapse, the critical path
// and the errors marked. The list is virtualized: a fixed-height scroller, a
// spacer as tall as every visible row, and only the rows in view (plus a
// buffer) in the DOM, recycled as it scrolls — a 10,000-span trace stays fast.
// Clicking a span opens its panel (/api/traces/{id}/spans/{span_id}).

import { api, showError } from "./api.js";
import {
  clear, dash, empty, h, int, money, ms, sessionLink, stat, traceHref, tracesHref, whenTitle,
} from "./dom.js";
import { feedbackBox } from "./feedback.js";

const ROW_H = 24;
const BUFFER = 12;
const INDENT = 14;
const MAX_INDENT_DEPTH = 40;

export function mount(root, ctx, traceId) {
  const header = h("div", { class: "trace-head" }, h("h1", null, "Trace ", h("code", { class: "id" }, traceId)));
  const body = h("div", null, h("p", { class: "loading" }, "Loading…"));
  root.appendChild(header);
  root.appendChild(body);
  let view = null;
  api("traces/" + encodeURIComponent(traceId), null, ctx.signal).then((data) => {
    clear(body);
    if (!data.spans || !data.spans.length) {
      body.appendChild(empty("This trace has no spans."));
      return;
    }
    view = new Waterfall(data, ctx, header, body);
    header.appendChild(feedbackBox(data.trace_id, data.scores || []));
  }, (err) => {
    clear(body);
    body.appendChild(empty(err.status === 404 ? "No such trace." : "The trace could not be loaded."));
    showError(err);
  });
  return () => {
    if (view) view.destroy();
  };
}

class Waterfall {
  constructor(data, ctx, header, body) {
    this.data = data;
    this.ctx = ctx;
    this.traceId = data.trace_id;
    this.spans = data.spans;
    this.total = Math.max(1e-6, Number(data.duration_ms) || 0);
    for (const s of this.spans) this.total = Math.max(this.total, (s.start_offset_ms || 0) + (s.duration_ms || 0));
    this.collapsed = new Set();
    this.selected = null;
    this.gen = 0;
    this.pool = [];
    this.raf = 0;
    this.panelSeq = 0;
    this.index();
    this.buildHeader(header);
    this.buildBody(body);
    this.computeVisible();
    const wanted = ctx.params.get("span");
    if (wanted && this.byId.has(wanted)) this.select(wanted, true);
    else this.paint();
    this.onKey = (e) => {
      if (e.key === "Escape" && this.selected) this.closePanel();
    };
    document.addEventListener("keydown", this.onKey);
  }

  destroy() {
    document.removeEventListener("keydown", this.onKey);
    cancelAnimationFrame(this.raf);
    if (this.ro) this.ro.disconnect();
  }

  /** end[i]: the index after span i's subtree; byId: span_id -> index. */
  index() {
    const n = this.spans.length;
    this.end = new Int32Array(n);
    this.byId = new Map();
    const stack = [];
    for (let i = 0; i < n; i++) {
      const d = this.spans[i].depth || 0;
      while (stack.length && (this.spans[stack[stack.length - 1]].depth || 0) >= d) this.end[stack.pop()] = i;
      stack.push(i);
      this.byId.set(this.spans[i].span_id, i);
    }
    while (stack.length) this.end[stack.pop()] = n;
  }

  computeVisible() {
    const n = this.spans.length;
    const out = new Int32Array(n);
    let k = 0;
    for (let i = 0; i < n;) {
      out[k++] = i;
      i = this.collapsed.has(this.spans[i].span_id) ? this.end[i] : i + 1;
    }
    this.visible = out.subarray(0, k);
    this.rowOf = new Map();
    this.gen++;
    if (this.spacer) this.spacer.style.height = `${k * ROW_H}px`;
    if (this.countEl) this.countEl.textContent = `${int(k)} of ${int(n)} spans shown`;
  }

  buildHeader(header) {
    const d = this.data;
    const rootSpan = this.spans[0];
    const cost = rootSpan && rootSpan.subtree && rootSpan.depth === 0 ? rootSpan.subtree.cost_usd : null;
    const tokens = rootSpan && rootSpan.subtree && rootSpan.depth === 0 ? rootSpan.subtree.total_tokens : null;
    header.appendChild(h("div", { class: "stats" },
      stat("session", sessionLink(d.session_id)),
      stat("start", whenTitle(d.start)),
      stat("duration", ms(d.duration_ms)),
      stat("spans", int(d.span_count)),
      stat("errors", d.error_count ? h("span", { class: "bad" }, int(d.error_count)) : "0"),
      stat("tokens", int(tokens)),
      stat("cost", money(cost))));
    if (d.truncated) {
      header.appendChild(h("p", { class: "note" },
        `This trace has more spans than one page holds: the deepest are left out. Spans marked + load their subtree when opened.`));
    }
  }

  buildBody(body) {
    this.countEl = h("span", { class: "muted" });
    const tools = h("div", { class: "toolbar small" },
      h("button", { type: "button", class: "btn", onclick: () => this.expandAll() }, "Expand all"),
      h("button", { type: "button", class: "btn", onclick: () => this.collapseAll() }, "Collapse all"),
      h("button", { type: "button", class: "btn", onclick: () => this.nextError(), disabled: !this.data.error_count }, "Next error"),
      h("span", { class: "legend" }, h("span", { class: "swatch crit" }), "critical path ",
        h("span", { class: "swatch err" }), "error ", h("span", { class: "swatch" }), "span"),
      this.countEl);

    const axis = h("div", { class: "wf-axis" });
    for (let k = 0; k <= 4; k++) {
      const tick = h("span", { class: "tick" + (k === 4 ? " last" : "") }, ms((this.total * k) / 4));
      tick.style.left = `${k * 25}%`;
      axis.appendChild(tick);
    }
    const headRow = h("div", { class: "wf-row wf-header" },
      h("div", { class: "wf-name" }, "span"), h("div", { class: "wf-dur" }, "duration"), h("div", { class: "wf-track" }, axis));

    this.spacer = h("div", { class: "wf-spacer" });
    this.viewport = h("div", { class: "wf-viewport", "data-virtual-scroll": "", tabindex: "0", role: "tree", "aria-label": "spans of the trace" }, this.spacer);
    this.viewport.addEventListener("scroll", () => this.schedule(), { passive: true });
    this.viewport.addEventListener("click", (e) => this.onClick(e));
    this.viewport.addEventListener("keydown", (e) => this.onKeyNav(e));
    this.ro = new ResizeObserver(() => this.schedule());
    this.ro.observe(this.viewport);

    this.panel = h("aside", { class: "panel", hidden: true, "aria-label": "span details" });
    body.appendChild(tools);
    body.appendChild(h("div", { class: "wf-layout" },
      h("div", { class: "waterfall" }, headRow, this.viewport), this.panel));
  }

  schedule() {
    if (this.raf) return;
    this.raf = requestAnimationFrame(() => {
      this.raf = 0;
      this.paint();
    });
  }

  newRow() {
    const tog = h("button", { type: "button", class: "tog", tabindex: "-1" });
    const mark = h("span", { class: "mark" });
    const op = h("span", { class: "op" });
    const meta = h("span", { class: "meta" });
    const name = h("div", { class: "wf-name" }, tog, mark, op, meta);
    const dur = h("div", { class: "wf-dur" });
    const bar = h("div", { class: "bar" });
    const track = h("div", { class: "wf-track" }, bar);
    const row = h("div", { class: "wf-row", role: "treeitem", "data-span-row": "" }, name, dur, track);
    row._parts = { tog, mark, op, meta, name, dur, bar };
    row._idx = -1;
    row._gen = -1;
    this.spacer.appendChild(row);
    return row;
  }

  paint() {
    const vp = this.viewport;
    const count = this.visible.length;
    const first = Math.max(0, Math.floor(vp.scrollTop / ROW_H) - BUFFER);
    const last = Math.min(count, Math.ceil((vp.scrollTop + vp.clientHeight) / ROW_H) + BUFFER);
    const need = Math.max(0, last - first);
    while (this.pool.length < need) this.pool.push(this.newRow());
    // A row keeps its span while it stays in view: only rows new to the view are filled.
    const free = [];
    const keep = new Map();
    for (const row of this.pool) {
      if (row._gen === this.gen && row._pos >= first && row._pos < last) keep.set(row._pos, row);
      else free.push(row);
    }
    for (let pos = first; pos < last; pos++) {
      let row = keep.get(pos);
      if (!row) {
        row = free.pop();
        this.fill(row, this.visible[pos], pos);
      }
      row.hidden = false;
    }
    for (const row of free) {
      row.hidden = true;
      row._pos = -1;
    }
  }

  fill(row, i, pos) {
    const s = this.spans[i];
    const p = row._parts;
    row._idx = i;
    row._pos = pos;
    row._gen = this.gen;
    row.style.transform = `translateY(${pos * ROW_H}px)`;
    row.dataset.spanId = s.span_id;
    row.classList.toggle("error", !!s.error);
    row.classList.toggle("crit", !!s.on_critical_path);
    row.classList.toggle("selected", s.span_id === this.selected);
    row.setAttribute("aria-level", String((s.depth || 0) + 1));
    p.name.style.paddingLeft = `${Math.min(s.depth || 0, MAX_INDENT_DEPTH) * INDENT + 4}px`;
    const hasKids = this.end[i] > i + 1;
    if (s.children_omitted) {
      p.tog.textContent = "+";
      p.tog.title = `load the ${s.child_count || ""} omitted children`.replace("  ", " ");
      p.tog.className = "tog omitted";
      row.setAttribute("aria-expanded", "false");
    } else if (hasKids) {
      const closed = this.collapsed.has(s.span_id);
      p.tog.textContent = closed ? "▸" : "▾";
      p.tog.title = closed ? "expand" : "collapse";
      p.tog.className = "tog";
      row.setAttribute("aria-expanded", closed ? "false" : "true");
    } else {
      p.tog.textContent = "";
      p.tog.title = "";
      p.tog.className = "tog leaf";
      row.removeAttribute("aria-expanded");
    }
    p.mark.textContent = s.error ? "!" : s.on_critical_path ? "●" : "";
    p.mark.title = s.error ? (s.error_type || "error") : s.on_critical_path ? "on the critical path" : "";
    p.op.textContent = s.operation_name ?? "";
    const meta = [s.model, s.agent_name].filter((x) => x !== null && x !== undefined && x !== "").join(" · ");
    p.meta.textContent = meta;
    const closedKids = this.collapsed.has(s.span_id) && s.subtree ? ` (+${int((s.subtree.spans || 1) - 1)})` : "";
    p.dur.textContent = ms(s.duration_ms) + closedKids;
    const left = Math.max(0, Math.min(100, ((s.start_offset_ms || 0) / this.total) * 100));
    const width = Math.max(0.15, Math.min(100 - left, ((s.duration_ms || 0) / this.total) * 100));
    p.bar.style.left = `${left}%`;
    p.bar.style.width = `${width}%`;
    row.title = `${s.operation_name ?? ""} · ${ms(s.duration_ms)} (self ${ms(s.self_ms)})` +
      (s.subtree ? ` · subtree: ${int(s.subtree.spans)} spans, ${int(s.subtree.errors)} errors, ${money(s.subtree.cost_usd)}` : "");
  }

  onClick(e) {
    const row = e.target.closest(".wf-row");
    if (!row || row._idx < 0) return;
    const s = this.spans[row._idx];
    if (e.target.closest(".tog")) {
      if (s.children_omitted) this.loadSubtree(row._idx);
      else if (this.end[row._idx] > row._idx + 1) this.toggle(s.span_id);
      return;
    }
    this.select(s.span_id);
  }

  onKeyNav(e) {
    if (!["ArrowDown", "ArrowUp", "ArrowLeft", "ArrowRight", "Enter"].includes(e.key)) return;
    e.preventDefault();
    const cur = this.selected && this.byId.has(this.selected) ? this.byId.get(this.selected) : -1;
    let pos = cur < 0 ? -1 : this.visible.indexOf(cur);
    if (e.key === "ArrowDown") pos = Math.min(this.visible.length - 1, pos + 1);
    else if (e.key === "ArrowUp") pos = Math.max(0, pos - 1);
    else if (cur >= 0 && (e.key === "ArrowLeft" || e.key === "ArrowRight")) {
      const id = this.spans[cur].span_id;
      if ((e.key === "ArrowLeft") !== this.collapsed.has(id) && this.end[cur] > cur + 1) this.toggle(id);
      return;
    }
    if (pos >= 0) this.select(this.spans[this.visible[pos]].span_id);
  }

  toggle(spanId) {
    if (this.collapsed.has(spanId)) this.collapsed.delete(spanId);
    else this.collapsed.add(spanId);
    this.computeVisible();
    this.paint();
  }

  expandAll() {
    this.collapsed.clear();
    this.computeVisible();
    this.paint();
  }

  collapseAll() {
    for (let i = 0; i < this.spans.length; i++) if (this.end[i] > i + 1) this.collapsed.add(this.spans[i].span_id);
    this.computeVisible();
    this.viewport.scrollTop = 0;
    this.paint();
  }

  nextError() {
    const cur = this.selected && this.byId.has(this.selected) ? this.byId.get(this.selected) : -1;
    const n = this.spans.length;
    for (let k = 1; k <= n; k++) {
      const i = (cur + k + n) % n;
      if (this.spans[i].error) {
        this.select(this.spans[i].span_id);
        return;
      }
    }
  }

  /** Open every collapsed ancestor of span i. */
  reveal(i) {
    let changed = false;
    for (const id of this.collapsed) {
      const j = this.byId.get(id);
      if (j !== undefined && j < i && this.end[j] > i) {
        this.collapsed.delete(id);
        changed = true;
      }
    }
    if (changed) this.computeVisible();
  }

  scrollTo(i) {
    const pos = this.visible.indexOf(i);
    if (pos < 0) return;
    const vp = this.viewport;
    const y = pos * ROW_H;
    if (y < vp.scrollTop || y + ROW_H > vp.scrollTop + vp.clientHeight) vp.scrollTop = Math.max(0, y - vp.clientHeight / 3);
  }

  async loadSubtree(i) {
    const s = this.spans[i];
    try {
      const sub = await api("traces/" + encodeURIComponent(this.traceId), { root: s.span_id }, this.ctx.signal);
      const got = sub.spans || [];
      const at = got.findIndex((x) => x.span_id === s.span_id);
      const kids = at >= 0 ? got.slice(at + 1) : got;
      // Depths and offsets of the answer may count from its own root: shift them to ours.
      const baseDepth = at >= 0 ? got[at].depth || 0 : kids.length ? (kids[0].depth || 0) - 1 : 0;
      const dDepth = (s.depth || 0) - baseDepth;
      const dOff = at >= 0 ? (s.start_offset_ms || 0) - (got[at].start_offset_ms || 0) : 0;
      for (const k of kids) {
        k.depth = (k.depth || 0) + dDepth;
        k.start_offset_ms = (k.start_offset_ms || 0) + dOff;
        k.on_critical_path = !!(k.on_critical_path && s.on_critical_path);
      }
      s.children_omitted = false;
      this.spans.splice(i + 1, this.end[i] - i - 1, ...kids);
      this.index();
      this.computeVisible();
      this.paint();
    } catch (err) {
      showError(err);
    }
  }

  select(spanId, initial = false) {
    const i = this.byId.get(spanId);
    if (i === undefined) return;
    this.selected = spanId;
    this.reveal(i);
    for (const row of this.pool) if (row._idx >= 0) row.classList.toggle("selected", row.dataset.spanId === spanId);
    this.scrollTo(i);
    this.paint();
    const next = new URLSearchParams(this.ctx.params);
    next.set("span", spanId);
    if (!initial) this.ctx.setParams(next, false);
    this.openPanel(this.spans[i]);
  }

  closePanel() {
    this.selected = null;
    this.panel.hidden = true;
    clear(this.panel);
    for (const row of this.pool) row.classList.remove("selected");
    const next = new URLSearchParams(this.ctx.params);
    next.delete("span");
    this.ctx.setParams(next, false);
  }

  openPanel(row) {
    const mine = ++this.panelSeq;
    const panel = this.panel;
    clear(panel);
    panel.hidden = false;
    panel.appendChild(panelHead(row.operation_name, () => this.closePanel()));
    panel.appendChild(h("p", { class: "loading" }, "Loading…"));
    api(`traces/${encodeURIComponent(this.traceId)}/spans/${encodeURIComponent(row.span_id)}`, null, this.ctx.signal)
      .then((span) => {
        if (mine !== this.panelSeq) return;
        clear(panel);
        panel.appendChild(panelHead(span.operation_name ?? row.operation_name, () => this.closePanel()));
        renderSpan(panel, span, row, this.traceId);
      }, (err) => {
        if (mine !== this.panelSeq) return;
        panel.lastChild.textContent = "The span could not be loaded.";
        showError(err);
      });
  }
}

function panelHead(title, onClose) {
  return h("div", { class: "panel-head" }, h("h2", null, title ?? "span"),
    h("button", { type: "button", class: "close", title: "close (Esc)", onclick: onClose }, "×"));
}

function kv(rows) {
  const t = h("table", { class: "kv" });
  for (const [label, value] of rows) {
    if (value === null || value === undefined || value === "") continue;
    t.appendChild(h("tr", null, h("th", null, label), h("td", null, value)));
  }
  return t.rows.length ? t : null;
}

function pre(text, cls) {
  const el = h("pre", { class: cls || "text" });
  el.textContent = typeof text === "string" ? text : JSON.stringify(text, null, 2);
  return el;
}

function valueOf(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === "object") return pre(v, "code");
  if (typeof v === "boolean") return v ? "true" : "false";
  return String(v);
}

function renderSpan(panel, span, row, traceId) {
  const used = new Set();
  const take = (k) => {
    used.add(k);
    return span[k];
  };
  const block = (title, content) => {
    if (!content) return;
    panel.appendChild(h("section", { class: "pblock" }, h("h3", null, title), content));
  };
  const badges = h("p", { class: "badges" },
    h("span", { class: "badge" }, take("operation_type") ?? "span"),
    span.error ? h("span", { class: "badge bad" }, "error") : h("span", { class: "badge ok" }, "ok"),
    row.on_critical_path ? h("span", { class: "badge crit" }, "critical path") : null);
  used.add("error");
  used.add("operation_name");
  panel.appendChild(badges);
  const parent = take("parent_span_id");
  block("Links", kv([
    ["session", sessionLink(take("session_id"))],
    ["trace", h("a", { href: traceHref(take("trace_id") ?? traceId), class: "id" }, span.trace_id ?? traceId)],
    ["span", h("code", { class: "id" }, take("span_id") ?? row.span_id)],
    ["parent", parent ? h("a", { href: traceHref(traceId, { span: parent }), class: "id" }, parent) : null],
    ["same operation", span.operation_name != null ? h("a", { href: tracesHref({ operation: span.operation_name }) }, "traces with " + span.operation_name) : null],
  ]));
  used.add("event_id");
  if (span.error || span.error_type || span.error_message) {
    const e = h("div", { class: "error-box" }, h("strong", null, take("error_type") ?? "error"));
    if (take("error_message")) e.appendChild(pre(span.error_message));
    block("Error", e);
  }
  block("Timing", kv([
    ["start", whenTitle(take("timestamp"))],
    ["duration", ms(take("duration_ms"))],
    ["self time", row.self_ms != null ? ms(row.self_ms) : null],
    ["offset in trace", row.start_offset_ms != null ? ms(row.start_offset_ms) : null],
    ["first token", span.time_to_first_token_ms != null ? ms(take("time_to_first_token_ms")) : null],
    ["stream items", span.stream_item_count != null ? int(take("stream_item_count")) : null],
  ]));
  block("Model", kv([
    ["provider", take("provider")],
    ["model", take("model") != null ? h("a", { href: tracesHref({ model: span.model }) }, span.model) : null],
    ["response model", take("response_model")],
    ["response id", take("response_id")],
    ["finish reason", take("finish_reason")],
    ["temperature", take("temperature")],
    ["max tokens", take("max_tokens")],
    ["agent", take("agent_name") != null ? h("a", { href: tracesHref({ agent: span.agent_name }) }, span.agent_name) : null],
    ["project", take("project_name")],
  ]));
  const tok = (k) => (span[k] != null ? int(take(k)) : (used.add(k), null));
  block("Tokens", kv([
    ["input", tok("input_tokens")],
    ["output", tok("output_tokens")],
    ["total", tok("total_tokens")],
    ["cache read", tok("cache_read_tokens")],
    ["cache write", tok("cache_write_tokens")],
    ["reasoning", tok("reasoning_tokens")],
    ["source", take("token_source")],
  ]));
  const usd = (k) => (span[k] != null ? money(take(k)) : (used.add(k), null));
  block("Cost", kv([
    ["input", usd("input_cost_usd")],
    ["output", usd("output_cost_usd")],
    ["total", usd("cost_usd")],
    ["source", take("cost_source")],
  ]));
  if (take("prompt_content") != null) block("Prompt", pre(span.prompt_content, "text prompt"));
  if (take("completion_content") != null) block("Completion", pre(span.completion_content, "text completion"));
  let custom = take("custom_attributes");
  if (typeof custom === "string") {
    try {
      custom = JSON.parse(custom);
    } catch {
      /* shown as text */
    }
  }
  if (custom && typeof custom === "object" && !Array.isArray(custom)) {
    block("Custom attributes", kv(Object.entries(custom).map(([k, v]) => [k, valueOf(v) ?? dash()])));
  } else if (custom != null) block("Custom attributes", pre(custom, "code"));
  const rest = Object.keys(span).filter((k) => !used.has(k)).sort();
  block("Other attributes", kv(rest.map((k) => [k, valueOf(span[k])])));
}

