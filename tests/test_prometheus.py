"""Prometheus metrics from the spans (``llamonitor.export``, ``GET /metrics``):
the GenAI conventions' histograms and our counters from real SDK calls and from
tables with every LLM column, the cardinality caps, the pipeline's own
metrics, the metrics servers' guards, the OTLP form, and a real Prometheus
server scraping us and answering PromQL."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest

prometheus_client = pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import llamonitor  # noqa: E402
from _helpers import span_row  # noqa: E402
from _llm_server import (  # noqa: E402
    LLMServer,
    Reply,
    chat_chunks,
    chat_completion,
    chat_usage,
    openai_error,
)
from llamonitor import (  # noqa: E402
    ConfigurationError,
    ExporterConfig,
    MonitorConfig,
    StorageConfig,
    monitor_llm,
)
from llamonitor.export import (  # noqa: E402
    PrometheusConfig,
    SpanMetrics,
    metrics_request,
    metrics_server,
    start_metrics_server,
)
from llamonitor.export._collectors import SpanMetricsCollector  # noqa: E402
from llamonitor.export._metric_names import DURATION_BUCKETS, TOKEN_BUCKETS  # noqa: E402
from llamonitor.integrations import instrument_openai, uninstrument_openai  # noqa: E402
from llamonitor.testing import capture_spans  # noqa: E402

IN_CI = bool(os.environ.get("CI"))
TOKEN = "s3cret-token-0123456789"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition; labels with an empty value left out (as PromQL sees them)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if v != ""))
            out[(s.name, labels)] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def scrape(url: str, **headers: str) -> Samples:
    response = httpx.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return parse(response.text)


def exposition(state: SpanMetrics) -> Samples:
    registry = prometheus_client.CollectorRegistry()
    registry.register(SpanMetricsCollector(state))
    return parse(prometheus_client.generate_latest(registry).decode())


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA)


# -- from real calls ------------------------------------------------------------------


@pytest.fixture(scope="module")
def llm() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


def test_real_sdk_calls_make_the_conventions_histograms_and_our_counters(llm: LLMServer) -> None:
    """The openai SDK against the test server, instrumented: /metrics of the
    exporter's own server has each call's tokens in the right buckets, their
    sums, the durations, a stream's time to first chunk, the error and the cost
    the spans recorded, under the conventions' names and labels."""
    llm.reset()
    llm.push(Reply(body=chat_completion("hi", model="gpt-4o-mini", usage=chat_usage(42, 9))))
    llm.push(Reply(body=chat_completion("hi", model="gpt-4o-mini", usage=chat_usage(10, 5))))
    llm.push(Reply(events=chat_chunks(["a", "b"], usage=chat_usage(30, 11)), first_delay=0.05))
    llm.push(openai_error(429, "slow down", "rate_limit_exceeded"))
    instrument_openai()
    try:
        with capture_spans(prometheus=PrometheusConfig(port=0)) as spans:
            server = metrics_server()
            assert server is not None and server.url.startswith("http://127.0.0.1:")
            client = openai.OpenAI(base_url=llm.url + "/v1", api_key="t", max_retries=0)
            messages = [{"role": "user", "content": "hello"}]
            for _ in range(2):
                client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True,
                stream_options={"include_usage": True},
            )
            for _ in stream:
                pass
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            assert llamonitor.flush(10)
            m = scrape(server.url)
        assert metrics_server() is None and not server.running, "stopped at shutdown"
    finally:
        uninstrument_openai()
    rows = spans.rows()
    assert len(rows) == 4
    call = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
            "gen_ai_request_model": "gpt-4o-mini",
            "llamonitor_operation_name": "openai.chat.completions"}
    tokens = "gen_ai_client_token_usage"
    inputs = {**call, "gen_ai_token_type": "input"}
    assert value(m, f"{tokens}_count", **inputs) == 3
    assert value(m, f"{tokens}_sum", **inputs) == 42 + 10 + 30
    assert value(m, f"{tokens}_bucket", le="16.0", **inputs) == 1  # 10
    assert value(m, f"{tokens}_bucket", le="64.0", **inputs) == 3  # 42, 30
    outputs = {**call, "gen_ai_token_type": "output"}
    assert value(m, f"{tokens}_sum", **outputs) == 9 + 5 + 11
    assert value(m, f"{tokens}_bucket", le="4.0", **outputs) == 0
    assert value(m, f"{tokens}_bucket", le="16.0", **outputs) == 3
    duration = "gen_ai_client_operation_duration_seconds"
    assert value(m, f"{duration}_count", **call) == 4
    total = sum(r["duration_ms"] for r in rows) / 1000
    assert math.isclose(value(m, f"{duration}_sum", **call), total, rel_tol=1e-9)
    (failed,) = [r for r in rows if r["error"]]
    error = {**call, "error_type": failed["error_type"]}
    assert value(m, f"{duration}_count", **error) == 1
    assert value(m, "llamonitor_errors_total", **error) == 1
    first = "gen_ai_client_operation_time_to_first_chunk_seconds"
    assert value(m, f"{first}_count", **call) == 1
    assert value(m, f"{first}_bucket", le="0.04", **call) == 0  # the server waited 50 ms
    cost = sum(r["cost_usd"] for r in rows if r["cost_usd"] is not None)
    assert cost > 0
    assert math.isclose(value(m, "llamonitor_cost_usd_total", **call), cost, rel_tol=1e-9)
    assert value(m, "llamonitor_metrics_spans_total") == 4
    label_names = {k for (_, labels) in m for k, _ in labels}
    assert not label_names & {"event_id", "trace_id", "span_id", "session_id", "response_id"}


