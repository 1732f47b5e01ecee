"""The ``llamonitor`` command line, run in-process (CliRunner) and as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

import llamonitor
from _helpers import T0, span_row
from llamonitor import MonitorConfig, StorageConfig, monitor_llm, monitoring_session
from llamonitor.cli import _options, cli
from llamonitor.cli._demo import png_bytes
from llamonitor.storage import parquet
from llamonitor.storage.jsonl import JSONLBackend
from llamonitor.storage.parquet import ParquetBackend


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


row = span_row


def write(root: Path, rows: list[dict[str, Any]]) -> None:
    backend = ParquetBackend(StorageConfig(output_dir=root))
    asyncio.run(backend.write_table(pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA)))


@pytest.fixture
def recorded(store: Path) -> Path:
    """Real decorated calls: sessions 'alpha' and 'beta', an agent -> tool -> llm chain."""

    @monitor_llm("answer", measure_text=True)
    def answer(q: str) -> str:
        time.sleep(0.002)
        return f"an answer to {q}"

    @monitor_llm("lookup", operation_type="tool")
    def lookup(q: str) -> str:
        if q == "fail":
            raise TimeoutError("lookup timed out")
        return answer(q)

    @monitor_llm("agent", operation_type="agent_workflow")
    def agent(q: str) -> str:
        try:
            return lookup(q)
        except TimeoutError:
            return "sorry"

    llamonitor.initialize_monitoring(MonitorConfig.for_local_dev(store))
    with monitoring_session("alpha"):
        agent("one")
        agent("fail")
    with monitoring_session("beta"):
        agent("two")
    assert llamonitor.shutdown_monitoring(10)
    return store


def test_events_json_returns_exactly_the_session(recorded: Path) -> None:
    """`events --session X --json` gives all spans of X and only those, as JSON."""
    result = run("events", "--dir", recorded, "--session", "alpha", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 5  # agent+lookup+answer, agent+lookup(failed)
    assert {r["session_id"] for r in rows} == {"alpha"}
    assert sum(r["error"] for r in rows) == 1
    expected = {r["event_id"] for r in parquet.query(recorded).events("alpha", limit=None)}
    assert {r["event_id"] for r in rows} == expected
    datetime.fromisoformat(rows[0]["timestamp"])


def test_events_table_and_filters(recorded: Path) -> None:
    """The table lists spans; --operation, --limit and --trace narrow it."""
    result = run("events", "--dir", recorded)
    assert result.exit_code == 0
    for expected in ("agent", "lookup", "TimeoutError"):
        assert expected in result.stdout
    tools = json.loads(run("events", "--dir", recorded, "--operation", "lookup", "--json").stdout)
    assert [r["operation_name"] for r in tools] == ["lookup"] * 3
    assert len(json.loads(run("events", "--dir", recorded, "--limit", "2", "--json").stdout)) == 2
    trace_id = tools[0]["trace_id"]
    in_trace = json.loads(run("events", "--dir", recorded, "--trace", trace_id, "--json").stdout)
    assert {r["trace_id"] for r in in_trace} == {trace_id}


def test_events_time_window(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--since/--until take relative durations and ISO times (naive = UTC)."""
    write(store, [row(i, timestamp=T0 + timedelta(minutes=i)) for i in range(60)])
    monkeypatch.setattr(_options, "now", lambda: T0 + timedelta(minutes=60))
    last15 = json.loads(run("events", "--dir", store, "--since", "15m", "--json").stdout)
    assert len(last15) == 15
    iso = run("events", "--dir", store, "--since", "2024-05-01T12:10", "--until",
              "2024-05-01T12:20:00Z", "--json", "--limit", "100")
    assert len(json.loads(iso.stdout)) == 10
    bad = run("events", "--dir", store, "--since", "last tuesday")
    assert bad.exit_code == 2 and "not a time" in bad.output


