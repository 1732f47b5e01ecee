"""Evaluators over stored spans: the built-in checks, a user function, the LLM
judge against the local test LLM server (OpenAI and Anthropic clients), and
``llamonitor eval run`` writing scores that a second run replaces."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner

import llamonitor
from llamonitor.cli._app import cli
from llamonitor.quality import LLMJudge, evaluator_by_name, run_evaluator
from llamonitor.quality._evaluators import Outcome, outcome_of
from llamonitor.quality._judge import parse_grade
from llamonitor.schema.config import StorageConfig
from llamonitor.storage._scores import read_scores
from llamonitor.storage.parquet import ParquetBackend

sys.path.insert(0, str(Path(__file__).parent))
from _llm_server import LLMServer, Reply, chat_completion, message_body

NOW = datetime.now(timezone.utc)
SPANS = [
    {"span_id": "0001", "trace_id": "t1", "completion_content": '{"ok": true}',
     "prompt_content": "give JSON", "duration_ms": 800.0, "cost_usd": 0.002},
    {"span_id": "0002", "trace_id": "t1", "completion_content": "I'm sorry, but I can't help "
     "with that.", "prompt_content": "hack it", "duration_ms": 4200.0, "cost_usd": 0.05},
    {"span_id": "0003", "trace_id": "t2", "completion_content": None, "duration_ms": 10.0,
     "cost_usd": None},
]


def _values(spec: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    ev = evaluator_by_name(spec)
    for span in SPANS:
        o = ev(span)
        out[span["span_id"]] = None if o is None else o.value
    return out


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("valid_json", {"0001": 1.0, "0002": 0.0, "0003": None}),
        ("regex:^\\{", {"0001": 1.0, "0002": 0.0, "0003": None}),
        ("length:20", {"0001": 1.0, "0002": 0.0, "0003": None}),
        ("length:20-100", {"0001": 0.0, "0002": 1.0, "0003": None}),
        ("latency:2s", {"0001": 1.0, "0002": 0.0, "0003": 1.0}),
        ("latency:500ms", {"0001": 0.0, "0002": 0.0, "0003": 1.0}),
        ("cost:0.01", {"0001": 1.0, "0002": 0.0, "0003": None}),
        ("refusal", {"0001": 0.0, "0002": 1.0, "0003": None}),
    ],
)
def test_built_in_evaluators_judge_each_span(spec: str, expected: dict[str, Any]) -> None:
    """Each built-in gives 1/0 per span, and no score where it has nothing to judge."""
    assert _values(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [("nope", "not an evaluator"), ("regex:(", "regex"), ("length:x", "MAX"),
     ("latency:-1s", "above 0"), ("cost:cheap", "USD"), ("valid_json:1", "no argument"),
     ("no_such_module_xyz:f", "cannot import"), ("json:nothing_here", "no function")],
)
def test_a_bad_evaluator_spec_is_a_clear_error(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluator_by_name(spec)


def mine(span: dict[str, Any]) -> Any:
    """A user evaluator: the answer's word count, with a comment."""
    text = span.get("completion_content")
    return None if text is None else (len(text.split()), "words")


def test_a_user_function_is_an_evaluator_and_its_results_are_read() -> None:
    ev = evaluator_by_name(f"{__name__}:mine")
    assert ev.name == "mine"
    assert ev(SPANS[1]) == Outcome(8.0, comment="words")
    assert ev(SPANS[2]) is None
    assert outcome_of(True) == Outcome(1.0)
    assert outcome_of("good") == Outcome(label="good")
    assert outcome_of({"value": 2, "comment": "c"}) == Outcome(2.0, comment="c")
    with pytest.raises(ValueError, match="returned list"):
        outcome_of([1])


def test_an_evaluator_that_fails_on_a_span_is_counted_and_the_run_goes_on() -> None:
    from llamonitor.quality import Evaluator

    def flaky(span: dict[str, Any]) -> float:
        if span["span_id"] == "0002":
            raise RuntimeError("boom")
        return float("nan") if span["span_id"] == "0003" else 1.0

    written: list[pa.Table] = []
    run = run_evaluator(Evaluator("flaky", flaky, "t:flaky"), SPANS,
                        lambda t: written.append(t) or t.num_rows)
    assert (run.scored, run.errors, run.written) == (1, 2, 1)
    assert run.first_error is not None and "boom" in run.first_error


# -- the judge against the local LLM server ------------------------------------------


@pytest.fixture(scope="module")
def llm() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


def test_the_judge_grades_with_an_openai_client(llm: LLMServer) -> None:
    import openai

    llm.reset()
    llm.push(Reply(body=chat_completion('{"score": 4, "reason": "valid JSON, terse"}')))
    judge = LLMJudge(openai.OpenAI(base_url=llm.url + "/v1", api_key="k"), "judge-model")
    out = judge.evaluator()(SPANS[0])
    assert out == Outcome(0.75, comment="valid JSON, terse")
    sent = llm.requests[-1]
    assert sent.path.endswith("/chat/completions") and sent.body["model"] == "judge-model"
    assert "give JSON" in sent.body["messages"][0]["content"]


