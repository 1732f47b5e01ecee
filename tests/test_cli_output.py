"""What the command line shows a new user: nothing cut, one way to write money,
plain JSON numbers, small durations, helpful errors; and how fast it starts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from rich.console import Console

import llamonitor
from _helpers import span_row
from llamonitor.analysis import _format, analyze
from llamonitor.cli import _app, _render, _spool, cli
from llamonitor.storage import parquet
from llamonitor.transport import spool as _spool_pkg

LONG_SESSION = "conversation-with-a-rather-long-identifier-0042"
LONG_ERROR = "upstream https://api.example.com/v1/chat/completions answered 503 after 3 retries"


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": "60", **(env or {})})


def write(store: Path, rows: list[dict[str, Any]]) -> Path:
    directory = store / "2024-05-01"
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA)
    pq.write_table(table, directory / f"events_{len(list(directory.iterdir()))}.parquet")
    return store


def _llm(i: int, **values: Any) -> dict[str, Any]:
    call: dict[str, Any] = dict(
        trace_id=f"t{i:031d}", span_id=f"{i:016x}", operation_name="llm.answer",
        provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=100,
        total_tokens=1100,
    )
    return span_row(i, **{**call, **values})


# -- nothing cut -------------------------------------------------------------------


def test_piped_events_show_every_cell_whole_on_one_line(store: Path) -> None:
    """Not a terminal (and COLUMNS=60): long session ids, error messages and
    measurements are shown whole, each span on one line, nothing ellipsized."""
    write(store, [
        span_row(0, session_id=LONG_SESSION, error=True, error_type="builtins.ConnectionError",
                 error_message=LONG_ERROR),
        span_row(1, session_id=LONG_SESSION, text_char_count=64_000, text_word_count=11_000,
                 stream_item_count=300, time_to_first_token_ms=412.0),
    ])
    result = run("events", "--dir", store)
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    lines = result.stdout.splitlines()
    assert any(LONG_SESSION in line and LONG_ERROR in line for line in lines)
    assert any("64,000 chars/11,000 words · 300 chunks, first after 412.0 ms" in line
               for line in lines)


def test_piped_spool_status_shows_the_whole_table(tmp_path: Path) -> None:
    """`spool status` into a pipe keeps every column and the store's full name."""
    out = tmp_path / "a-store-directory-with-a-long-name-for-the-application"
    directory = out / ".spool" / "parquet-0123456789abcdef"
    spool = _spool_pkg.Spool(directory, 10**9, {"backend": "parquet", "output_dir": str(out)})
    spool.append(pa.Table.from_pylist([span_row(i) for i in range(3)], schema=llamonitor.SCHEMA))
    spool.close()
    result = run("spool", "status", "--dir", out)
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    header = next(line for line in result.stdout.splitlines() if "sink" in line)
    for column in ("sink", "store", "records", "events", "size", "oldest (UTC)",
                   "newest (UTC)", "rejected rows", "corrupt"):
        assert column in header
    row = next(line for line in result.stdout.splitlines() if "parquet-0123456789abcdef" in line)
    assert f"parquet {out}" in row


def test_a_narrow_terminal_wraps_long_cells_instead_of_cutting_them() -> None:
    """On a 60-column terminal the events table folds long cells; every character stays."""
    rows = [span_row(0, session_id=LONG_SESSION, error=True, error_type="ConnectionError",
                     error_message=LONG_ERROR)]
    console = Console(width=60, force_terminal=True, color_system=None, record=True)
    console.print(_render.events_table(rows))
    text = console.export_text()
    assert "…" not in text
    # Folded cells interleave line by line; every character of them is still there.
    assert not Counter(re.sub(r"\s", "", LONG_SESSION + LONG_ERROR)) - Counter(text)


# -- money, JSON numbers, durations ----------------------------------------------------