# -- from tables ------------------------------------------------------------------------


def every_column_rows() -> list[dict[str, Any]]:
    """Spans with every LLM column set, values on and around the bucket bounds."""
    base = dict(provider="anthropic", model="claude", agent_name="planner",
                response_model="claude-2025", response_id="msg_1", total_tokens=1,
                cache_read_tokens=1, cache_write_tokens=1, reasoning_tokens=1,
                token_source="provider", input_cost_usd=0.1, output_cost_usd=0.1,
                cost_source="genai-prices", finish_reason="stop", temperature=0.5,
                max_tokens=9, prompt_hash="h", project_name="p")
    return [
        span_row(0, **base, duration_ms=10.0, input_tokens=4, output_tokens=5,
                 cost_usd=0.25, time_to_first_token_ms=20.0),  # on the bounds 0.01 s, 4
        span_row(1, **base, duration_ms=10.001, input_tokens=1, output_tokens=67108865,
                 cost_usd=0.5),  # just past 0.01 s; past the last token bound
        span_row(2, **base, duration_ms=90_000.0, input_tokens=None, output_tokens=0,
                 error=True, error_type="TimeoutError"),  # past 81.92 s: +Inf only
        span_row(3, **base, duration_ms=None, error=True),  # no duration, no error type
        span_row(4, operation_type="tool", operation_name="search", duration_ms=float("nan"),
                 cost_usd=-1.0),  # not observable values are left out
    ]


def test_a_table_with_every_llm_column_gives_exact_buckets_sums_and_labels() -> None:
    """Each value lands in the bucket whose bound it does not exceed (a value on
    a bound in that bucket), sums are exact, nulls, NaN and negative values are
    left out, failures carry error_type (``_OTHER`` without one), and our
    operation types map to the conventions' operation names."""
    state = SpanMetrics()
    state.update(table(every_column_rows()))
    m = exposition(state)
    chat = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "anthropic",
            "gen_ai_request_model": "claude", "gen_ai_agent_name": "planner",
            "llamonitor_operation_name": "op"}
    d = "gen_ai_client_operation_duration_seconds"
    ok = tuple(sorted(chat.items()))
    assert m[(f"{d}_bucket", tuple(sorted((*ok, ("le", "0.01")))))] == 1
    assert m[(f"{d}_bucket", tuple(sorted((*ok, ("le", "0.02")))))] == 2
    assert m[(f"{d}_count", ok)] == 2  # the failed spans have error_type
    assert math.isclose(m[(f"{d}_sum", ok)], 0.020001)
    timeout = {**chat, "error_type": "TimeoutError"}
    assert value(m, f"{d}_bucket", le="81.92", **timeout) == 0
    assert value(m, f"{d}_bucket", le="+Inf", **timeout) == 1
    assert value(m, f"{d}_count", error_type="_OTHER") == 0  # span 3 has no duration
    assert value(m, "llamonitor_errors_total", error_type="_OTHER", **chat) == 1
    assert value(m, "llamonitor_errors_total", error_type="TimeoutError", **chat) == 1
    t = "gen_ai_client_token_usage"
    inputs = {**chat, "gen_ai_token_type": "input"}
    assert value(m, f"{t}_bucket", le="1.0", **inputs) == 1
    assert value(m, f"{t}_bucket", le="4.0", **inputs) == 2
    assert value(m, f"{t}_count", **inputs) == 2 and value(m, f"{t}_sum", **inputs) == 5
    outputs = {**chat, "gen_ai_token_type": "output"}
    assert value(m, f"{t}_bucket", le="1.0", **outputs) == 1  # 0 tokens
    assert value(m, f"{t}_bucket", le="6.7108864e+07", **outputs) == 2
    assert value(m, f"{t}_bucket", le="+Inf", **outputs) == 3
    assert value(m, f"{t}_sum", **outputs) == 5 + 67108865
    f = "gen_ai_client_operation_time_to_first_chunk_seconds"
    assert value(m, f"{f}_bucket", le="0.02", **chat) == 1 and value(m, f"{f}_count") == 1
    assert value(m, "llamonitor_cost_usd_total", **chat) == 0.75
    assert value(m, "llamonitor_cost_usd_total") == 0.75  # the negative one is left out
    tool = {"gen_ai_operation_name": "execute_tool", "llamonitor_operation_name": "search"}
    assert value(m, f"{d}_count", **tool) == 0
    assert value(m, "llamonitor_metrics_spans_total") == 5
    assert len(TOKEN_BUCKETS) == 14 and DURATION_BUCKETS[-1] == 81.92


