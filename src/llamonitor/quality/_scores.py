"""``llamonitor.score()``: judge a trace, a span or a session from code."""

from __future__ import annotations

from typing import Any

from llamonitor import _score_handoff
from llamonitor.schema._scores import make_score


def score(
    name: str,
    value: float | bool | None = None,
    *,
    label: str | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
    session_id: str | None = None,
    comment: str | None = None,
    source: str = "code",
    evaluator: str | None = None,
    metadata: dict[str, Any] | None = None,
    score_id: str | None = None,
) -> bool:
    """Record a score on a trace, a span or a session.

    The score travels like a span: queued, written by a background thread to
    the running monitor's stores (retried, spooled during an outage). Giving
    the same ``name`` on the same target from the same ``source`` and
    ``evaluator`` again replaces the score (its ``score_id`` is derived from
    them, unless you pass ``score_id``).

    Args:
        name: what is judged (``helpfulness``, ``user_feedback``).
        value: a finite number (``True``/``False`` are 1 and 0).
        label: a category (``good``, ``refusal``); a value, a label or both.
        trace_id: the trace judged; or ``span_id``, or ``session_id``: exactly one.
        comment: free text.
        source: ``human``, ``code`` or ``llm``.
        evaluator: who gave it (kept with the score, part of its id).
        metadata: a JSON-able dict kept with the score.
        score_id: an id of your own (several scores of one name on one target).

    Returns:
        True if queued; False if monitoring is off or the queue is full
        (counted, never raised).

    Raises:
        ValueError: a bad argument (NaN or infinite value, no or two targets,
            neither value nor label, an unknown source...), at the call.
    """
    row = make_score(
        name,
        value,
        label=label,
        trace_id=trace_id,
        span_id=span_id,
        session_id=session_id,
        comment=comment,
        source=source,
        evaluator=evaluator,
        metadata=metadata,
        score_id_=score_id,
    )
    return _score_handoff.submit(row)
