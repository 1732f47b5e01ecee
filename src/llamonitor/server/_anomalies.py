"""``GET /api/anomalies``: the anomalies of the signals (``llamonitor anomalies --json``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from llamonitor.server._deps import ServerState, state
from llamonitor.server._errors import BadParameter
from llamonitor.server._query import parse_when

router = APIRouter(tags=["anomalies"])

DEFAULT_SINCE = timedelta(days=7)
MAX_BUCKETS = 5000
"""At most this many buckets judged per request (the range over the bucket width)."""


@router.get("/api/anomalies")
async def anomalies(
    s: Annotated[ServerState, Depends(state)],
    since: Annotated[str | None, Query(max_length=64)] = None,
    bucket_seconds: Annotated[int, Query(ge=60, le=86_400)] = 3600,
    by: Annotated[list[str] | None, Query(max_length=4)] = None,
    signal: Annotated[list[str] | None, Query(max_length=5)] = None,
) -> list[dict[str, Any]]:
    """Spikes, dips, level shifts and drifts since ``since`` (default 7 days ago),
    per ``by`` (default ``model``; ``none``: all spans), each with its figures."""
    from llamonitor.analysis.anomalies import SIGNALS, detect_anomalies

    current = datetime.now(timezone.utc)
    start = parse_when("since", since) or current - DEFAULT_SINCE
    if (current - start).total_seconds() / bucket_seconds > MAX_BUCKETS:
        raise BadParameter(
            "since", f"more than {MAX_BUCKETS} buckets: use a larger bucket_seconds"
        )
    dims = tuple(d for d in (by or ["model"]) if d != "none")
    try:
        found = await run_in_threadpool(
            detect_anomalies, s.store, since=start, bucket_seconds=bucket_seconds,
            signals=tuple(signal or SIGNALS), group_by=dims, now=current,
        )
    except ValueError as exc:
        raise BadParameter(str(exc).split(":", 1)[0], str(exc).split(":", 1)[-1].strip()) from None
    return [a.to_dict() for a in found]