def test_trace_tree_shows_child_under_parent_with_durations(recorded: Path) -> None:
    """`trace ID` prints the tree: child indented under parent, each with its duration."""
    spans = parquet.query(recorded).events(session_id="beta", limit=None)
    trace_id = spans[0]["trace_id"]
    result = run("trace", trace_id, "--dir", recorded)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert trace_id in lines[0]

    def line_of(name: str) -> tuple[int, int]:
        (i,) = [i for i, line in enumerate(lines) if f"{name}  " in line]
        return i, lines[i].index(name)

    (agent_row, agent_col), (tool_row, tool_col), (llm_row, llm_col) = map(
        line_of, ("agent", "lookup", "answer")
    )
    assert agent_row < tool_row < llm_row and agent_col < tool_col < llm_col
    assert all(" ms" in lines[i] for i in (agent_row, tool_row, llm_row))
    assert "chars" in lines[llm_row]
    by_prefix = run("trace", trace_id[-10:], "--dir", recorded, "--json")  # as shown: its end
    tree = json.loads(by_prefix.stdout)
    assert tree["trace_id"] == trace_id and tree["span_count"] == 3
    (root,) = tree["spans"]
    assert root["operation_name"] == "agent"
    assert root["children"][0]["children"][0]["operation_name"] == "answer"


def test_trace_marks_errors_and_orphans(store: Path) -> None:
    """A failed span shows its error; a span whose parent is missing shows at the root."""
    write(store, [
        row(0, operation_name="root"),
        row(1, operation_name="broken", parent_span_id=f"{0:016x}", error=True,
            error_type="TimeoutError", error_message="took too long"),
        row(2, operation_name="stray", parent_span_id="ffffffffffffffff"),
    ])
    result = run("trace", "t" * 32, "--dir", store)
    assert result.exit_code == 0
    assert "✗ TimeoutError: took too long" in result.stdout
    stray = next(line for line in result.stdout.splitlines() if "stray" in line)
    root = next(line for line in result.stdout.splitlines() if "root" in line)
    assert "parent span missing" in stray and stray.index("stray") == root.index("root")


def test_trace_not_found_is_a_clear_error(recorded: Path) -> None:
    """An unknown trace exits 1 with a message, not a traceback."""
    result = run("trace", "nope", "--dir", recorded)
    assert result.exit_code == 1
    assert "trace 'nope' not found" in result.stderr
    assert "Traceback" not in result.output


def test_stats_percentiles_match_hand_computation(store: Path) -> None:
    """`stats --json` reports count, errors and interpolated percentiles per operation."""
    durations = [10.0, 20.0, 30.0, 40.0, 100.0]  # sorted; p95 at rank 3.8
    write(store, [row(i, operation_name="llm", duration_ms=d, error=i == 4)
                  for i, d in enumerate(durations)])
    write(store, [row(10, operation_name="tool", duration_ms=2.0)])
    result = run("stats", "--dir", store, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    llm = next(g for g in data["groups"] if g["operation_name"] == "llm")
    assert (llm["count"], llm["errors"], llm["error_rate"]) == (5, 1, 0.2)
    assert llm["p50_ms"] == pytest.approx(30.0)
    assert llm["p95_ms"] == pytest.approx(40.0 + 0.8 * 60.0)
    assert llm["p99_ms"] == pytest.approx(40.0 + 0.96 * 60.0)
    assert llm["max_ms"] == 100.0 and llm["avg_ms"] == pytest.approx(40.0)
    assert data["total"]["count"] == 6
    table = run("stats", "--dir", store)
    assert "llm" in table.stdout and "88.0" in table.stdout and "6 spans" in table.stdout
    by_type = json.loads(run("stats", "--dir", store, "--by", "operation_type", "--json").stdout)
    assert by_type["groups"][0]["operation_type"] == "llm_call"


def test_empty_store_is_not_an_error(tmp_path: Path) -> None:
    """An existing store without spans prints a message and exits 0."""
    for command in ("events", "stats"):
        result = run(command, "--dir", tmp_path)
        assert result.exit_code == 0
        assert "No spans recorded" in result.stdout
        assert run(command, "--dir", tmp_path, "--json").exit_code == 0
    assert json.loads(run("events", "--dir", tmp_path, "--json").stdout) == []


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    """A --dir that does not exist exits 1 with a message naming it."""
    for args in (["events"], ["stats"], ["trace", "abc"], ["compact"]):
        result = run(*args, "--dir", tmp_path / "nowhere")
        assert result.exit_code == 1, args
        assert "no store at" in result.stderr and "Traceback" not in result.output


def test_reads_a_jsonl_store(tmp_path: Path) -> None:
    """A directory holding a JSONLBackend file is read as a store too."""
    backend = JSONLBackend(StorageConfig(backend="jsonl", output_dir=tmp_path))
    asyncio.run(backend.initialize())
    rows = [row(0, session_id="a"), row(1, session_id="b", error=True)]
    asyncio.run(backend.write_table(pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA)))
    got = json.loads(run("events", "--dir", tmp_path, "--session", "b", "--json").stdout)
    assert [r["event_id"] for r in got] == ["e000001"]
    stats = json.loads(run("stats", "--dir", tmp_path, "--json").stdout)
    assert stats["total"]["errors"] == 1


