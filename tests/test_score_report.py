"""Scores in the report: distributions per score name, by model, operation,
agent and prompt hash, and trends, over Parquet and SQLite; in
``llamonitor report --json`` and ``/api/report``; and the cheaper-model
suggestion comparing the two models' scores."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import llamonitor
from _helpers import T0, span_row
from _servers import open_store
from llamonitor.analysis import Report, analyze, session_report
from llamonitor.analysis import _suggest as suggest
from llamonitor.cli import cli
from llamonitor.schema._scores import make_score, scores_table
from llamonitor.schema.config import StorageConfig
from llamonitor.storage._scores import write_scores

_ids = itertools.count()


def span(span_id: str, parent: str | None, minute: int, op: str, **values: Any) -> dict[str, Any]:
    values.setdefault("trace_id", "t1")
    values.setdefault("session_id", "s1")
    return span_row(next(_ids), span_id=span_id, parent_span_id=parent, operation_name=op,
                    timestamp=T0 + timedelta(minutes=minute), duration_ms=100.0, **values)


def spans() -> list[dict[str, Any]]:
    """Two traces: a router agent's plan calling gpt-4o (session s1), and one
    calling gpt-4o-mini (session s2), an hour apart."""
    return [
        span("a0", None, 0, "plan", agent_name="router", operation_type="agent"),
        span("a1", "a0", 0, "answer", model="gpt-4o", provider="openai", prompt_hash="p1"),
        span("b0", None, 60, "plan", trace_id="t2", session_id="s2", agent_name="router",
             operation_type="agent"),
        span("b1", "b0", 60, "answer", trace_id="t2", session_id="s2", model="gpt-4o-mini",
             provider="openai", prompt_hash="p2"),
    ]


def scores() -> list[dict[str, Any]]:
    given = T0 + timedelta(days=1)  # evaluated later: the trend follows the spans' time
    return [
        make_score("helpful", 0.9, span_id="a1", span_trace_id="t1", timestamp=given),
        make_score("helpful", 0.5, span_id="b1", span_trace_id="t2", timestamp=given),
        make_score("feedback", 1.0, label="good", trace_id="t1", source="human",
                   timestamp=given),
        make_score("feedback", 0.0, label="bad", trace_id="t2", source="human", timestamp=given),
        make_score("feedback", None, label="good", session_id="s2", source="human",
                   timestamp=given),
        make_score("helpful", 0.1, trace_id="no-such-trace", timestamp=given),
    ]


@pytest.fixture(params=("parquet", "sqlite"))
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """(the span store for ``analyze``, the scores' StorageConfig), with the
    spans and scores above."""
    table = pa.Table.from_pylist(spans(), schema=llamonitor.SCHEMA)
    if request.param == "parquet":
        directory = tmp_path / "store"
        (directory / "2024-05-01").mkdir(parents=True)
        pq.write_table(table, directory / "2024-05-01" / "events_1.parquet")
        storage = StorageConfig(output_dir=directory)
        write_scores(storage, scores_table(scores()))
        yield directory, storage
        return
    for store in open_store("sqlite", tmp_path):
        store.write(table)
        write_scores(store.config(), scores_table(scores()))
        with store.query() as q:
            yield q, store.config()


def _by(groups: list[dict[str, Any]]) -> dict[tuple[str, Any], dict[str, Any]]:
    return {(g["name"], g["key"]): g for g in groups}


def test_the_report_has_score_distributions_breakdowns_and_trend(stored: tuple[Any, Any]) -> None:
    """Per score name: count, mean and label shares; per model/operation/agent/prompt
    hash; the trend by the judged spans' hour; a score of an unknown trace apart."""
    store, storage = stored
    report = analyze(store, scores=storage, bucket="hour")
    sc = report.scores
    assert sc["scores"] == 5 and sc["unmatched"] == 1
    names = {g["name"]: g for g in sc["names"]}
    assert names["helpful"]["count"] == 2 and names["helpful"]["mean"] == pytest.approx(0.7)
    feedback = names["feedback"]
    assert feedback["count"] == 3 and feedback["numeric"] == 2
    assert {x["label"]: x["share"] for x in feedback["labels"]} == pytest.approx(
        {"good": 2 / 3, "bad": 1 / 3}
    )
    model = _by(sc["by"]["model"])
    assert model[("helpful", "gpt-4o")]["mean"] == pytest.approx(0.9)
    assert model[("helpful", "gpt-4o-mini")]["mean"] == pytest.approx(0.5)
    # A trace score: the trace's model; a session score: the session's.
    assert model[("feedback", "gpt-4o-mini")]["count"] == 2
    assert [x["label"] for x in model[("feedback", "gpt-4o")]["labels"]] == ["good"]
    operation = _by(sc["by"]["operation"])
    assert operation[("helpful", "answer")]["count"] == 2
    assert operation[("feedback", "plan")]["count"] == 3  # trace/session scores: the root
    assert _by(sc["by"]["agent"])[("feedback", "router")]["count"] == 3
    assert _by(sc["by"]["prompt_hash"])[("helpful", "p2")]["mean"] == pytest.approx(0.5)
    points = [p for p in sc["trend"]["points"] if p["name"] == "helpful"]
    assert [(p["start"], p["mean"]) for p in points] == [
        (T0, pytest.approx(0.9)), (T0 + timedelta(hours=1), pytest.approx(0.5))
    ]
    assert json.loads(json.dumps(report.to_dict()))["scores"]["names"]


def test_a_session_report_keeps_the_sessions_scores_only(stored: tuple[Any, Any]) -> None:
    """Scores of spans outside the scope are not in it (they count as unmatched)."""
    store, storage = stored
    sc = session_report(store, "s2", scores=storage).scores
    assert {(g["name"], g["count"]) for g in sc["names"]} == {("helpful", 1), ("feedback", 2)}
    assert sc["unmatched"] == 3


def test_no_scores_no_section(tmp_path: Path) -> None:
    """A store without scores: the report's scores are empty, the rest unchanged."""
    directory = tmp_path / "store"
    (directory / "2024-05-01").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(spans(), schema=llamonitor.SCHEMA),
                   directory / "2024-05-01" / "events_1.parquet")
    report = analyze(directory)
    assert report.scores == {} and report.overview.spans == 4