def test_our_text_is_what_prometheus_client_writes_of_the_same_collector() -> None:
    """The servers' own rendering of the span metrics (MetricsRegistry.render)
    parses to the very samples prometheus_client's generate_latest gives, label
    values needing escapes and folds included."""
    from llamonitor.export._exposition import MetricsRegistry

    state = SpanMetrics(max_label_values=1, max_series=2)
    rows = every_column_rows()
    rows += [span_row(9, model='we"ird\\mo\ndel', agent_name="ünï", duration_ms=3.0)]
    state.update(table(rows))
    ours = MetricsRegistry()
    ours.register(SpanMetricsCollector(state))
    text = ours.render().decode()
    assert parse(text) == exposition(state)
    assert value(parse(text), "llamonitor_metrics_series_folded_total") > 0
    assert value(parse(text), "llamonitor_metrics_label_values_folded_total") > 0


def test_operation_names_are_the_span_exporters() -> None:
    """Metrics and exported spans give an operation type the same
    gen_ai.operation.name (a type the spans leave without one keeps its own)."""
    from llamonitor.export._metric_names import OPERATION_NAMES, operation_names
    from llamonitor.export._otlp_spans import gen_ai_operation

    types = [*OPERATION_NAMES, "chat", "embeddings", "execute_tool", "invoke_agent",
             "retrieval", "agent_step", "guardrail", "session", "image_generation"]
    for operation_type in types:
        assert operation_names(operation_type) == (
            gen_ai_operation(operation_type) or operation_type
        ), operation_type


def test_batches_add_up_to_one_and_old_tables_lack_columns() -> None:
    """The same spans in one batch or three give the same metrics; a table of an
    older schema (no LLM columns) counts its durations with empty labels."""
    rows = every_column_rows()
    one, three = SpanMetrics(), SpanMetrics()
    one.update(table(rows))
    for part in (rows[:1], rows[1:3], rows[3:]):
        three.update(table(part))
    assert exposition(one) == exposition(three)
    old = pa.table({"operation_type": ["llm_call"], "operation_name": ["x"],
                    "duration_ms": [30.0]})
    state = SpanMetrics()
    state.update(old)
    m = exposition(state)
    assert value(m, "gen_ai_client_operation_duration_seconds_bucket", le="0.04",
                 gen_ai_operation_name="chat", llamonitor_operation_name="x") == 1


def test_label_values_past_the_cap_fold_into_other_and_are_counted() -> None:
    """max_label_values=3: the first three models keep their label, the spans of
    later ones count under ``other``, and the folded spans are counted by label."""
    state = SpanMetrics(max_label_values=3)
    rows = [span_row(i, model=f"model-{i % 5}", duration_ms=5.0) for i in range(50)]
    state.update(table(rows[:20]))
    state.update(table(rows[20:]))
    m = exposition(state)
    d = "gen_ai_client_operation_duration_seconds_count"
    for k in range(3):
        assert value(m, d, gen_ai_request_model=f"model-{k}") == 10
    assert value(m, d, gen_ai_request_model="other") == 20
    assert value(m, d) == 50
    assert value(m, "llamonitor_metrics_label_values_folded_total",
                 label="gen_ai_request_model") == 20
    assert value(m, "llamonitor_metrics_label_values", label="gen_ai_request_model") == 3
    assert {lab for (name, labels) in m if name == d for lab, _ in labels} <= {
        "gen_ai_operation_name", "gen_ai_request_model", "llamonitor_operation_name",
        "gen_ai_provider_name", "gen_ai_agent_name", "error_type",
    }


def test_label_sets_past_max_series_fold_into_the_all_other_set() -> None:
    """max_series=4: new label sets past four count in one set whose labels are
    all ``other`` (the token type kept), and the folds are counted by metric."""
    state = SpanMetrics(max_series=4)
    rows = [span_row(i, model=f"m{i}", operation_name=f"op{i}", duration_ms=1.0,
                     input_tokens=3) for i in range(10)]
    state.update(table(rows))
    m = exposition(state)
    d = "gen_ai_client_operation_duration_seconds_count"
    assert value(m, d) == 10
    assert value(m, d, gen_ai_request_model="other", llamonitor_operation_name="other",
                 gen_ai_operation_name="other") == 6
    assert len([k for k in m if k[0] == d]) == 5  # the cap, and the fold set
    assert value(m, "gen_ai_client_token_usage_count", gen_ai_token_type="input",
                 gen_ai_request_model="other") == 6
    assert value(m, "llamonitor_metrics_series_folded_total",
                 metric="gen_ai_client_operation_duration_seconds") == 6


