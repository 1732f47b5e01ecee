"""``GET /api/agents/graph``: the agents' coordination graph of a session or a
time range (``llamonitor agents --json``; definitions in docs/agents.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from llamonitor.server._aggregates import _no_nan
from llamonitor.server._deps import state
from llamonitor.server._errors import BadParameter
from llamonitor.server._query import MAX_TEXT, parse_when
from llamonitor.storage._duckdb import Filters

router = APIRouter(tags=["agents"])

NO_NUL = r"^[^\x00]*$"


@router.get("/api/agents/graph", response_model=dict[str, Any])
def agents_graph(
    request: Request,
    session_id: Annotated[
        str | None, Query(max_length=MAX_TEXT, pattern=NO_NUL, description="Only this session")
    ] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="ISO time or a duration ago (1d)")
    ] = None,
    until: Annotated[str | None, Query(max_length=64)] = None,
    project: Annotated[str | None, Query(max_length=MAX_TEXT, pattern=NO_NUL)] = None,
) -> JSONResponse:
    """Agents (invocations, time, cost, errors, share of the critical path) as nodes,
    handoffs (count, latency, success rate) as edges, loops and the longest chain."""
    from llamonitor.analysis import _agents

    start, end = parse_when("since", since), parse_when("until", until)
    if start is not None and end is not None and end < start:
        raise BadParameter("until", "is before since")
    filters = Filters(
        session_id=session_id or None, since=start, until=end, project_name=project or None
    )
    with state(request).store.query() as q:
        try:
            graph = _agents.graph_of(q, filters)
        except ValueError as exc:
            raise BadParameter("since", str(exc).removeprefix("since: ")) from None
    from llamonitor.cli._render import dumps

    return JSONResponse(_no_nan(json.loads(dumps(graph.to_dict()))))
