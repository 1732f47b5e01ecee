"""The filters every span-reading endpoint shares (spans, traces, sessions,
aggregates, the live tail), turned into DuckDB SQL over ``{rel}``, into the
pushdown a SQL store applies itself, and into a predicate on one row (the live
tail); and the opaque cursors of keyset pagination.

Every value reaches SQL as a ``?`` parameter; column names come from this
module only.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import Query

from llamonitor.server._errors import BadParameter
from llamonitor.storage._duckdb import Filters

__all__ = [
    "SpanFilters",
    "decode_cursor",
    "encode_cursor",
    "parse_when",
    "span_filters",
]

MAX_TEXT = 512
"""Longest value of a text filter (ids, names, the search text)."""

Status = Literal["error", "ok"]


def parse_when(parameter: str, value: str | None) -> datetime | None:
    """An ISO time (naive = UTC) or a duration ago (``15m``, ``2h``, ``1d``, ``1w``).

    Raises:
        BadParameter: neither form (names ``parameter``).
    """
    if value is None or value == "":
        return None
    from llamonitor.cli._options import parse_time

    try:
        when = parse_time(value).astimezone(timezone.utc)
    except (ValueError, IndexError, OverflowError):
        raise BadParameter(
            parameter,
            f"{value[:60]!r} is not a time: use an ISO time (2024-05-01T12:00Z) "
            "or a duration ago (30s, 15m, 2h, 1d, 1w), between the years 2 and 9998",
        ) from None
    if not 1 < when.year < 9999:  # every store holds these; PostgreSQL's bounds differ
        raise BadParameter(parameter, f"{value[:60]!r} is outside the years 2 to 9998")
    return when


@dataclass(frozen=True)
class SpanFilters:
    """What a request keeps. Text filters are exact; ``operation`` is a glob when
    it holds ``*``, ``?`` or ``[``; ``q`` is a case-insensitive substring of the
    span's name, error message, prompt or completion. ``until`` is exclusive."""

    session: str | None = None
    trace: str | None = None
    operation: str | None = None
    operation_type: str | None = None
    model: str | None = None
    provider: str | None = None
    agent: str | None = None
    project: str | None = None
    status: Status | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_duration_ms: float | None = None
    max_duration_ms: float | None = None
    min_cost_usd: float | None = None
    max_cost_usd: float | None = None
    q: str | None = None

    _EXACT = (
        ("session", "session_id"),
        ("trace", "trace_id"),
        ("operation_type", "operation_type"),
        ("model", "model"),
        ("provider", "provider"),
        ("agent", "agent_name"),
        ("project", "project_name"),
    )

    def pushdown(self) -> Filters:
        """The part a SQL store applies in its own ``WHERE`` (the rest is
        applied by DuckDB over the rows it sends)."""
        return Filters(
            session_id=self.session,
            trace_id=self.trace,
            operation=self.operation,
            since=self.since,
            until=self.until,
            project_name=self.project,
        )

    def where(self, prefix: str = "WHERE") -> tuple[str, list[Any]]:
        """``WHERE ...`` (or ``""``) over ``{rel}``'s columns, and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        for attr, column in self._EXACT:
            value = getattr(self, attr)
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.operation is not None:
            glob = any(c in self.operation for c in "*?[")
            clauses.append("operation_name GLOB ?" if glob else "operation_name = ?")
            params.append(self.operation)
        if self.status == "error":
            clauses.append("error")
        elif self.status == "ok":
            clauses.append("error IS NOT TRUE")
        if self.since is not None:
            clauses.append('"timestamp" >= ?')
            params.append(self.since)
        if self.until is not None:
            clauses.append('"timestamp" < ?')
            params.append(self.until)
        for bound, column, op in (
            (self.min_duration_ms, "duration_ms", ">="),
            (self.max_duration_ms, "duration_ms", "<="),
            (self.min_cost_usd, "cost_usd", ">="),
            (self.max_cost_usd, "cost_usd", "<="),
        ):
            if bound is not None:
                clauses.append(f"{column} {op} ?")
                params.append(bound)
        if self.q:
            needle = self.q.lower()
            clauses.append(
                "(contains(lower(operation_name), ?) "
                "OR contains(lower(coalesce(error_message, '')), ?) "
                "OR contains(lower(coalesce(prompt_content, '')), ?) "
                "OR contains(lower(coalesce(completion_content, '')), ?))"
            )
            params.extend([needle] * 4)
        if not clauses:
            return "", []
        return f"{prefix} " + " AND ".join(clauses), params

    def matches(self, row: dict[str, Any]) -> bool:
        """Whether one span (a row as the API returns it) passes; for the live tail."""
        from fnmatch import fnmatchcase

        column_of = {"session": "session_id", "trace": "trace_id", "agent": "agent_name",
                     "project": "project_name"}
        for attr, column in self._EXACT:
            value = getattr(self, attr)
            if value is not None and row.get(column_of.get(attr, column)) != value:
                return False
        if self.operation is not None:
            name = row.get("operation_name") or ""
            if any(c in self.operation for c in "*?["):
                if not fnmatchcase(name, self.operation):
                    return False
            elif name != self.operation:
                return False
        failed = bool(row.get("error"))
        if (self.status == "error" and not failed) or (self.status == "ok" and failed):
            return False
        ts = row.get("timestamp")
        if isinstance(ts, str):
            ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        if self.since is not None and (ts is None or ts < self.since):
            return False
        if self.until is not None and (ts is None or ts >= self.until):
            return False
        for low, high, column in (
            (self.min_duration_ms, self.max_duration_ms, "duration_ms"),
            (self.min_cost_usd, self.max_cost_usd, "cost_usd"),
        ):
            if low is None and high is None:
                continue
            value = row.get(column)
            if value is None or (low is not None and value < low) or (
                high is not None and value > high
            ):
                return False
        if self.q:
            needle = self.q.lower()
            texts = (row.get(c) for c in ("operation_name", "error_message", "prompt_content",
                                          "completion_content"))
            if not any(needle in t.lower() for t in texts if isinstance(t, str)):
                return False
        return True

    def as_params(self) -> dict[str, str]:
        """The filters as query parameters (for links and the live tail)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.name.startswith("_"):
                continue
            out[f.name] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out


Text = Annotated[str | None, Query(max_length=MAX_TEXT)]
Number = Annotated[float | None, Query(ge=0, le=1e12)]


def _finite(name: str, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise BadParameter(name, "must be a finite number")
    return value


def span_filters(
    session: Text = None,
    trace: Text = None,
    operation: Annotated[
        str | None, Query(max_length=MAX_TEXT, description="A name, or a glob: tool.*")
    ] = None,
    operation_type: Text = None,
    model: Text = None,
    provider: Text = None,
    agent: Text = None,
    project: Text = None,
    status: Annotated[Status | None, Query(description="error or ok")] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="ISO time or a duration ago: 15m, 2h, 1d")
    ] = None,
    until: Annotated[str | None, Query(max_length=64, description="ISO time or a duration ago")]
    = None,
    min_duration_ms: Number = None,
    max_duration_ms: Number = None,
    min_cost_usd: Number = None,
    max_cost_usd: Number = None,
    q: Annotated[
        str | None,
        Query(max_length=MAX_TEXT, description="Text in the name, error, prompt or completion"),
    ] = None,
) -> SpanFilters:
    """The FastAPI dependency: the query parameters, checked.

    Raises:
        BadParameter: a time that is not one, a range upside down, a NUL in a
            text (no SQL store can hold one).
    """
    texts = dict(session=session, trace=trace, operation=operation,
                 operation_type=operation_type, model=model, provider=provider, agent=agent,
                 project=project, q=q)
    for name, text in texts.items():
        if text is not None and "\x00" in text:
            raise BadParameter(name, "must not hold a NUL character")
    f = SpanFilters(
        session=session or None,
        trace=trace or None,
        operation=operation or None,
        operation_type=operation_type or None,
        model=model or None,
        provider=provider or None,
        agent=agent or None,
        project=project or None,
        status=status,
        since=parse_when("since", since),
        until=parse_when("until", until),
        min_duration_ms=_finite("min_duration_ms", min_duration_ms),
        max_duration_ms=_finite("max_duration_ms", max_duration_ms),
        min_cost_usd=_finite("min_cost_usd", min_cost_usd),
        max_cost_usd=_finite("max_cost_usd", max_cost_usd),
        q=q or None,
    )
    for low, high, name in (
        (f.since, f.until, "until"),
        (f.min_duration_ms, f.max_duration_ms, "max_duration_ms"),
        (f.min_cost_usd, f.max_cost_usd, "max_cost_usd"),
    ):
        if low is not None and high is not None and high < low:  # type: ignore[operator]
            raise BadParameter(name, "is before/below its lower bound")
    return f


def encode_cursor(values: list[Any]) -> str:
    """An opaque cursor holding the sort key of the last row of a page."""
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    raw = json.dumps(plain, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: tuple[type, ...]) -> list[Any]:
    """The values :func:`encode_cursor` put in ``cursor``, each of its ``kinds``
    (``datetime``, ``float``, ``int``, ``str``; ``None`` passes as null).

    Raises:
        BadParameter: not a cursor of this endpoint (names ``cursor``).
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError
        out: list[Any] = []
        for value, kind in zip(values, kinds, strict=True):
            if value is None:
                out.append(None)
            elif kind is datetime:
                t = datetime.fromisoformat(value)
                out.append(t if t.tzinfo else t.replace(tzinfo=timezone.utc))
            elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append(float(value))
            elif (kind is int and isinstance(value, int) and not isinstance(value, bool)) or (
                kind is str and isinstance(value, str)
            ):
                out.append(value)
            else:
                raise ValueError
        return out
    except (ValueError, TypeError):
        raise BadParameter("cursor", "is not a cursor this endpoint returned") from None
