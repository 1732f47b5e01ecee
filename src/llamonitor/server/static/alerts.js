// Alerts: what `llamonitor serve --rules FILE` evaluates (GET /api/alerts) --
// each rule with its state now (firing / pending / ok) and its last figures,
// the alerts pending or firing, the notifiers and their errors, the
// notifications still waiting, and the history of firing and resolved. Every
// name, label and message from the rule file or the store goes in as text
// (dom.js's h() only ever sets textContent). Refreshes itself every 15 s.

import { api, showError } from "./api.js";
import { clear, dash, empty, h, int, money, ms, pct, section, stat, table, whenTitle } from "./dom.js";

const REFRESH_MS = 15000;

/** A figure of `metric` (a threshold rule's metric or an anomaly signal) in its unit. */
export function figure(metric, v) {
  if (v === null || v === undefined || Number.isNaN(Number(v))) return "—";
  const n = Number(v);
  if (metric === "latency_p95_ms") return ms(n);
  if (metric && metric.startsWith("latency_")) return ms(n * 1000); // rules: seconds
  if (metric === "error_rate") return pct(n);
  if (metric === "cost") return Number.isInteger(n) && n >= 1 ? "$" + int(n) : money(n);
  return Number.isInteger(n) ? int(n) : n.toLocaleString("en-US", { maximumSignificantDigits: 4 });
}

