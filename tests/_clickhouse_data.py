"""Spans for the ClickHouse store tests, a SQLite peer holding the same rows,
and a comparison of what the two answer."""

from __future__ import annotations

import asyncio
import json
import math
import random
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
from click.testing import CliRunner, Result
from pydantic import SecretStr

from _helpers import span_row
from llamonitor.cli import cli
from llamonitor.schema._columns import SCHEMA
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import create_backend
from llamonitor.storage import sqlite as sqlite_store

UTC = timezone.utc
T0 = datetime(2026, 1, 30, 22, 0, 0, 123456, tzinfo=UTC)  # spans cross into February
MODELS = (
    ("openai", "gpt-4o", 2.5e-6),
    ("anthropic", "claude-sonnet-4", 3e-6),
    ("local", "llama", None),
)


def table_of(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def run(*args: Any) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def workload(n_traces: int = 40, seed: int = 3) -> list[dict[str, Any]]:
    """Sessions of agent traces over two days that cross a month boundary:
    an agent root, LLM calls (three providers, one unpriced), tools, retried
    failures, text with quotes, tabs and newlines, sampled spans."""
    rnd = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for k in range(n_traces):
        session = f"session-{k % 7}"
        trace = secrets.token_hex(16) if k else "ab" * 16
        start = T0 + timedelta(minutes=70 * k, microseconds=rnd.randrange(10**6))
        root = f"{len(rows):016x}"
        rows.append(
            span_row(
                len(rows),
                event_id=secrets.token_hex(8),
                session_id=session,
                trace_id=trace,
                span_id=root,
                operation_name="agent.run",
                operation_type="agent_workflow",
                timestamp=start,
                duration_ms=2000.0 + rnd.random() * 1000,
                project_name="p1" if k % 2 else "p2",
                agent_name="orchestrator",
            )
        )
        for j in range(rnd.randrange(2, 6)):
            provider, model, price = MODELS[rnd.randrange(3)]
            tokens_in, tokens_out = rnd.randrange(100, 4000), rnd.randrange(10, 800)
            failed = rnd.random() < 0.15
            attrs: dict[str, Any] = {"step": j, "note": 'a "quoted"\tvalue\nline 2'}
            if j == 1:
                attrs["llamonitor.sample_rate"] = 0.25
            rows.append(
                span_row(
                    len(rows),
                    event_id=secrets.token_hex(8),
                    session_id=session,
                    trace_id=trace,
                    span_id=f"{len(rows):016x}",
                    parent_span_id=root,
                    operation_name="llm.chat" if j % 2 == 0 else "tool.search",
                    operation_type="llm_call" if j % 2 == 0 else "tool",
                    timestamp=start + timedelta(milliseconds=100 * (j + 1), microseconds=j),
                    duration_ms=rnd.random() * 900,
                    error=True if failed else None,
                    error_type="TimeoutError" if failed else None,
                    error_message="timed out after 30 s\n(retrying)" if failed else None,
                    provider=provider,
                    model=model,
                    input_tokens=tokens_in,
                    output_tokens=tokens_out,
                    total_tokens=tokens_in + tokens_out,
                    cost_usd=None if price is None else (tokens_in + tokens_out) * price,
                    prompt_hash=f"h{rnd.randrange(5)}",
                    project_name="p1" if k % 2 else "p2",
                    custom_attributes=json.dumps(attrs),
                    text_char_count=rnd.randrange(1000),
                )
            )
    return rows


def sqlite_query(tmp_path: Path, rows: list[dict[str, Any]]) -> Any:
    config = StorageConfig(
        backend="sqlite",
        connection_string=SecretStr(f"sqlite:///{tmp_path / 'peer.db'}"),
        table_name="metric_events",
    )

    async def go() -> None:
        backend = create_backend(config)
        await backend.initialize()
        await backend.write_table(table_of(rows))
        await backend.close()

    asyncio.run(go())
    return sqlite_store.query(config)


def same(a: Any, b: Any, path: str = "") -> None:
    """Equal, floats to 1e-9 relative (sums over rows read in another order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)
