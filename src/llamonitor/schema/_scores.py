"""The score model: one Arrow schema every store's score table derives from.

A *score* judges a trace, a span or a session: a number (``value``), a
category (``label``) or both, with an optional ``comment``, from a ``source``
(``human``, ``code``, ``llm``). Its ``score_id`` is derived from what it
judges (:func:`score_id`): the same name on the same target from the same
source and evaluator is one score, so writing it again (an evaluator re-run,
a second click on the same thumb) replaces it rather than adding a row.

Validation happens here, at the call (:func:`make_score`): a bad score is a
``ValueError`` for the caller, never a row that a store refuses later.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from llamonitor.schema._side_tables import check_values, conform_columns, described_schema

SCORE_SCHEMA_VERSION = 1
"""Bumped whenever a column is added, removed or changes type or meaning."""

SCHEMA_VERSION_KEY = b"scores.schema_version"
TABLE_KEY = b"llamonitor.table"
"""Schema metadata naming a table of scores (a spooled batch says what it is)."""

SOURCES = ("human", "code", "llm")
TARGETS = ("trace", "span", "session")

MAX_NAME_CHARS = 200
MAX_LABEL_CHARS = 200
MAX_ID_CHARS = 256
MAX_COMMENT_CHARS = 10_000
MAX_METADATA_CHARS = 10_000

_TS = pa.timestamp("us", tz="UTC")

_COLUMNS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    ("score_id", pa.string(), False, "Derived from name, target, source, evaluator."),
    ("timestamp", _TS, False, "When the score was given, UTC."),
    ("name", pa.string(), False, "What is judged: helpfulness, valid_json, user_feedback."),
    ("value", pa.float64(), True, "The number (finite); 1/0 for thumbs up/down."),
    ("label", pa.string(), True, "The category: good, bad, refusal..."),
    ("comment", pa.string(), True, "Free text: a reviewer's note, a judge's reasoning."),
    ("source", pa.string(), False, "human, code or llm."),
    ("target", pa.string(), False, "trace, span or session: what the score is on."),
    ("trace_id", pa.string(), True, "The trace judged (or the judged span's trace)."),
    ("span_id", pa.string(), True, "The span judged (target span)."),
    ("session_id", pa.string(), True, "The session judged (target session)."),
    ("evaluator", pa.string(), True, "Who gave it: an evaluator's name, ui, api, code."),
    ("metadata", pa.string(), True, "JSON object of anything else, or null."),
    ("schema_version", pa.int32(), False, "SCORE_SCHEMA_VERSION of the writer."),
)

SCORE_SCHEMA = described_schema(
    _COLUMNS, {SCHEMA_VERSION_KEY: str(SCORE_SCHEMA_VERSION).encode(), TABLE_KEY: b"scores"}
)
"""The Arrow schema of a table of scores."""

SCORE_COLUMNS = tuple(SCORE_SCHEMA.names)
ID_COLUMNS = ("trace_id", "span_id", "session_id")


def score_id(name: str, target: str, target_id: str, source: str, evaluator: str | None) -> str:
    """The id of the score ``name`` on ``target_id`` by ``source``/``evaluator``
    (32 hex digits): the same five give the same id, so a store keeps one row."""
    key = "\x1f".join((name, target, target_id, source, evaluator or ""))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _text(param: str, value: Any, limit: int, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise ValueError(f"score: {param} is required")
        return None
    if not isinstance(value, str):
        raise ValueError(f"score: {param} must be a string, not {type(value).__name__}")
    if required and not value.strip():
        raise ValueError(f"score: {param} must not be empty")
    if len(value) > limit:
        raise ValueError(f"score: {param} is longer than {limit} characters")
    return value


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, (int, float)):
        try:
            import numbers

            if not isinstance(value, numbers.Real):
                raise TypeError
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"score: value must be a number, not {type(value).__name__}"
            ) from None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"score: value must be a finite number, not {number!r}")
    return number


def make_score(
    name: Any,
    value: Any = None,
    *,
    label: Any = None,
    trace_id: Any = None,
    span_id: Any = None,
    session_id: Any = None,
    comment: Any = None,
    source: Any = "code",
    evaluator: Any = None,
    metadata: Any = None,
    score_id_: Any = None,
    timestamp: datetime | None = None,
    span_trace_id: Any = None,
) -> dict[str, Any]:
    """A validated score row (a dict of :data:`SCORE_SCHEMA`'s columns).

    Exactly one of ``trace_id``/``span_id``/``session_id`` is the target;
    ``span_trace_id`` is the trace of a span target when known (kept for
    reports, not a second target).

    Raises:
        ValueError: the name, value, label, target, source or a text is not
            acceptable (the message names the argument).
    """
    name = _text("name", name, MAX_NAME_CHARS, required=True)
    number = _number(value)
    label = _text("label", label, MAX_LABEL_CHARS)
    if number is None and label is None:
        raise ValueError("score: give a value (a number) or a label")
    comment = _text("comment", comment, MAX_COMMENT_CHARS)
    if source not in SOURCES:
        raise ValueError(f"score: source must be one of {list(SOURCES)}, not {source!r}")
    evaluator = _text("evaluator", evaluator, MAX_NAME_CHARS)
    ids = {
        "trace_id": _text("trace_id", trace_id, MAX_ID_CHARS),
        "span_id": _text("span_id", span_id, MAX_ID_CHARS),
        "session_id": _text("session_id", session_id, MAX_ID_CHARS),
    }
    given = [k for k, v in ids.items() if v]
    if len(given) != 1:
        raise ValueError(
            "score: give exactly one target: trace_id=, span_id= or session_id= "
            f"({'none' if not given else ', '.join(given)} given)"
        )
    key = given[0]
    target = key[: -len("_id")]
    target_id = str(ids[key])
    if target == "span" and span_trace_id:
        ids["trace_id"] = _text("trace_id", span_trace_id, MAX_ID_CHARS)
    meta: str | None = None
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise ValueError(f"score: metadata must be a dict, not {type(metadata).__name__}")
        try:
            meta = json.dumps(metadata, ensure_ascii=False, allow_nan=False, default=str)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"score: metadata is not JSON: {exc}") from None
        if len(meta) > MAX_METADATA_CHARS:
            raise ValueError(f"score: metadata is longer than {MAX_METADATA_CHARS} characters")
    sid = _text("score_id", score_id_, MAX_ID_CHARS) or score_id(
        name, target, target_id, source, evaluator
    )
    when = timestamp if timestamp is not None else datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return {
        "score_id": sid,
        "timestamp": when,
        "name": name,
        "value": number,
        "label": label,
        "comment": comment,
        "source": source,
        "target": target,
        **ids,
        "evaluator": evaluator,
        "metadata": meta,
        "schema_version": SCORE_SCHEMA_VERSION,
    }


def scores_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A table of :data:`SCORE_SCHEMA` from rows of :func:`make_score`."""
    return pa.Table.from_pylist(rows, schema=SCORE_SCHEMA)


def conform_scores(table: pa.Table) -> pa.Table:
    """``table`` with exactly :data:`SCORE_SCHEMA`'s columns, in order and type.

    Missing nullable columns become nulls (``schema_version`` the current);
    extra columns are dropped (a spooled batch may come back with more).

    Raises:
        ValueError: a required column is missing or holds nulls, a value
            cannot be cast, a source/target is unknown or a value not finite.
    """
    import pyarrow.compute as pc

    out = conform_columns(
        table, SCORE_SCHEMA, "scores", defaults={"schema_version": SCORE_SCHEMA_VERSION}
    )
    if out.num_rows:
        check_values(out, "source", SOURCES, "scores")
        check_values(out, "target", TARGETS, "scores")
        values = out.column("value")
        finite = pc.or_kleene(pc.is_finite(values), pc.is_null(values))
        if not pc.all(finite).as_py():
            raise ValueError("scores: value holds NaN or an infinity")
    return out


def empty_scores() -> pa.Table:
    """A table of no scores."""
    return SCORE_SCHEMA.empty_table()


def is_scores(table: pa.Table) -> bool:
    """Whether ``table`` is a batch of scores (by its schema's metadata or columns)."""
    meta = table.schema.metadata or {}
    if meta.get(TABLE_KEY) == b"scores":
        return True
    return "score_id" in table.column_names and "target" in table.column_names
