"""The report's memo of candidate prices: a later report reads them without
loading genai-prices, gives the same suggestion, and overrides still come first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import llamonitor
from _helpers import span_row
from llamonitor.analysis import _prices

SUGGESTION = """
import json, sys
from llamonitor.analysis import analyze
report = analyze(sys.argv[1])
(swap,) = [s for s in report.suggestions if s.kind == "cheaper_model"]
print(json.dumps({"figures": swap.figures, "genai_prices": "genai_prices" in sys.modules}))
"""


def _store(root: Path) -> Path:
    rows = [span_row(i, trace_id=f"t{i:031d}", span_id=f"{i:016x}", provider="openai",
                     model="gpt-4o", input_tokens=1000, output_tokens=100, cost_usd=0.0035)
            for i in range(3)]
    (root / "d").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA), root / "d" / "e.parquet")
    return root


def _suggest(store: Path, cache: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", SUGGESTION, str(store)],
        env={**os.environ, _prices.CACHE_ENV: str(cache)},
        capture_output=True, text=True, timeout=120, check=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_a_second_report_prices_candidates_without_loading_the_price_data(
    tmp_path: Path,
) -> None:
    """The first report resolves and remembers; the next, in a new process, reads
    the memo (genai-prices never imported) and suggests exactly the same."""
    store, cache = _store(tmp_path / "store"), tmp_path / "cache"
    first = _suggest(store, cache)
    assert first["genai_prices"] is True
    (memo,) = cache.iterdir()
    assert "openai|gpt-4.1-mini" in json.loads(memo.read_text())
    second = _suggest(store, cache)
    assert second["genai_prices"] is False
    assert second["figures"] == first["figures"]


def test_an_override_is_used_instead_of_the_memo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model priced by MonitorConfig.model_prices is priced by the override, and
    its override is not written to the memo."""
    from llamonitor.llm import _settings, pricing

    monkeypatch.setenv(_prices.CACHE_ENV, str(tmp_path))
    path = _prices.cache_file()
    assert path is not None
    path.write_text(json.dumps({"openai|gpt-4.1-mini": {
        "input": 1.0, "output": 1.0, "cache_read": 1.0, "cache_write": 1.0,
        "source": "genai-prices"}}))
    price = llamonitor.ModelPrice(input_per_million=0.5, output_per_million=1.5)
    monkeypatch.setattr(_settings, "SETTINGS", _settings.LLMSettings(
        model_prices={"gpt-4.1-mini": price}))
    pricing.reset()
    try:
        rates = _prices.resolve([("gpt-4.1-mini", "openai")])[("gpt-4.1-mini", "openai")]
    finally:
        pricing.reset()
    assert rates is not None and rates.source == "override"
    assert rates.input == pytest.approx(0.5e-6)
    assert json.loads(path.read_text())["openai|gpt-4.1-mini"]["input"] == 1.0


def test_an_unwritable_cache_directory_only_costs_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the memo cannot be written, the prices are resolved all the same."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(_prices.CACHE_ENV, str(blocker / "cache"))
    got = _prices.resolve([("gpt-4.1-mini", "openai"), ("no-such-model-xyz", "openai")])
    assert got[("gpt-4.1-mini", "openai")] is not None
    assert got[("no-such-model-xyz", "openai")] is None


def _env_without_cache(home: Path | None) -> dict[str, str]:
    """The environment of a user who set no cache directory (``home``: their HOME)."""
    env = {k: v for k, v in os.environ.items()
           if k not in (_prices.CACHE_ENV, "XDG_CACHE_HOME", "HOME")}
    if home is not None:
        env["HOME"] = str(home)
    return env


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_library_use_writes_nothing_into_the_home_directory_the_cli_does(
    tmp_path: Path,
) -> None:
    """analyze() in an application's process, without LLMOPS_CACHE_DIR, leaves the
    user's home alone; `llamonitor report` remembers the prices in ~/.cache."""
    store, home = _store(tmp_path / "store"), tmp_path / "home"
    home.mkdir()
    env = _env_without_cache(home)
    out = subprocess.run([sys.executable, "-c", SUGGESTION, str(store)], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout)["figures"]
    assert _files(home) == []
    cli = [sys.executable, "-m", "llamonitor.cli", "report", "--dir", str(store / "d"), "--json"]
    out = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120, check=True)
    kinds = [s["kind"] for s in json.loads(out.stdout)["suggestions"]]
    assert "cheaper_model" in kinds
    (memo,) = _files(home)
    assert memo.parent == home / ".cache" / "llamonitor"
    assert memo.name.startswith("candidate-prices-")
    assert "openai|gpt-4.1-mini" in json.loads(memo.read_text())