/** A rule's metric, for figure(): an anomaly rule's latency signal is in ms. */
function unitOf(rule) {
  if (!rule) return null;
  if (rule.kind === "threshold") return rule.metric;
  return rule.signal === "latency_p95" ? "latency_p95_ms" : rule.signal;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size} ${unit}`;
  }
  return `${seconds} s`;
}

/** "latency_p95 > 3.00 s over 5 min, for 5 min" / "volume anomalous (1 h buckets)". */
function condition(rule) {
  if (rule.kind === "threshold") {
    let text = `${rule.metric} ${rule.comparison} ${figure(rule.metric, rule.threshold)} over ${duration(rule.window_seconds)}`;
    if (rule.for_seconds) text += `, for ${duration(rule.for_seconds)}`;
    return text;
  }
  return `${rule.signal} anomalous (${duration(rule.bucket_seconds)} buckets)`;
}

function scope(rule) {
  const parts = Object.entries(rule.filters || {}).map(([k, v]) => `${k} = ${v}`);
  if ((rule.group_by || []).length) parts.push("by " + rule.group_by.join(", "));
  return parts.length ? parts.join(" · ") : "all spans";
}

function badge(status) {
  const cls = { firing: "bad", pending: "crit", ok: "ok", resolved: "ok", error: "bad" }[status] || "";
  return h("span", { class: "badge status-" + status + (cls ? " " + cls : "") }, status);
}

/** A rule's state now: error, else its worst alert (firing > pending), else ok. */
function ruleStatus(rule, alerts) {
  if (rule.error) return "error";
  const mine = alerts.filter((a) => a.rule === rule.name);
  if (mine.some((a) => a.status === "firing")) return "firing";
  if (mine.some((a) => a.status === "pending")) return "pending";
  return "ok";
}

/** The rule's last figures: one line per group (the holding ones first). */
function figures(rule) {
  const groups = rule.groups || [];
  const unit = unitOf(rule);
  if (!groups.length) {
    return h("span", { class: "muted" }, rule.kind === "threshold" ? "no figure yet" : "no anomaly in the last bucket");
  }
  const shown = groups.slice(0, 5);
  const box = h("div", { class: "alert-figures" }, shown.map((g) => h("div", { class: "alert-figure" + (g.holds ? " holds" : "") },
    (rule.group_by || []).length ? h("span", { class: "group" }, g.group_label, ": ") : null,
    h("strong", null, figure(unit, g.value)),
    g.count ? h("span", { class: "muted" }, ` (${int(g.count)} spans)`) : null)));
  if (groups.length > shown.length) box.appendChild(h("div", { class: "muted" }, `+ ${groups.length - shown.length} more groups`));
  return box;
}

function rulesTable(data) {
  return table([
    { label: "state", render: (r) => badge(ruleStatus(r, data.alerts)) },
    { label: "rule", render: (r) => h("div", null, h("span", { class: "rule-name" }, r.name),
      r.description ? h("div", { class: "muted small" }, r.description) : null) },
    { label: "condition", render: (r) => h("code", null, condition(r)) },
    { label: "scope", render: (r) => scope(r) },
    { label: "now", render: (r) => (r.error ? h("span", { class: "bad rule-error" }, r.error) : figures(r)) },
    { label: "severity", render: (r) => r.severity },
  ], data.rules, { cls: "rules-table" });
}

function alertsTable(data) {
  const rules = new Map(data.rules.map((r) => [r.name, r]));
  const columns = [
    { label: "state", render: (a) => badge(a.status) },
    { label: "rule", render: (a) => h("span", { class: "rule-name" }, a.rule) },
    { label: "group", render: (a) => h("span", { class: "group" }, a.group_label) },
    { label: "value", num: true, render: (a) => figure(unitOf(rules.get(a.rule)), a.value) },
    { label: "condition", render: (a) => (rules.has(a.rule) ? h("code", null, condition(rules.get(a.rule))) : dash()) },
    { label: "since", render: (a) => whenTitle(a.since) },
    { label: "notified", render: (a) => (a.status !== "firing" ? dash() : a.notified ? "yes" : h("span", { class: "warn" }, "not yet (cooldown)")) },
  ];
  // An anomaly's detail: expected vs seen, how far out.
  if (data.alerts.some((a) => a.detail)) columns.push({ label: "detail", render: (a) => a.detail || null });
  return table(columns, data.alerts, { cls: "alerts-table" });
}

function notifiersTable(data) {
  const waiting = new Map();
  for (const d of data.pending_notifications || []) waiting.set(d.notifier, (waiting.get(d.notifier) || 0) + 1);
  return table([
    { label: "notifier", render: (n) => h("span", { class: "notifier-name" }, n.name) },
    { label: "type", render: (n) => n.type },
    { label: "sent", num: true, render: (n) => int(n.sent) },
    { label: "failures", num: true, render: (n) => (n.failures ? h("span", { class: "bad" }, int(n.failures)) : "0") },
    { label: "waiting", num: true, render: (n) => int(waiting.get(n.name) || 0) },
    { label: "last error", render: (n) => (n.last_error
      ? h("span", null, h("span", { class: "bad notifier-error" }, n.last_error), " ", h("span", { class: "muted" }, "at "), whenTitle(n.last_error_at))
      : dash()) },
  ], data.notifiers, { cls: "notifiers-table" });
}

function waitingTable(data) {
  return table([
    { label: "notification", render: (d) => h("code", null, d.id) },
    { label: "notifier", render: (d) => d.notifier },
    { label: "attempts", num: true, render: (d) => int(d.attempts) },
    { label: "last error", render: (d) => (d.last_error ? h("span", { class: "bad" }, d.last_error) : dash()) },
  ], data.pending_notifications, { cls: "waiting-table" });
}

function historyTable(data) {
  const rules = new Map(data.rules.map((r) => [r.name, r]));
  return table([
    { label: "at", render: (n) => whenTitle(n.at) },
    { label: "", render: (n) => badge(n.status) },
    { label: "rule", render: (n) => h("span", { class: "rule-name" }, n.rule) },
    { label: "group", render: (n) => Object.entries(n.group || {}).map(([k, v]) => `${k}=${v || "(none)"}`).join(", ") || "all spans" },
    { label: "value", num: true, render: (n) => figure(unitOf(rules.get(n.rule)), n.value) },
    { label: "started", render: (n) => whenTitle(n.started_at) },
    { label: "summary", render: (n) => h("span", { class: "summary" }, n.summary) },
  ], data.history, { cls: "history-table" });
}

function render(body, data) {
  clear(body);
  if (!data.enabled) {
    body.appendChild(empty("No alert rules are evaluated by this server.",
      "Start it with a rule file: llamonitor serve --rules alerts.toml (see docs/alerts.md)."));
    return;
  }
  const firing = data.alerts.filter((a) => a.status === "firing").length;
  const pending = data.alerts.filter((a) => a.status === "pending").length;
  const failing = data.rules.filter((r) => r.error).length + data.notifiers.filter((n) => n.last_error).length;
  body.appendChild(h("div", { class: "stats" },
    stat("rules", int(data.rules.length)),
    stat("firing", int(firing), firing ? "bad" : null),
    stat("pending", int(pending), pending ? "warn" : null),
    stat("notifications waiting", int((data.pending_notifications || []).length)),
    stat("errors", int(failing), failing ? "bad" : null)));
  body.appendChild(section("Current alerts", data.alerts.length ? alertsTable(data)
    : h("p", { class: "muted ok-note" }, "Nothing pending or firing: every rule is ok.")));
  body.appendChild(section("Rules", rulesTable(data)));
  if (data.notifiers.length) body.appendChild(section("Notifiers", notifiersTable(data)));
  else body.appendChild(section("Notifiers", h("p", { class: "muted" }, "No notifier in the rule file: alerts show here only.")));
  if ((data.pending_notifications || []).length) body.appendChild(section("Waiting notifications", waitingTable(data)));
  body.appendChild(section(`History (${int(data.history.length)}, newest first)`, data.history.length ? historyTable(data)
    : h("p", { class: "muted" }, "No alert has fired yet.")));
}

export function mount(root, ctx) {
  let seq = 0;
  const stamp = h("span", { class: "muted evaluated" });
  const body = h("div", null, h("p", { class: "loading" }, "Loading…"));
  const load = () => {
    const mine = ++seq;
    api("alerts", null, ctx.signal).then((data) => {
      if (mine !== seq) return;
      stamp.textContent = data.evaluated_at ? "evaluated " + whenTitle(data.evaluated_at).textContent : "";
      render(body, data);
    }, (err) => {
      if (mine !== seq) return;
      showError(err);
    });
  };
  root.appendChild(h("div", { class: "toolbar" }, h("h1", null, "Alerts"), stamp,
    h("button", { type: "button", class: "btn", onclick: load }, "Refresh")));
  root.appendChild(body);
  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => {
    seq++;
    clearInterval(timer);
  };
}