# -- the pipeline's own metrics -----------------------------------------------------


class _Down(ExporterConfig):
    """An exporter whose receiver refuses every write."""

    kind: ClassVar[str] = "down"
    spool: bool = False

    def create_backend(self) -> Any:
        class Backend:
            def write_table(self, table: Any) -> None:
                raise ConnectionRefusedError("receiver down")

        return Backend()


@monitor_llm("flow")
def _flow(i: int) -> int:
    return i


def test_pipeline_metrics_move_as_spans_flow_and_a_sink_fails(tmp_path: Path) -> None:
    """llamonitor_* follow health_check(): events written by each sink, the
    failing sink's failures by reason and its retries, spans sampled out, the
    queue, and a write-duration histogram per sink."""
    config = MonitorConfig.for_local_dev(
        tmp_path, exporters=[_Down()], prometheus=PrometheusConfig(port=0),
        max_retries=1, retry_backoff_seconds=0.01,
    )
    writer = llamonitor.initialize_monitoring(config)
    server = metrics_server()
    assert server is not None
    before = scrape(server.url)
    assert value(before, "llamonitor_events_total", sink="parquet") == 0
    for i in range(30):
        _flow(i)
    assert llamonitor.flush(10)
    m = scrape(server.url)
    health = writer.health_check()
    assert value(m, "llamonitor_running") == 1
    assert value(m, "llamonitor_events_received_total") == 30
    assert value(m, "llamonitor_events_total", sink="parquet") == 30
    assert value(m, "llamonitor_events_total", sink="prometheus#1") == 30  # exporters[1]
    down = health["sinks"]["down"]
    assert down["failed"] == 30
    assert value(m, "llamonitor_events_failed_total", sink="down",
                 reason="retries_exhausted") == 30
    assert value(m, "llamonitor_events_retried_total", sink="down") == down["retried"] > 0
    assert value(m, "llamonitor_sink_healthy", sink="down") == 0
    assert value(m, "llamonitor_sink_healthy", sink="parquet") == 1
    assert value(m, "llamonitor_queue_size") == health["queue_size"] == 0
    assert value(m, "llamonitor_events_dropped_total", reason="queue_full") == 0
    w = "llamonitor_sink_write_duration_seconds"
    writes = health["sinks"]["parquet"]["write_seconds"]["count"]
    assert writes >= 1 and value(m, f"{w}_count", sink="parquet") == writes
    assert value(m, f"{w}_bucket", sink="parquet", le="+Inf") == writes
    assert value(m, f"{w}_count", sink="down") == down["write_seconds"]["count"] >= 2
    assert value(m, "gen_ai_client_operation_duration_seconds_count",
                 llamonitor_operation_name="flow") == 30
    llamonitor.shutdown_monitoring()
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url, timeout=2)


def test_sampled_out_and_dropped_spans_are_counted_by_reason(tmp_path: Path) -> None:
    """sample_rate=0: every span is dropped for sampled_out, counted under that
    reason, and no span reaches the metrics."""
    config = MonitorConfig.for_local_dev(tmp_path, sample_rate=0.0,
                                         prometheus=PrometheusConfig(port=0))
    llamonitor.initialize_monitoring(config)
    for i in range(7):
        _flow(i)
    assert llamonitor.flush(10)
    server = metrics_server()
    assert server is not None
    m = scrape(server.url)
    assert value(m, "llamonitor_events_dropped_total", reason="sampled_out") == 7
    assert value(m, "llamonitor_metrics_spans_total") == 0


# -- configuration and the servers' guards ------------------------------------------


