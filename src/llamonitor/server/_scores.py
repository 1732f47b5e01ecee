"""``GET /api/scores`` and ``POST /api/scores``: scores and feedback on traces,
spans and sessions, in the server's store (``output_dir/scores/`` or the
database's ``llamonitor_scores``).

The one route of the API that writes. A page of another site must not be able
to write through a user's browser, so a write passes :func:`write_guard`:

- with a server token, the token (the :class:`~._security.Guard` checks it for
  every request; its cookie is ``SameSite=Strict``, never sent cross-site);
- always: ``Content-Type: application/json`` and the header
  ``X-Llamonitor-Write: 1``. Neither can be sent cross-site without a CORS
  preflight, which this server never grants (it answers no ``OPTIONS`` and
  sends no ``Access-Control-Allow-*``), so a form, ``fetch`` in ``no-cors``
  mode or ``sendBeacon`` of another origin is refused;
- an ``Origin`` (or ``Sec-Fetch-Site``) the browser sends must be this
  server's own (same-origin).

A score whose trace, span or session the store does not hold is kept, and
the answer says ``target_found: false``.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from llamonitor.server._deps import state
from llamonitor.server._errors import ERROR_RESPONSES, BadParameter
from llamonitor.server._query import MAX_TEXT, parse_when

router = APIRouter(tags=["scores"])

WRITE_HEADER = "x-llamonitor-write"
MAX_SCORES_PER_REQUEST = 100
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_FIELDS = frozenset(
    {"name", "value", "label", "comment", "trace_id", "span_id", "session_id", "source",
     "evaluator", "metadata", "score_id"}
)


def score_storage(request: Request) -> Any:
    """The ``StorageConfig`` of the server's store, for its scores."""
    from llamonitor.server._metrics_api import metrics_storage

    return metrics_storage(request)


def _refuse(status: int, why: str) -> JSONResponse:
    return JSONResponse({"error": why, "parameter": None}, status, {"cache-control": "no-store"})


def write_guard(request: Request) -> JSONResponse | None:
    """``None`` if the request may write; else the refusal (see the module doc)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return _refuse(415, "a write must be Content-Type: application/json")
    if request.headers.get(WRITE_HEADER) != "1":
        return _refuse(403, f"a write must carry the header {WRITE_HEADER}: 1")
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return _refuse(403, f"cross-site write refused (Sec-Fetch-Site: {fetch_site[:40]})")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        return _refuse(403, "cross-origin write refused")
    return None


def _mark(request: Request, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with ``target_found`` (the server's span store asked once per kind)."""
    import pyarrow as pa

    from llamonitor.schema._scores import scores_table
    from llamonitor.storage._scores import mark_targets

    if not rows:
        return []
    store = state(request).store

    class _Spans:
        def run(self, sql: str, params: list[Any]) -> pa.Table | None:
            return store.run(sql, params)

    table = mark_targets(scores_table([{k: r[k] for k in r if k != "target_found"}
                                       for r in rows]), _Spans())
    return [_json_row(r) for r in table.to_pylist()]


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    import json
    from datetime import datetime, timezone

    out = dict(row)
    when = out.get("timestamp")
    if isinstance(when, datetime):
        out["timestamp"] = when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    meta = out.get("metadata")
    if isinstance(meta, str):
        try:
            out["metadata"] = json.loads(meta)
        except ValueError:
            out["metadata"] = {"_raw": meta}
    return out


def scores_of(request: Request, **filters: Any) -> list[dict[str, Any]]:
    """The store's scores passing ``filters`` (see ``ScoreFilters``), with
    ``target_found``; ``[]`` for a store that holds none."""
    from llamonitor.storage._scores import ScoreFilters, read_scores

    storage = score_storage(request)
    if storage is None:
        return []
    limit = int(filters.pop("limit", MAX_LIMIT))
    table = read_scores(storage, ScoreFilters(**filters)).slice(0, limit)
    return _mark(request, table.to_pylist())


Text = Annotated[str | None, Query(max_length=MAX_TEXT)]


@router.get("/api/scores", responses=ERROR_RESPONSES)
def list_scores(
    request: Request,
    trace_id: Text = None,
    span_id: Text = None,
    session_id: Text = None,
    name: Text = None,
    source: Text = None,
    evaluator: Text = None,
    since: Annotated[str | None, Query(max_length=64, description="ISO time or 1d ago")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Scores, newest first, each with ``target_found`` (is its target in the store?)."""
    return {
        "scores": scores_of(
            request,
            trace_id=trace_id,
            span_id=span_id,
            session_id=session_id,
            name=name,
            source=source,
            evaluator=evaluator,
            since=parse_when("since", since),
            limit=limit,
        )
    }


@router.post("/api/scores", responses=ERROR_RESPONSES, status_code=201)
async def post_scores(request: Request) -> Any:
    """Store one score (a JSON object) or several (``{"scores": [...]}``).

    Each has ``name``, ``value`` and/or ``label``, exactly one of ``trace_id``,
    ``span_id``, ``session_id``, and optionally ``comment``, ``source``
    (default ``human``), ``evaluator`` (default ``api``), ``metadata``.
    """
    refused = write_guard(request)
    if refused is not None:
        return refused
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # nesting past the parser is not JSON we take
        raise BadParameter("body", "not JSON") from None
    items = body.get("scores") if isinstance(body, dict) and "scores" in body else [body]
    if not isinstance(items, list) or not items or len(items) > MAX_SCORES_PER_REQUEST:
        raise BadParameter("scores", f"give 1 to {MAX_SCORES_PER_REQUEST} scores")
    rows = [_row(i, item) for i, item in enumerate(items)]
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_store, request, rows)


def _store(request: Request, rows: list[dict[str, Any]]) -> JSONResponse:
    from llamonitor.schema._scores import scores_table
    from llamonitor.storage._scores import write_scores

    storage = score_storage(request)
    if storage is None:
        return _refuse(503, "the server's store cannot hold scores")
    try:
        write_scores(storage, scores_table(rows))
    except Exception as exc:
        return _refuse(503, f"the store did not take the scores: {type(exc).__name__}")
    return JSONResponse({"scores": _mark(request, rows)}, 201, {"cache-control": "no-store"})


def _row(i: int, item: Any) -> dict[str, Any]:
    from llamonitor.schema._scores import make_score

    where = f"scores[{i}]"
    if not isinstance(item, dict):
        raise BadParameter(where, "a score is a JSON object")
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        raise BadParameter(f"{where}.{unknown[0]}", f"not a field of a score: {sorted(_FIELDS)}")
    try:
        return make_score(
            item.get("name"),
            item.get("value"),
            label=item.get("label"),
            trace_id=item.get("trace_id"),
            span_id=item.get("span_id"),
            session_id=item.get("session_id"),
            comment=item.get("comment"),
            source=item.get("source", "human"),
            evaluator=item.get("evaluator", "api"),
            metadata=item.get("metadata"),
            score_id_=item.get("score_id"),
        )
    except ValueError as exc:
        raise BadParameter(where, str(exc).removeprefix("score: ")) from None