def test_dir_defaults_to_the_environment(recorded: Path) -> None:
    """Without --dir the store comes from LLMOPS_STORAGE__OUTPUT_DIR."""
    result = run("events", "--json", env={"LLMOPS_STORAGE__OUTPUT_DIR": str(recorded)})
    assert len(json.loads(result.stdout)) == 8


def test_compact_command(store: Path) -> None:
    """`compact` merges files, keeps every row and reports before/after."""
    for b in range(12):
        write(store, [row(b * 3 + i) for i in range(3)])
    ids = sorted(r["event_id"] for r in parquet.query(store).events(limit=None))
    result = run("compact", "--dir", store, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["files_before"], summary["files_after"]) == (12, 1)
    assert summary["rows_before"] == summary["rows_after"] == 36
    assert sorted(r["event_id"] for r in parquet.query(store).events(limit=None)) == ids
    write(store, [row(100)])
    write(store, [row(101)])
    text = run("compact", "--dir", store)
    assert text.exit_code == 0 and "merged 3 files into 1" in text.stdout


def test_demo_records_a_realistic_workflow(store: Path) -> None:
    """The demo writes several sessions with errors, images, streams and text metrics."""
    result = run("demo", "--dir", store, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["flushed"] and summary["sessions"] == 6 and summary["traces"] == 12
    rows = parquet.query(store).events(limit=None)
    assert len(rows) == summary["spans"] > 50
    assert len({r["session_id"] for r in rows}) == 6
    assert {"agent_workflow", "tool", "llm_call", "image_generation"} <= {
        r["operation_type"] for r in rows
    }
    failed = [r for r in rows if r["error"]]
    assert {"TimeoutError", "PermissionError"} <= {r["error_type"] for r in failed}
    images = [r for r in rows if r["image_count"]]
    assert images and all(r["image_width"] and r["image_format"] == "PNG" for r in images)
    streams = [r for r in rows if r["operation_name"] == "llm.answer_stream"]
    assert streams and all(
        r["stream_item_count"] and r["time_to_first_token_ms"] is not None for r in streams
    )
    assert all(r["text_char_count"] for r in rows if r["operation_name"] == "llm.summarize")
    roots = [r for r in rows if r["parent_span_id"] is None]
    assert {r["operation_name"] for r in roots} == {"orchestrator.turn"}
    llm = [r for r in rows if r["operation_type"] == "llm_call"]
    assert llm and all(r["input_tokens"] and r["cost_usd"] for r in llm)
    assert {r["provider"] for r in llm} == {"openai", "anthropic"}
    assert all(r["project_name"] == "llamonitor-demo" for r in rows)
    guard = [r for r in rows if r["operation_name"] == "guardrail.check" and r["input_tokens"]]
    assert guard and {r["cost_source"] for r in guard} == {"override"}
    by_model = {g["model"]: g for g in summary["by_model"]}
    assert set(by_model) == {"gpt-4o", "gpt-4o-mini", "claude-3-5-haiku-latest", "acme-guard-1"}
    assert summary["total"]["cost_usd"] == pytest.approx(
        sum(r["cost_usd"] or 0 for r in rows)
    )
    text = run("demo", "--dir", store)
    assert text.exit_code == 0
    assert "Recorded" in text.stdout and "orchestrator.turn" in text.stdout
    assert "tokens and cost by model" in text.stdout and "gpt-4o-mini" in text.stdout


def test_stats_by_model_and_provider_totals_tokens_and_cost(store: Path) -> None:
    """Sums computed by hand from the rows: per group and in the footer row."""
    write(
        store,
        [
            span_row(0, model="gpt-4o", provider="openai", input_tokens=100, output_tokens=10,
                     total_tokens=110, cost_usd=0.25),
            span_row(1, model="gpt-4o", provider="openai", input_tokens=50, output_tokens=5,
                     total_tokens=55, cost_usd=0.5),
            span_row(2, model="claude-x", provider="anthropic", input_tokens=7, output_tokens=3,
                     total_tokens=10),  # no known price
            span_row(3, operation_name="tool"),
        ],
    )
    result = run("stats", "--dir", store, "--by", "model", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    groups = {g["model"]: g for g in out["groups"]}
    assert (groups["gpt-4o"]["input_tokens"], groups["gpt-4o"]["output_tokens"]) == (150, 15)
    assert groups["gpt-4o"]["cost_usd"] == pytest.approx(0.75)
    assert groups["claude-x"]["cost_usd"] is None and groups["claude-x"]["unpriced"] == 1
    assert out["total"]["total_tokens"] == 175 and out["total"]["llm_calls"] == 3
    text = run("stats", "--dir", store, "--by", "provider")
    assert text.exit_code == 0, text.output
    assert "tokens and cost by provider" in text.stdout
    assert "$0.750 " in text.stdout and "(+1 unpriced)" in text.stdout


def test_png_encoder_makes_valid_images() -> None:
    """The demo's PNG bytes decode with Pillow at the requested size."""
    from PIL import Image

    with Image.open(__import__("io").BytesIO(png_bytes(37, 21, hue=9))) as img:
        assert img.size == (37, 21) and img.format == "PNG"
        img.load()


def test_real_process_demo_then_events(tmp_path: Path) -> None:
    """`python -m llamonitor.cli` runs as a program: demo, then events --json."""
    store = tmp_path / "data"
    env = {**os.environ, "COLUMNS": "120"}
    demo = subprocess.run(
        [sys.executable, "-m", "llamonitor.cli", "demo", "--dir", str(store), "--json"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert demo.returncode == 0, demo.stderr
    summary = json.loads(demo.stdout)
    session = summary["session_ids"][0]
    events = subprocess.run(
        [sys.executable, "-m", "llamonitor.cli", "events", "--dir", str(store),
         "--session", session, "--json", "--limit", "1000"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert events.returncode == 0, events.stderr
    rows = json.loads(events.stdout)
    assert rows and {r["session_id"] for r in rows} == {session}
    missing = subprocess.run(
        [sys.executable, "-m", "llamonitor.cli", "stats", "--dir", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert missing.returncode == 1 and "no store at" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert pq.ParquetFile(parquet.data_files(store)[0]).metadata.num_rows > 0


def test_demo_into_a_path_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    """`demo --dir <a file>` names the setting and exits 1, no traceback."""
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    result = run("demo", "--dir", target)
    assert result.exit_code == 1
    assert "storage.output_dir" in result.output
    assert "Traceback" not in result.output