def test_prometheus_from_the_environment_starts_and_stops_with_monitoring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LLMOPS_PROMETHEUS__PORT turns the exporter and its server on;
    shutdown_monitoring stops the server; ``prometheus=True`` is the defaults."""
    monkeypatch.setenv("LLMOPS_PROMETHEUS__PORT", "0")
    monkeypatch.setenv("LLMOPS_PROMETHEUS__MAX_LABEL_VALUES", "7")
    monkeypatch.setenv("LLMOPS_STORAGE__OUTPUT_DIR", str(tmp_path))
    config = MonitorConfig.from_env()
    assert isinstance(config.prometheus, PrometheusConfig)
    assert (config.prometheus.port, config.prometheus.max_label_values) == (0, 7)
    llamonitor.initialize_monitoring(config)
    server = metrics_server()
    assert server is not None
    assert "llamonitor_events_received_total" in httpx.get(server.url, timeout=5).text
    llamonitor.shutdown_monitoring()
    assert not server.running and metrics_server() is None
    default = MonitorConfig(prometheus=True).prometheus
    assert isinstance(default, PrometheusConfig) and default.port == 9464
    assert MonitorConfig(prometheus=False).prometheus is None
    monkeypatch.setenv("LLMOPS_PROMETHEUS__PORTT", "1")
    with pytest.raises(ValueError, match="prometheus"):
        MonitorConfig.from_env()


def test_bad_settings_and_a_taken_port_fail_at_start_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off loopback without a token, a short token, a taken port, or no
    prometheus_client: initialize_monitoring raises a ConfigurationError that
    names the setting (and the extra)."""
    def start(**settings: Any) -> None:
        config = MonitorConfig.for_local_dev(tmp_path, prometheus=PrometheusConfig(**settings))
        llamonitor.initialize_monitoring(config)

    with pytest.raises(ConfigurationError, match=r"prometheus\.addr.*token"):
        start(port=0, addr="0.0.0.0")
    with pytest.raises(ConfigurationError, match=r"prometheus\.token"):
        start(port=0, token="short")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(ConfigurationError, match=r"prometheus\.port"):
            start(port=taken.getsockname()[1])
    assert metrics_server() is None
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError, match=r"llamonitor\[prometheus\]"):
        start(port=0)


def test_the_metrics_server_answers_localhost_and_the_token_only() -> None:
    """start_metrics_server: a Host that is not this machine gets 421 (DNS
    rebinding), a missing or wrong token 401, another path 404; off loopback
    it needs a token or allow_remote."""
    server = start_metrics_server(0, token=TOKEN)
    try:
        url = server.url
        assert httpx.get(url, timeout=5).status_code == 401
        bad = {"authorization": "Bearer wrong-token-0123456789"}
        assert httpx.get(url, headers=bad, timeout=5).status_code == 401
        good = {"authorization": f"Bearer {TOKEN}"}
        ok = httpx.get(url, headers=good, timeout=5)
        assert ok.status_code == 200 and ok.headers["x-content-type-options"] == "nosniff"
        rebound = {**good, "host": "attacker.example:9464"}
        assert httpx.get(url, headers=rebound, timeout=5).status_code == 421
        other = url.replace("/metrics", "/api")
        assert httpx.get(other, headers=good, timeout=5).status_code == 404
        long = httpx.get(url + "?x=" + "a" * 9000, headers=good, timeout=5)
        assert long.status_code == 414
    finally:
        server.stop()
    with pytest.raises(ConfigurationError, match=r"metrics\.addr"):
        start_metrics_server(0, "0.0.0.0")
    remote = start_metrics_server(0, "0.0.0.0", allow_remote=True)
    try:
        assert httpx.get(remote.url, headers={"host": "metrics.example"}, timeout=5).is_success
    finally:
        remote.stop()


def test_two_prometheus_exporters_in_one_registry_are_refused(tmp_path: Path) -> None:
    """A second exporter registering the same metrics in the same registry is a
    configuration error naming prometheus, not a scrape that fails later."""
    config = MonitorConfig.for_local_dev(
        tmp_path, exporters=[PrometheusConfig(port=None)],
        prometheus=PrometheusConfig(port=None),
    )
    with pytest.raises(ConfigurationError, match="prometheus"):
        llamonitor.initialize_monitoring(config)


def test_the_collector_joins_the_applications_own_registry(tmp_path: Path) -> None:
    """PrometheusConfig(registry=...) serves the span and pipeline metrics with
    the application's own, from its registry."""
    registry = prometheus_client.CollectorRegistry()
    mine = prometheus_client.Counter("app_requests", "the app's", registry=registry)
    mine.inc()
    config = MonitorConfig.for_local_dev(
        tmp_path, prometheus=PrometheusConfig(port=None, registry=registry)
    )
    llamonitor.initialize_monitoring(config)
    _flow(1)
    assert llamonitor.flush(10)
    m = parse(prometheus_client.generate_latest(registry).decode())
    assert value(m, "app_requests_total") == 1
    assert value(m, "gen_ai_client_operation_duration_seconds_count") == 1
    assert value(m, "llamonitor_events_total", sink="parquet") == 1
    llamonitor.shutdown_monitoring()
    left = parse(prometheus_client.generate_latest(registry).decode())
    assert value(left, "app_requests_total") == 1
    assert not any(name.startswith(("gen_ai", "llamonitor")) for name, _ in left)


# -- the OTLP form ------------------------------------------------------------------------