def test_money_reads_the_same_in_stats_the_report_its_html_and_suggestions(store: Path) -> None:
    """One formatter: the cost of 2 calls, $0.0137, is written `$0.0137` by `stats`,
    the report (terminal and HTML) and the cheaper-model suggestion's sentence."""
    write(store, [_llm(0, cost_usd=0.00685), _llm(1, cost_usd=0.00685)])
    money = _format.usd(0.0137)
    assert money == "$0.0137"
    stats = run("stats", "--dir", store, "--by", "model")
    assert stats.exit_code == 0, stats.output
    assert money in stats.stdout
    report = run("report", "--dir", store)
    assert report.exit_code == 0, report.output
    assert f"Cost {money} over 2 priced LLM calls" in report.stdout
    (swap,) = [s for s in analyze(store).suggestions if s.kind == "cheaper_model"]
    assert f"instead of {money}:" in swap.detail
    assert _format.usd(swap.saving_usd) in report.stdout
    html = store.parent / "r.html"
    assert run("report", "--dir", store, "--html", html).exit_code == 0
    assert money in html.read_text()
    assert _render.usd is _format.usd  # the command line has no formatter of its own


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "$0"), (0.0023, "$0.00230"), (0.000318, "$0.000318"), (0.0145, "$0.0145"),
     (0.9996, "$1.00"), (12.345, "$12.35"), (1234.5, "$1,234.50"), (-0.0023, "-$0.00230"),
     (1e-12, "<$0.00000001"), (None, "-")],
)
def test_money_keeps_three_significant_digits_below_a_dollar(value: Any, text: str) -> None:
    """Small costs never round to $0.00 or $0.01; from $1 up, cents."""
    assert _format.usd(value) == text


def test_json_floats_carry_no_binary_noise(store: Path) -> None:
    """Sums such as 0.1 + 0.2 and 0.00069 + 0.00069 come out as 0.3 and 0.00138 in
    `stats --json`, `report --json` and the CSV, not 0.30000000000000004."""
    write(store, [_llm(0, cost_usd=0.1), _llm(1, cost_usd=0.2),
                  _llm(2, cost_usd=0.00069, model="m"), _llm(3, cost_usd=0.00069, model="m")])
    stats = run("stats", "--dir", store, "--by", "model", "--json")
    assert stats.exit_code == 0, stats.output
    groups = {g["model"]: g for g in json.loads(stats.stdout)["groups"]}
    assert groups["gpt-4o"]["cost_usd"] == 0.3 and groups["m"]["cost_usd"] == 0.00138
    assert "0000000" not in stats.stdout
    report = run("report", "--dir", store, "--json")
    assert report.exit_code == 0, report.output
    models = {g["key"]: g for g in json.loads(report.stdout)["cost"]["by_model"]}
    assert models["gpt-4o"]["cost_usd"] == 0.3 and models["m"]["cost_usd"] == 0.00138
    csv = run("report", "--dir", store, "--csv", "-")
    assert "cost,by_model,gpt-4o,cost_usd,0.3\n" in csv.stdout.replace("\r\n", "\n")


def test_sub_millisecond_spans_are_not_shown_as_zero(store: Path) -> None:
    """A 3.1 µs span reads 0.0031 ms in `stats` and `trace`, not 0.00 ms."""
    write(store, [span_row(i, duration_ms=0.0031, operation_name="cache.get") for i in range(3)])
    stats = run("stats", "--dir", store)
    assert stats.exit_code == 0, stats.output
    row = next(line for line in stats.stdout.splitlines() if "cache.get" in line)
    assert "0.0031" in row and "0.00 " not in row + " "
    trace = run("trace", "--dir", store, "t" * 8)
    assert "0.0031 ms" in trace.stdout
    assert _format.ms(0.0031) == "0.0031 ms" and _format.duration(0.42) == "0.42 ms"


# -- the demo, errors with a hint ------------------------------------------------------