def test_cli_report_prints_and_json_carries_the_scores(tmp_path: Path) -> None:
    """``llamonitor report`` shows a scores table; ``--json`` has the section."""
    directory = tmp_path / "store"
    (directory / "2024-05-01").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(spans(), schema=llamonitor.SCHEMA),
                   directory / "2024-05-01" / "events_1.parquet")
    write_scores(StorageConfig(output_dir=directory), scores_table(scores()))
    out = CliRunner().invoke(cli, ["report", "--dir", str(directory), "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert {g["name"] for g in doc["scores"]["names"]} == {"helpful", "feedback"}
    assert doc["scores"]["trend"]["points"][0]["start"].startswith("2024-05-01T12:00")
    text = CliRunner().invoke(cli, ["report", "--dir", str(directory)], env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    assert "scores by model" in text.output and "good 67%" in text.output


def test_cli_report_reads_sqlite_scores(tmp_path: Path) -> None:
    """``--dsn sqlite:///...``: the scores of the database's score table."""
    for store in open_store("sqlite", tmp_path):
        store.write(pa.Table.from_pylist(spans(), schema=llamonitor.SCHEMA))
        write_scores(store.config(), scores_table(scores()))
        out = CliRunner().invoke(
            cli, ["report", "--dsn", store.dsn, "--table", store.table, "--json"]
        )
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["scores"]["scores"] == 5


def test_api_report_carries_the_scores(tmp_path: Path) -> None:
    """``GET /api/report``: the same section, for the UI's report page."""
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from llamonitor.server import ServerConfig, start_server

    directory = tmp_path / "store"
    (directory / "2024-05-01").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(spans(), schema=llamonitor.SCHEMA),
                   directory / "2024-05-01" / "events_1.parquet")
    write_scores(StorageConfig(output_dir=directory), scores_table(scores()))
    handle = start_server(ServerConfig(port=0), directory=directory)
    try:
        doc = httpx.get(handle.url + "api/report", timeout=30).json()
    finally:
        handle.stop()
    assert doc["scores"]["scores"] == 5
    assert {g["key"] for g in doc["scores"]["by"]["model"]} == {"gpt-4o", "gpt-4o-mini"}


# -- the cheaper-model suggestion ---------------------------------------------------------


def _calls(model: str, n: int, cost: float, start: int) -> list[dict[str, Any]]:
    return [
        span(f"{model}-{i}", None, start + i, "answer", trace_id=f"{model}-t{i}",
             operation_type="llm_call", provider="openai", model=model, input_tokens=1000,
             output_tokens=100, cost_usd=cost)
        for i in range(n)
    ]


def _swap_report(tmp_path: Path, mini_score: float | None, n: int = 12) -> Report:
    """gpt-4o short calls beside gpt-4.1-mini ones (its first cheaper candidate),
    both scored ``helpful`` (gpt-4o 0.8; gpt-4.1-mini ``mini_score``) or unscored."""
    directory = tmp_path / "swap"
    (directory / "2024-05-01").mkdir(parents=True)
    rows = _calls("gpt-4o", n, 0.0035, 0) + _calls("gpt-4.1-mini", n, 0.0006, 100)
    pq.write_table(pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA),
                   directory / "2024-05-01" / "events_1.parquet")
    if mini_score is not None:
        given = [make_score("helpful", 0.8, span_id=r["span_id"], span_trace_id=r["trace_id"])
                 for r in rows if r["model"] == "gpt-4o"]
        given += [make_score("helpful", mini_score, span_id=r["span_id"],
                             span_trace_id=r["trace_id"])
                  for r in rows if r["model"] == "gpt-4.1-mini"]
        write_scores(StorageConfig(output_dir=directory), scores_table(given))
    return analyze(directory)


def _swap(report: Report) -> Any:
    (swap,) = [s for s in report.suggestions if s.kind == "cheaper_model"
               and s.figures["model"] == "gpt-4o"]
    return swap


def test_same_score_makes_the_suggestion_say_so(tmp_path: Path) -> None:
    """Both models score alike: "same score, N% cheaper", with the figures."""
    swap = _swap(_swap_report(tmp_path, 0.78))
    assert swap.figures["candidate"] == "gpt-4.1-mini"
    assert swap.figures["score_verdict"] == "same"
    assert "same score" in swap.title and "cheaper" in swap.title
    (compared,) = swap.figures["scores"]
    assert compared["name"] == "helpful" and compared["candidate_scores"] == 12
    assert compared["current_mean"] == pytest.approx(0.8)
    assert "helpful 0.78 on gpt-4.1-mini" in swap.detail


def test_a_candidate_that_scores_lower_is_not_suggested(tmp_path: Path) -> None:
    """gpt-4.1-mini scores far lower: the next candidate (unscored) is suggested as before."""
    swap = _swap(_swap_report(tmp_path, 0.4))
    assert swap.figures["candidate"] != "gpt-4.1-mini"
    assert "score_verdict" not in swap.figures


def test_too_few_scores_or_none_behave_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under MIN_SCORE_SAMPLES scores a model, or no scores: the old suggestion."""
    monkeypatch.setattr(suggest, "MIN_SCORE_SAMPLES", 13)
    few = _swap(_swap_report(tmp_path / "few", 0.4))
    none = _swap(_swap_report(tmp_path / "none", None))
    for swap in (few, none):
        assert swap.figures["candidate"] == "gpt-4.1-mini"
        assert "score_verdict" not in swap.figures
        assert swap.title == "Use gpt-4.1-mini instead of gpt-4o for short answers"


def test_compare_scores_tolerance() -> None:
    """Within SCORE_TOLERANCE (scaled by the mean's size) is the same; beyond, worse/better."""
    assert suggest.compare_scores({"a": (10, 0.80)}, {"a": (10, 0.76)})[0] == "same"  # type: ignore[index]
    assert suggest.compare_scores({"a": (10, 0.80)}, {"a": (10, 0.70)})[0] == "worse"  # type: ignore[index]
    assert suggest.compare_scores({"a": (10, 4.0)}, {"a": (10, 3.85)})[0] == "same"  # type: ignore[index]
    assert suggest.compare_scores({"a": (10, 0.5)}, {"a": (10, 0.9)})[0] == "better"  # type: ignore[index]
    assert suggest.compare_scores({"a": (10, 0.8)}, {"b": (10, 0.1)}) is None
    assert suggest.compare_scores({"a": (10, 0.8)}, {"a": (9, 0.1)}) is None


def test_html_report_has_the_scores_escaped(tmp_path: Path) -> None:
    """``--html``: a Scores section, a score name holding markup shown as text."""
    directory = tmp_path / "store"
    (directory / "2024-05-01").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(spans(), schema=llamonitor.SCHEMA),
                   directory / "2024-05-01" / "events_1.parquet")
    hostile = make_score("<script>alert(1)</script>", 0.5, span_id="a1", span_trace_id="t1")
    write_scores(StorageConfig(output_dir=directory), scores_table([*scores(), hostile]))
    page = tmp_path / "r.html"
    out = CliRunner().invoke(cli, ["report", "--dir", str(directory), "--html", str(page)])
    assert out.exit_code == 0, out.output
    html = page.read_text()
    assert '<section id="scores">' in html and 'href="#scores"' in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "scores by prompt hash" in html


def test_many_scored_ids_give_the_same_section(
    stored: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_ID_PARAMETERS the store aggregates every span of the scope instead
    of the scored ones: the section is the same."""
    from llamonitor.analysis import _score_section

    store, storage = stored
    few = analyze(store, scores=storage, bucket="hour", suggestions=False).scores
    monkeypatch.setattr(_score_section, "MAX_ID_PARAMETERS", 1)
    many = analyze(store, scores=storage, bucket="hour", suggestions=False).scores
    assert many == few and few["scores"] == 5


def test_a_span_stored_twice_counts_its_score_once(tmp_path: Path) -> None:
    """The same span in two files (a replayed batch): its score is one score."""
    directory = tmp_path / "store"
    (directory / "2024-05-01").mkdir(parents=True)
    table = pa.Table.from_pylist(spans(), schema=llamonitor.SCHEMA)
    for name in ("events_1.parquet", "events_2.parquet"):
        pq.write_table(table, directory / "2024-05-01" / name)
    write_scores(StorageConfig(output_dir=directory), scores_table(scores()))
    names = {g["name"]: g for g in analyze(directory, suggestions=False).scores["names"]}
    assert names["helpful"]["count"] == 2 and names["feedback"]["count"] == 3


def test_a_past_window_sees_the_scores_given_after_it(tmp_path: Path) -> None:
    """A report scoped to a past window counts the scores given up to a day after
    its end (evaluated later), and reads no score given much later (the read is
    bounded)."""
    directory = tmp_path / "store"
    (directory / "2024-05-01").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(spans(), schema=llamonitor.SCHEMA),
                   directory / "2024-05-01" / "events_1.parquet")
    late = T0 + timedelta(days=30)
    write_scores(StorageConfig(output_dir=directory), scores_table([
        *scores(),  # given a day after the spans
        make_score("helpful", 0.0, span_id="a0", span_trace_id="t1", timestamp=late),
    ]))
    window = analyze(directory, since=T0, until=T0 + timedelta(hours=2), suggestions=False)
    names = {g["name"]: g for g in window.scores["names"]}
    assert names["helpful"]["count"] == 2 and names["feedback"]["count"] == 3
    assert names["helpful"]["mean"] == pytest.approx(0.7)  # not the score of 30 days later
    unbounded = analyze(directory, suggestions=False).scores
    assert {g["name"]: g["count"] for g in unbounded["names"]}["helpful"] == 3