def test_the_judge_grades_with_an_anthropic_client(llm: LLMServer) -> None:
    import anthropic

    llm.reset()
    llm.push(Reply(body=message_body('Sure. {"score": 1, "reason": "a refusal"}')))
    judge = LLMJudge(anthropic.Anthropic(base_url=llm.url, api_key="k"), "claude-judge")
    assert judge.api == "anthropic"
    assert judge.evaluator()(SPANS[1]) == Outcome(0.0, comment="a refusal")
    assert llm.requests[-1].path.endswith("/v1/messages")


@pytest.mark.parametrize("reply", ["great answer!", '{"score": 9}', '{"reason": "x"}'])
def test_a_judge_reply_without_a_grade_is_an_error_not_a_score(reply: str) -> None:
    with pytest.raises(ValueError, match="judge"):
        parse_grade(reply)


def test_a_client_of_neither_api_is_refused() -> None:
    with pytest.raises(ValueError, match=r"chat\.completions\.create"):
        LLMJudge(object(), "m")


# -- llamonitor eval run ---------------------------------------------------------


def _store(tmp_path: Path) -> Path:
    rows = []
    for i, span in enumerate(SPANS):
        row: dict[str, Any] = dict.fromkeys(llamonitor.SCHEMA.names)
        row.update(span, event_id=f"e{i}", session_id="s", operation_name="llm.answer",
                   operation_type="llm_call", timestamp=NOW - timedelta(minutes=10 - i),
                   process_id=1)
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA)
    asyncio.run(ParquetBackend(StorageConfig(output_dir=tmp_path)).write_table(table))
    return tmp_path


def _eval(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["eval", "run", *args, "--json"])
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.output)
    return out


def test_eval_run_writes_scores_and_a_rerun_does_not_duplicate(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = _eval("valid_json", "--since", "1d", "--dir", str(store))
    assert (first["spans"], first["written"], first["skipped"]) == (3, 2, 1)
    again = _eval("valid_json", "--since", "1d", "--dir", str(store))
    assert again["written"] == 2
    _eval("latency:2s", "--since", "1d", "--dir", str(store))
    scores = read_scores(StorageConfig(output_dir=store)).to_pylist()
    assert sorted((s["name"], s["span_id"], s["value"]) for s in scores) == [
        ("latency_slo", "0001", 1.0), ("latency_slo", "0002", 0.0), ("latency_slo", "0003", 1.0),
        ("valid_json", "0001", 1.0), ("valid_json", "0002", 0.0),
    ]
    first = {(s["source"], s["target"], s["trace_id"]) for s in scores if s["span_id"] == "0001"}
    assert first == {("code", "span", "t1")}


def test_eval_run_dry_run_writes_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    out = _eval("refusal", "--dir", str(store), "--dry-run")
    assert out["scored"] == 2 and out["written"] == 0
    assert read_scores(StorageConfig(output_dir=store)).num_rows == 0


def test_eval_run_judge_against_the_local_server(tmp_path: Path, llm: LLMServer) -> None:
    store = _store(tmp_path)
    llm.reset()
    llm.push(Reply(body=chat_completion('{"score": 5, "reason": "fine"}')),
             Reply(body=chat_completion('{"score": 2, "reason": "refused"}')))
    out = _eval("judge", "--model", "j", "--base-url", llm.url + "/v1", "--dir", str(store))
    assert (out["written"], out["errors"]) == (2, 0)
    scores = read_scores(StorageConfig(output_dir=store)).to_pylist()
    assert sorted(s["value"] for s in scores) == [0.25, 1.0]  # the spans newest first
    kinds = {(s["source"], s["evaluator"], s["name"]) for s in scores}
    assert kinds == {("llm", "judge:j", "judge")}
    asked = [r.body["messages"][0]["content"] for r in llm.requests]
    assert len(asked) == 2 and "hack it" in asked[0] and "give JSON" in asked[1]


def test_eval_run_refuses_an_unknown_evaluator(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["eval", "run", "bogus", "--dir", str(_store(tmp_path))])
    assert result.exit_code == 2 and "not an evaluator" in result.output


def test_eval_report_groups_scores_by_model_and_operation(tmp_path: Path) -> None:
    """Scores joined with the spans they judge: by model, by operation, and a trend."""
    store = _store(tmp_path)
    _eval("latency:2s", "--dir", str(store))
    by_op = CliRunner().invoke(cli, ["eval", "report", "--by", "operation", "--dir", str(store),
                                     "--json"])
    assert by_op.exit_code == 0, by_op.output
    out = json.loads(by_op.output)
    assert [(g["name"], g["key"], g["scores"]) for g in out["groups"]] == [
        ("latency_slo", "llm.answer", 3)
    ]
    assert abs(out["groups"][0]["mean"] - 2 / 3) < 1e-9
    assert out["trend"][0]["scores"] == 3
    text = CliRunner().invoke(cli, ["eval", "report", "--dir", str(store)])
    assert text.exit_code == 0 and "latency_slo" in text.output