def test_demo_into_a_store_that_has_spans_says_it_adds_to_them(store: Path) -> None:
    """A second demo run into the same directory says so, and keeps its sessions apart."""
    first = run("demo", "--dir", store, "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["session_ids"][0] == "alice-1"
    second = run("demo", "--dir", store)
    assert second.exit_code == 0, second.output
    assert f"{store} already holds 112 spans" in second.stderr.replace("\n", " ")
    assert "the store now holds 224" in second.stdout
    sessions = {r["session_id"] for r in parquet.query(store).events(limit=None)}
    assert len(sessions) == 12 and "alice-1" in sessions


def test_demo_rows_with_token_counts_say_where_they_come_from(store: Path) -> None:
    """Every demo span with token counts has a token_source."""
    assert run("demo", "--dir", store, "--json").exit_code == 0
    rows = [r for r in parquet.query(store).events(limit=None) if r["input_tokens"] is not None]
    assert rows and {r["token_source"] for r in rows} == {"user"}


def test_compact_on_a_missing_store_says_what_to_do(tmp_path: Path) -> None:
    """`compact --dir <nothing>` exits 1 and points at --dir and the demo."""
    result = run("compact", "--dir", tmp_path / "nowhere")
    assert result.exit_code == 1
    assert "no store at" in result.output and "--dir" in result.output
    assert "llamonitor demo" in result.output


def test_spool_status_of_a_missing_directory_is_an_error_not_an_empty_spool(
    tmp_path: Path,
) -> None:
    """A --dir (or --spool-dir) that does not exist is a mistake to point out (exit 1),
    not a spool with nothing in it; a store without a spool has nothing spooled."""
    missing = run("spool", "status", "--dir", tmp_path / "nowhere")
    assert missing.exit_code == 1 and "no store at" in missing.output
    assert "Nothing spooled" not in missing.output
    no_spool = run("spool", "status", "--spool-dir", tmp_path / "nospool")
    assert no_spool.exit_code == 1 and "no spool at" in no_spool.output
    replay = run("spool", "replay", "--dir", tmp_path / "nowhere")
    assert replay.exit_code == 1 and "no store at" in replay.output
    (tmp_path / "store").mkdir()
    empty = run("spool", "status", "--dir", tmp_path / "store")
    assert empty.exit_code == 0 and "Nothing spooled" in empty.output


def test_stats_by_an_unknown_column_lists_the_columns(store: Path) -> None:
    """`--by` still checks its value against the schema's string columns."""
    write(store, [span_row(0)])
    result = run("stats", "--dir", store, "--by", "nope")
    assert result.exit_code == 2
    assert "operation_name" in result.output and "model" in result.output


def test_the_command_lines_copies_of_store_constants_match_the_store() -> None:
    """Constants kept beside the commands (so --help imports nothing) equal the originals."""
    from llamonitor.schema.config import SPOOL_DIR_NAME

    assert _app.DEFAULT_TARGET_ROWS == parquet.DEFAULT_TARGET_ROWS
    assert _spool.SPOOL_DIR_NAME == SPOOL_DIR_NAME


# -- start-up --------------------------------------------------------------------------

HEAVY = ("duckdb", "pyarrow", "numpy", "rich", "pydantic", "pydantic_settings", "asyncio",
         "genai_prices", "llamonitor.instrument", "llamonitor.transport", "llamonitor.storage")


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_help_loads_only_the_command_line() -> None:
    """`llamonitor --help` imports none of the store, the SDK or the renderers:
    each command imports what it needs when it runs."""
    loaded = _loaded_after(
        "from llamonitor.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY)
    assert not loaded & set(HEAVY)


def test_import_llamonitor_is_lazy_and_every_public_name_resolves() -> None:
    """`import llamonitor` loads no engine; each public name (and subpackage) loads on use."""
    loaded = _loaded_after(
        "import llamonitor\n"
        "assert 'duckdb' not in __import__('sys').modules\n"
        "for name in llamonitor.__all__:\n    getattr(llamonitor, name)\n"
        "assert callable(llamonitor.storage.parquet.query)\n"
        "from llamonitor import *\n"
        "from llamonitor.schema import *\n"
        "from llamonitor.storage import *\n"
        "from llamonitor.analysis import *\n"
        "try:\n    llamonitor.no_such_name\nexcept AttributeError:\n    pass\n"
        "else:\n    raise SystemExit('no AttributeError')"
    )
    assert "llamonitor.instrument" in loaded and "llamonitor.transport" in loaded
    assert set(dir(llamonitor)) >= set(llamonitor.__all__)


def test_reading_a_store_needs_no_configuration_models(store: Path) -> None:
    """`events`, `stats` and `trace` read Parquet without importing pydantic (the
    writer's configuration) or the SDK."""
    write(store, [span_row(0)])
    loaded = _loaded_after(
        "from llamonitor.cli import main\n"
        f"for args in (['events', '--dir', {str(store)!r}], ['stats', '--dir', {str(store)!r}]):\n"
        "    try:\n        main(args)\n    except SystemExit:\n        pass"
    )
    assert "duckdb" in loaded
    assert not loaded & {"pydantic", "llamonitor.instrument", "llamonitor.transport"}
