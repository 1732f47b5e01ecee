// Feedback on a trace: thumbs up / down and a comment, sent to POST /api/scores
// (JSON with the X-Llamonitor-Write header: what a page of another site cannot
// send), and the trace's scores listed. Text goes in with textContent only.

import { ApiError, showError } from "./api.js";
import { clear, h } from "./dom.js";

export const FEEDBACK_NAME = "user_feedback";

/** POST /api/scores with one score; resolves to the stored scores. */
export async function postScore(score) {
  const response = await fetch("/api/scores", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", "x-llamonitor-write": "1", accept: "application/json" },
    body: JSON.stringify(score),
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
    throw new ApiError(response.status, message, body && body.parameter);
  }
  return body.scores || [];
}

function describe(s) {
  let what = s.label !== null && s.label !== undefined ? String(s.label) : "";
  if (s.value !== null && s.value !== undefined) {
    if (s.name === FEEDBACK_NAME) what = s.value >= 0.5 ? "✓ good" : "✗ bad";
    else what = what ? `${what} (${s.value})` : String(s.value);
  }
  return what;
}

function scoreList(list, scores) {
  clear(list);
  if (!scores.length) {
    list.appendChild(h("li", { class: "muted" }, "No scores yet."));
    return;
  }
  for (const s of scores) {
    const item = h("li", { class: "score", dataset: { name: s.name } },
      h("strong", null, s.name), ": ", describe(s),
      h("span", { class: "muted" }, ` · ${s.source}${s.evaluator ? " / " + s.evaluator : ""}`));
    if (s.comment) item.appendChild(h("q", { class: "comment" }, s.comment));
    list.appendChild(item);
  }
}

/** The feedback box of trace ``traceId`` showing ``scores`` (from the trace's answer). */
export function feedbackBox(traceId, scores) {
  let current = scores.slice();
  const list = h("ul", { class: "scores" });
  const comment = h("textarea", { class: "feedback-comment", rows: "2", maxlength: "10000",
    placeholder: "Comment (optional)", "aria-label": "feedback comment" });
  const status = h("span", { class: "muted feedback-status", role: "status" });
  const send = (value) => async () => {
    status.textContent = "Sending…";
    try {
      const text = comment.value.trim();
      const stored = await postScore({
        name: FEEDBACK_NAME, value, trace_id: traceId, source: "human", evaluator: "ui",
        comment: text || null,
      });
      const ids = new Set(stored.map((s) => s.score_id));
      current = [...stored, ...current.filter((s) => !ids.has(s.score_id))];
      scoreList(list, current);
      status.textContent = "Thanks: feedback saved.";
    } catch (err) {
      status.textContent = "";
      showError(err);
    }
  };
  const box = h("section", { class: "feedback", "aria-label": "feedback" },
    h("h2", null, "Feedback"),
    h("div", { class: "feedback-row" },
      h("button", { type: "button", class: "thumb up", title: "good answer", onclick: send(1) }, "✓ Good"),
      h("button", { type: "button", class: "thumb down", title: "bad answer", onclick: send(0) }, "✗ Bad"),
      comment, status),
    list);
  scoreList(list, current);
  return box;
}
