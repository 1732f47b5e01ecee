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