NO_HOME = """
import sys
sys.modules["pwd"] = None  # no passwd entry to fall back on: Path.home() fails
from pathlib import Path
try:
    Path.home()
except RuntimeError:
    pass
else:
    raise SystemExit("Path.home() did not fail")
from llamonitor.cli import main
main(["report", "--dir", sys.argv[1], "--json"])
"""


def test_a_cli_report_without_a_home_directory_just_has_no_memo(tmp_path: Path) -> None:
    """No HOME and no way to find one: the report is made all the same."""
    store = _store(tmp_path / "store")
    out = subprocess.run([sys.executable, "-c", NO_HOME, str(store / "d")],
                         env=_env_without_cache(None), cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    kinds = [s["kind"] for s in json.loads(out.stdout)["suggestions"]]
    assert "cheaper_model" in kinds


RESOLVE = """
import json, sys
from llamonitor.analysis import _prices
models = json.loads(sys.argv[1])
got = _prices.resolve([(m, "openai") for m in models])
print(json.dumps({m: None if r is None else [r.input, r.output, r.cache_read, r.cache_write,
                  r.source, r.model_price is not None] for (m, _), r in got.items()}))
"""


def _resolve(models: list[str], cache: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", RESOLVE, json.dumps(models)],
        env={**os.environ, _prices.CACHE_ENV: str(cache)},
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_a_memo_of_the_wrong_shape_is_ignored_entry_by_entry(tmp_path: Path) -> None:
    """Valid JSON with entries of the wrong shape (a list, strings or bools for
    rates, a missing or negative or NaN rate, a source not the package's): such an
    entry is resolved again, as if absent, and rewritten; a good one beside it is
    used. (One process per bad entry: once genai-prices is loaded, the memo is
    not read.)"""
    good = {"input": 1e-6, "output": 2e-6, "cache_read": 0.0, "cache_write": 0.0,
            "source": "genai-prices"}
    bad: dict[str, object] = {
        "gpt-4o-mini": [1, 2, 3, 4],
        "gpt-4.1-nano": {**good, "input": "0.000001"},
        "gpt-4.1-mini": {**good, "output": True},
        "gpt-4o": {k: v for k, v in good.items() if k != "cache_write"},
        "o3": {**good, "input": -1.0},
        "o4-mini": {**good, "cache_read": float("nan")},
        "gpt-4.1": {**good, "source": "override"},
        "gpt-5": 42,
    }
    fresh = _resolve([*bad], tmp_path / "fresh")
    (memo,) = (tmp_path / "fresh").iterdir()
    resolved = json.loads(memo.read_text())
    for i, (model, entry) in enumerate(bad.items()):
        cache = tmp_path / f"corrupt-{i}"
        cache.mkdir()
        (cache / memo.name).write_text(
            json.dumps({"openai|my-model": good, f"openai|{model}": entry}))
        got = _resolve(["my-model", model], cache)
        assert got == {"my-model": [1e-6, 2e-6, 0.0, 0.0, "genai-prices", False],
                       model: fresh[model]}, model
        assert json.loads((cache / memo.name).read_text()) == {
            "openai|my-model": good, f"openai|{model}": resolved[f"openai|{model}"]}


def test_a_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memo cannot replace what is in its place (a directory): the prices are
    resolved, and the temporary .candidate-prices-* file is removed."""
    monkeypatch.setenv(_prices.CACHE_ENV, str(tmp_path))
    path = _prices.cache_file()
    assert path is not None
    path.mkdir()
    (path / "keep").write_text("x")
    got = _prices.resolve([("gpt-4.1-mini", "openai")])
    assert got[("gpt-4.1-mini", "openai")] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
