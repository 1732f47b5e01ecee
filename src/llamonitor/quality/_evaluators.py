"""Evaluators: functions of a stored span that give a score, and the run that
writes their scores over a time range of the store.

An evaluator is called with one span (a dict of its stored columns) and
returns an :class:`Outcome`, or ``None`` to leave the span unscored (an
evaluator of the answer's text and a span without captured text). Built in,
by spec (``llamonitor eval run SPEC``):

==================  ===========================================================
``valid_json``      1 if the completion parses as JSON, else 0
``regex:PATTERN``   1 if the completion matches ``PATTERN`` (``re.search``)
``length:MAX``      1 if the completion has at most MAX characters
``length:MIN-MAX``  1 if it has MIN to MAX characters
``latency:2s``      1 if the span took at most 2 s (``ms``, ``s``, ``m``)
``cost:0.01``       1 if the span cost at most $0.01
``refusal``         1 if the completion holds a refusal phrase (label refusal)
``module:function`` your function of the span (see :func:`outcome_of`)
==================  ===========================================================

The scores are on the span (its trace beside it), ``source`` ``code`` (an
LLM judge: ``llm``), ``evaluator`` the spec: so a run again over the same
spans replaces its scores instead of adding to them.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llamonitor.schema._scores import make_score, scores_table

logger = logging.getLogger("llamonitor.quality")

BATCH_SCORES = 1000
"""Scores written to the store at a time during a run."""

REFUSAL_PHRASES = (
    "i can't help with",
    "i cannot help with",
    "i can't assist",
    "i cannot assist",
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "i am unable to",
    "i'm unable to",
    "i won't be able to",
    "as an ai language model",
    "i must decline",
    "i can't provide",
    "i cannot provide",
)
"""Lower-case phrases of a refusal (matched anywhere in the completion)."""


@dataclass(frozen=True)
class Outcome:
    """What an evaluator says of one span."""

    value: float | None = None
    label: str | None = None
    comment: str | None = None


@dataclass
class Evaluator:
    """A named function of a span.

    Args:
        name: the scores' name.
        fn: span dict -> :class:`Outcome` (or what :func:`outcome_of` accepts).
        spec: what made it (``regex:^ok``): the scores' ``evaluator``.
        source: ``code`` or ``llm``.
        needs_text: only spans with a captured completion are given to it.
    """

    name: str
    fn: Callable[[dict[str, Any]], Any]
    spec: str
    source: str = "code"
    needs_text: bool = False

    def __call__(self, span: dict[str, Any]) -> Outcome | None:
        if self.needs_text and not isinstance(span.get("completion_content"), str):
            return None
        return outcome_of(self.fn(span))


def outcome_of(result: Any) -> Outcome | None:
    """A user function's result as an :class:`Outcome`: ``None`` (no score), a
    bool or number (the value), a string (the label), a ``(value, comment)``
    pair, a dict with ``value``/``label``/``comment``, or an ``Outcome``.

    Raises:
        ValueError: anything else.
    """
    if result is None or isinstance(result, Outcome):
        return result
    if isinstance(result, bool):
        return Outcome(1.0 if result else 0.0)
    if isinstance(result, (int, float)):
        return Outcome(float(result))
    if isinstance(result, str):
        return Outcome(label=result)
    if isinstance(result, tuple) and len(result) == 2:
        first = outcome_of(result[0]) or Outcome()
        return Outcome(first.value, first.label, None if result[1] is None else str(result[1]))
    if isinstance(result, dict):
        unknown = set(result) - {"value", "label", "comment"}
        if not unknown:
            value = result.get("value")
            return Outcome(
                None if value is None else float(value), result.get("label"), result.get("comment")
            )
    raise ValueError(
        f"an evaluator returned {type(result).__name__}: return None, a bool, a number, a "
        "label, (value, comment) or a dict of value/label/comment"
    )


def _text(span: dict[str, Any]) -> str:
    return str(span.get("completion_content") or "")


def _valid_json(span: dict[str, Any]) -> Outcome:
    text = _text(span).strip()
    if text.startswith("```"):  # a fenced block: its content
        text = text.strip("`").removeprefix("json").strip()
    try:
        json.loads(text)
    except ValueError as exc:
        return Outcome(0.0, comment=f"not JSON: {exc}"[:200])
    return Outcome(1.0)


def _regex(pattern: str) -> Callable[[dict[str, Any]], Outcome]:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"regex:{pattern}: {exc}") from None
    return lambda span: Outcome(1.0 if compiled.search(_text(span)) else 0.0)


def _length(arg: str) -> Callable[[dict[str, Any]], Outcome]:
    lo_text, sep, hi_text = arg.partition("-")
    try:
        lo, hi = (int(lo_text), int(hi_text)) if sep else (0, int(lo_text))
    except ValueError:
        raise ValueError(f"length:{arg}: give MAX or MIN-MAX characters") from None

    def check(span: dict[str, Any]) -> Outcome:
        n = len(_text(span))
        return Outcome(1.0 if lo <= n <= hi else 0.0, comment=f"{n} characters")

    return check


def _seconds(arg: str) -> float:
    text = arg.strip().lower()
    for unit, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(unit):
            text, scale = text[: -len(unit)], factor
            break
    else:
        scale = 1.0
    try:
        value = float(text) * scale
    except ValueError:
        raise ValueError(f"latency:{arg}: give a duration (800ms, 2s, 1m)") from None
    if not value > 0:
        raise ValueError(f"latency:{arg}: the limit must be above 0")
    return value


def _latency(arg: str) -> Callable[[dict[str, Any]], Outcome | None]:
    limit_ms = _seconds(arg) * 1000

    def check(span: dict[str, Any]) -> Outcome | None:
        ms = span.get("duration_ms")
        if not isinstance(ms, (int, float)):
            return None
        return Outcome(1.0 if ms <= limit_ms else 0.0, comment=f"{ms:.0f} ms")

    return check


def _cost(arg: str) -> Callable[[dict[str, Any]], Outcome | None]:
    try:
        ceiling = float(arg.lstrip("$"))
    except ValueError:
        raise ValueError(f"cost:{arg}: give a ceiling in USD (0.01)") from None

    def check(span: dict[str, Any]) -> Outcome | None:
        cost = span.get("cost_usd")
        if not isinstance(cost, (int, float)):
            return None
        return Outcome(1.0 if cost <= ceiling else 0.0, comment=f"${cost:.6f}")

    return check


def _refusal(span: dict[str, Any]) -> Outcome:
    text = _text(span).lower().replace("\u2019", "'")
    for phrase in REFUSAL_PHRASES:
        if phrase in text:
            return Outcome(1.0, "refusal", comment=f"says {phrase!r}")
    return Outcome(0.0, "answer")


_BUILT_IN: dict[str, tuple[str, bool, Callable[[str], Callable[[dict[str, Any]], Any]] | None]] = {
    # spec name -> (score name, needs the completion text, factory of its argument)
    "valid_json": ("valid_json", True, None),
    "refusal": ("refusal", True, None),
    "regex": ("regex", True, _regex),
    "length": ("length", True, _length),
    "latency": ("latency_slo", False, _latency),
    "cost": ("cost_ceiling", False, _cost),
}
_PLAIN = {"valid_json": _valid_json, "refusal": _refusal}


def evaluator_by_name(spec: str, name: str | None = None) -> Evaluator:
    """The evaluator of ``spec`` (see the module doc), its scores named ``name``
    (default: the evaluator's own).

    Raises:
        ValueError: an unknown built-in, a bad argument, or a ``module:function``
            that cannot be imported or is not callable (the message says which).
    """
    head, sep, arg = spec.partition(":")
    if head in _BUILT_IN:
        default, needs_text, factory = _BUILT_IN[head]
        if factory is None:
            if sep:
                raise ValueError(f"{spec}: {head} takes no argument")
            fn: Callable[[dict[str, Any]], Any] = _PLAIN[head]
        else:
            if not arg:
                raise ValueError(f"{spec}: {head} needs an argument ({head}:...)")
            fn = factory(arg)
        return Evaluator(name or default, fn, spec, needs_text=needs_text)
    if not sep:
        raise ValueError(
            f"{spec!r}: not an evaluator: one of {sorted(_BUILT_IN)} (some take :ARG), "
            "or module:function"
        )
    try:
        module = importlib.import_module(head)
    except Exception as exc:
        raise ValueError(f"{spec}: cannot import {head}: {exc}") from None
    target = getattr(module, arg, None)
    if isinstance(target, Evaluator):
        return target if name is None else Evaluator(name, target.fn, target.spec, target.source,
                                                     target.needs_text)
    if not callable(target):
        raise ValueError(f"{spec}: {head} has no function {arg!r}")
    return Evaluator(name or arg, target, spec, source=getattr(target, "score_source", "code"))


@dataclass
class EvalRun:
    """What a run did."""

    evaluator: str
    spans: int = 0
    scored: int = 0
    skipped: int = 0
    errors: int = 0
    written: int = 0
    first_error: str | None = None
    values: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        mean = sum(self.values) / len(self.values) if self.values else None
        return {
            "evaluator": self.evaluator,
            "spans": self.spans,
            "scored": self.scored,
            "skipped": self.skipped,
            "errors": self.errors,
            "written": self.written,
            "mean": mean,
            "first_error": self.first_error,
        }


def run_evaluator(
    evaluator: Evaluator,
    spans: Iterable[dict[str, Any]],
    write: Callable[[Any], int] | None,
    now: datetime | None = None,
) -> EvalRun:
    """Score each span with ``evaluator``; ``write`` (a table of scores -> the
    number written) stores them in batches (``None``: a dry run).

    An evaluator that raises on a span is counted in ``errors`` (the first
    message kept) and the run goes on; a score it cannot give (a NaN) too.
    """
    run = EvalRun(evaluator.spec)
    batch: list[dict[str, Any]] = []
    for span in spans:
        run.spans += 1
        try:
            outcome = evaluator(span)
            if outcome is None:
                run.skipped += 1
                continue
            row = make_score(
                evaluator.name,
                outcome.value,
                label=outcome.label,
                comment=outcome.comment,
                span_id=span.get("span_id"),
                span_trace_id=span.get("trace_id"),
                source=evaluator.source,
                evaluator=evaluator.spec[:200],
                timestamp=now,
            )
        except Exception as exc:
            run.errors += 1
            if run.first_error is None:
                run.first_error = f"span {span.get('span_id')}: {type(exc).__name__}: {exc}"
            continue
        run.scored += 1
        if row["value"] is not None:
            run.values.append(row["value"])
        batch.append(row)
        if write is not None and len(batch) >= BATCH_SCORES:
            run.written += write(scores_table(batch))
            batch = []
    if write is not None and batch:
        run.written += write(scores_table(batch))
    return run