def test_the_otlp_request_decodes_to_the_same_numbers() -> None:
    """metrics_request(state) is a valid ExportMetricsServiceRequest: decoded by
    opentelemetry-proto it has the conventions' names, units, attribute keys,
    cumulative explicit-bucket histograms and monotonic sums, with the numbers
    the Prometheus exposition has."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

    state = SpanMetrics()
    state.update(table(every_column_rows()))
    data = metrics_request(state, service_name="svc").SerializeToString()
    request = ExportMetricsServiceRequest.FromString(data)
    (resource,) = request.resource_metrics
    assert {a.key: a.value.string_value for a in resource.resource.attributes} == {
        "service.name": "svc"
    }
    (scope,) = resource.scope_metrics
    assert scope.scope.name == "llamonitor"
    by_name = {m.name: m for m in scope.metrics}
    assert set(by_name) == {
        "gen_ai.client.token.usage", "gen_ai.client.operation.duration",
        "gen_ai.client.operation.time_to_first_chunk", "llamonitor.cost.usd",
        "llamonitor.errors",
    }
    cumulative = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    tokens = by_name["gen_ai.client.token.usage"]
    assert tokens.unit == "{token}" and tokens.histogram.aggregation_temporality == cumulative
    points = {
        tuple(sorted((a.key, a.value.string_value) for a in p.attributes)): p
        for p in tokens.histogram.data_points
    }
    key = tuple(sorted({
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude", "gen_ai.token.type": "output",
        "gen_ai.agent.name": "planner", "llamonitor.operation.name": "op",
    }.items()))
    out = points[key]
    assert list(out.explicit_bounds) == [float(b) for b in TOKEN_BUCKETS]
    assert list(out.bucket_counts) == [1, 0, 1] + [0] * 11 + [1]
    assert (out.count, out.sum) == (3, 5 + 67108865)
    assert out.start_time_unix_nano <= out.time_unix_nano
    duration = by_name["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    errors = [
        p for p in duration.histogram.data_points
        if any(a.key == "error.type" for a in p.attributes)
    ]
    assert sum(p.count for p in errors) == 1
    cost = by_name["llamonitor.cost.usd"].sum
    assert cost.is_monotonic and cost.aggregation_temporality == cumulative
    assert sum(p.as_double for p in cost.data_points) == 0.75
    assert sum(p.as_int for p in by_name["llamonitor.errors"].sum.data_points) == 2


# -- llamonitor serve ---------------------------------------------------------------------


WRITER = textwrap.dedent(
    """
    import sys
    import llamonitor
    from llamonitor import MonitorConfig, StorageConfig, monitor_llm

    kind, where, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind == "parquet":
        storage = StorageConfig(backend="parquet", output_dir=where, flush_interval_seconds=0.1)
    else:
        storage = StorageConfig(backend="sqlite", connection_string="sqlite:///" + where,
                                flush_interval_seconds=0.1)
    llamonitor.initialize_monitoring(MonitorConfig(storage=storage))

    @monitor_llm(operation_name="elsewhere")
    def op() -> str:
        return "ok"

    for _ in range(n):
        op()
    assert llamonitor.shutdown_monitoring(20)
    """
)


@pytest.mark.parametrize("kind", ["parquet", "sqlite"])
def test_serve_counts_this_process_and_other_writers_once(tmp_path: Path, kind: str) -> None:
    """/metrics of the server in the writer's process: spans of this process
    (the tap) and of another process writing the same store (the poller: new
    Parquet files, recent SQL rows) are counted, each once though the poller
    also reads this process's spans; the pipeline's metrics are there too."""
    from llamonitor.server import ServerConfig

    store = tmp_path / ("store" if kind == "parquet" else "spans.db")
    if kind == "parquet":
        storage = StorageConfig(backend="parquet", output_dir=store, flush_interval_seconds=0.1)
    else:
        storage = StorageConfig(backend="sqlite", connection_string=f"sqlite:///{store}",
                                flush_interval_seconds=0.1)
    writer = llamonitor.initialize_monitoring(
        MonitorConfig(storage=storage), serve=ServerConfig(port=0, poll_interval_seconds=0.2)
    )
    url = writer.server.url + "metrics"
    assert value(scrape(url), "llamonitor_metrics_spans_total") == 0  # the feeds start
    for i in range(5):
        _flow(i)
    subprocess.run([sys.executable, "-c", WRITER, kind, str(store), "3"], check=True, timeout=120)
    d = "gen_ai_client_operation_duration_seconds_count"
    assert wait_for(lambda: value(scrape(url), d, llamonitor_operation_name="elsewhere") == 3)
    assert wait_for(lambda: value(scrape(url), d, llamonitor_operation_name="flow") == 5)
    time.sleep(0.6)  # a few more polls of the files holding this process's spans
    m = scrape(url)
    assert value(m, "llamonitor_metrics_spans_total") == 8
    assert value(m, "llamonitor_events_total", sink=kind) == 5
    llamonitor.shutdown_monitoring()


def test_serve_metrics_follows_the_token_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a token, /metrics needs it like every route (Prometheus sends it as
    a bearer token); without prometheus_client it is a 503 naming the extra."""
    from fastapi.testclient import TestClient

    from llamonitor.server import ServerConfig, create_app, open_server_store

    store = open_server_store(tmp_path)
    try:
        app = create_app(store, ServerConfig(token=TOKEN))
        with TestClient(app, base_url="http://127.0.0.1:8585") as client:
            assert client.get("/metrics").status_code == 401
            ok = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200
            assert ok.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert "# TYPE gen_ai_client_token_usage histogram" in ok.text
            monkeypatch.setitem(sys.modules, "prometheus_client", None)
            missing = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
            assert missing.status_code == 503
            assert "llamonitor[prometheus]" in missing.json()["error"]
    finally:
        store.close()


# -- a real Prometheus server -----------------------------------------------------------


def _prometheus_binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is None:
        message = "the prometheus binary is not installed (apt-get install prometheus)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A Prometheus server on a free loopback port scraping ``target`` every second."""

    def __init__(self, binary: str, directory: Path, target: str, token: str) -> None:
        self.port = _free_port()
        config = directory / "prometheus.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "llamonitor",
                "authorization": {"credentials": token},
                "static_configs": [{"targets": [target]}],
            }],
        }))
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": promql}, timeout=5
        )
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, promql: str) -> float | None:
        try:
            result = self.query(promql)
        except httpx.HTTPError:
            return None
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@monitor_llm("slow.call", custom_attributes={
    "gen_ai.request.model": "gpt-test", "gen_ai.provider.name": "openai",
    "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20,
})
def _slow_call() -> str:
    time.sleep(0.2)
    return "ok"


def test_a_real_prometheus_scrapes_us_and_promql_answers(tmp_path: Path) -> None:
    """Debian's prometheus scrapes the exporter's server (with its token) every
    second; PromQL over its HTTP API gives the token sums, a request rate and the
    histogram_quantile of the durations (all in the 0.16-0.32 s bucket: its
    median is that bucket's middle)."""
    binary = _prometheus_binary()
    config = MonitorConfig.for_local_dev(
        tmp_path / "store", prometheus=PrometheusConfig(port=0, token=TOKEN)
    )
    llamonitor.initialize_monitoring(config)
    server = metrics_server()
    assert server is not None
    prom = Prometheus(binary, tmp_path, f"127.0.0.1:{server.port}", TOKEN)
    series = 'gen_ai_client_operation_duration_seconds_count{gen_ai_request_model="gpt-test"}'
    count = f"sum({series})"

    def calls(n: int) -> None:
        threads = [threading.Thread(target=_slow_call) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert llamonitor.flush(10)

    try:
        calls(2)  # a series must be seen before it grows, for a rate
        assert wait_for(lambda: prom.scalar(count) == 2, 60), "no scrape"
        calls(2)
        assert wait_for(lambda: prom.scalar(count) == 4, 30)
        tokens = 'sum(gen_ai_client_token_usage_sum{gen_ai_token_type="input"})'
        assert prom.scalar(tokens) == 400
        output = 'sum(gen_ai_client_token_usage_sum{gen_ai_token_type="output"})'
        assert prom.scalar(output) == 80
        assert (prom.scalar(f"sum(rate({series}[1m]))") or 0) > 0
        median = (
            "histogram_quantile(0.5, sum by (le) (gen_ai_client_operation_duration_seconds_bucket"
            '{llamonitor_operation_name="slow.call"}))'
        )
        assert math.isclose(prom.scalar(median) or 0, 0.24, rel_tol=1e-9)
        events = 'llamonitor_events_total{sink="parquet"}'
        assert wait_for(lambda: prom.scalar(events) == 4, 10)
    finally:
        prom.stop()
        llamonitor.shutdown_monitoring()


class MetricsReceiver:
    """An OTLP/HTTP metrics receiver: decodes each ExportMetricsServiceRequest
    with opentelemetry-proto (gzip or not) and keeps it."""

    def __init__(self) -> None:
        import gzip
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
            ExportMetricsServiceResponse,
        )

        self.requests: list[tuple[str, Any]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                received.append((self.path, ExportMetricsServiceRequest.FromString(body)))
                out = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def durations(self) -> int:
        """The span count of the latest request's duration histogram."""
        if not self.requests:
            return 0
        _, request = self.requests[-1]
        (scope,) = request.resource_metrics[0].scope_metrics
        (metric,) = [m for m in scope.metrics if m.name == "gen_ai.client.operation.duration"]
        return sum(p.count for p in metric.histogram.data_points)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_the_metrics_are_pushed_over_otlp_every_interval_and_at_shutdown(
    tmp_path: Path,
) -> None:
    """PrometheusConfig(otlp=...): the cumulative metrics reach an OTLP/HTTP
    receiver at /v1/metrics (gzip) every interval, and once more at shutdown
    with every span."""
    from llamonitor.export import OTLPExporterConfig

    receiver = MetricsReceiver()
    try:
        otlp = OTLPExporterConfig(endpoint=receiver.url, compression="gzip",
                                  service_name="pushed")
        config = MonitorConfig.for_local_dev(
            tmp_path, prometheus=PrometheusConfig(port=None, otlp=otlp,
                                                  otlp_interval_seconds=0.2),
        )
        llamonitor.initialize_monitoring(config)
        for i in range(3):
            _flow(i)
        assert llamonitor.flush(10)
        assert wait_for(lambda: receiver.durations() == 3)
        _flow(4)
        llamonitor.shutdown_monitoring()
        assert receiver.durations() == 4  # the last push, at shutdown
        path, request = receiver.requests[-1]
        assert path == "/v1/metrics"
        resource = request.resource_metrics[0].resource
        assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == (
            "pushed"
        )
    finally:
        receiver.stop()


def test_metric_instruments_show_on_both_metrics_endpoints(tmp_path: Path) -> None:
    """A llamonitor.metrics counter made by the application is scraped from
    start_metrics_server's /metrics and from llamonitor serve's /metrics."""
    from fastapi.testclient import TestClient

    from llamonitor import metrics
    from llamonitor.server import create_app, open_server_store

    metrics.counter("prom_wired_total", "Scraped on both endpoints", labels=["model"]).labels(
        model="gpt-4o"
    ).inc(3)
    server = start_metrics_server(0)
    try:
        text = httpx.get(server.url, timeout=5).text
    finally:
        server.stop()
    assert 'prom_wired_total{model="gpt-4o"} 3.0' in text
    store = open_server_store(tmp_path)
    try:
        with TestClient(create_app(store), base_url="http://127.0.0.1:8585") as client:
            served = client.get("/metrics").text
    finally:
        store.close()
    assert 'prom_wired_total{model="gpt-4o"} 3.0' in served


def test_collector_points_show_on_both_metrics_endpoints(tmp_path: Path) -> None:
    """The running collectors' last points (system, container, application and a
    user's own, GPU-like, with labels) are scraped from start_metrics_server's
    /metrics and from serve's /metrics, in text a Prometheus parser reads, each
    family once (the pipeline's own metrics are not served twice)."""
    from fastapi.testclient import TestClient

    from llamonitor import metrics
    from llamonitor.metrics import (
        ApplicationCollector,
        ContainerCollector,
        Metric,
        MetricCollector,
        PointBuffer,
        SystemCollector,
    )
    from llamonitor.server import create_app, open_server_store

    class Gpu(MetricCollector):
        name = "gpu_test"

        def collect(self) -> list[Metric]:
            return [Metric.gauge("gpu_usage_percent", 37.5, {"gpu": "0"})]

        def get_metadata(self) -> dict[str, Any]:
            return {"name": self.name}

    clock = [0.0]
    buffer = PointBuffer()
    scheduler = metrics.configure_collectors(
        collectors=[
            SystemCollector(),
            ContainerCollector(),
            ApplicationCollector(clock=lambda: clock[0]),
            Gpu(),
        ],
        sink=buffer,
        start=False,
    )
    try:
        start = time.monotonic() + 1.0  # every collector is due (they were added before)
        scheduler.run_due(start)
        clock[0] = 60.0
        scheduler.run_due(start + 60.0)  # all due again: the second collection
        rss = next(
            r["value"]
            for r in buffer.table().to_pylist()[::-1]
            if r["name"] == "process_memory_rss_bytes"
        )
        server = start_metrics_server(0)
        try:
            text = httpx.get(server.url, timeout=5).text
        finally:
            server.stop()
        store = open_server_store(tmp_path)
        try:
            with TestClient(create_app(store), base_url="http://127.0.0.1:8585") as client:
                served = client.get("/metrics").text
        finally:
            store.close()
    finally:
        metrics.stop_collectors()
    for body in (text, served):
        families = {f.name: f for f in text_string_to_metric_families(body)}
        types = [line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")]
        assert len(types) == len(set(types)), "a family served twice"
        (gpu,) = families["gpu_usage_percent"].samples
        assert gpu.labels == {"gpu": "0"} and gpu.value == 37.5
        (sample,) = families["process_memory_rss_bytes"].samples
        assert sample.value == rss
        assert families["process_cpu_seconds"].type == "counter"
        assert "llamonitor_spans_per_second" in families
        if Path("/sys/fs/cgroup").is_dir():
            assert any(n.startswith("container_") for n in families)
