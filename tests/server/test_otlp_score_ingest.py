"""The receiver's scores (``gen_ai.evaluation.result`` log records on
``/v1/logs`` and span events on ``/v1/traces``), on the real app, writer and
stores: the attributes a score keeps follow the content policy; scores no
store holds, or a store refused, are said in the answer and counted, never
acknowledged as stored; a failing score store never costs a request's spans;
evaluation events that are not scores are counted and explained."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (  # noqa: E402
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import Span  # noqa: E402

from llamonitor import MonitorConfig, StorageConfig  # noqa: E402
from llamonitor.server import ServerConfig, create_app, open_server_store  # noqa: E402
from llamonitor.server._ingest import Ingestor  # noqa: E402
from llamonitor.storage._scores import read_scores  # noqa: E402
from llamonitor.transport.writer import MonitoringWriter  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent.parent))
from test_score_store import ch_execute  # noqa: E402

pytest_plugins = ["_clickhouse"]  # the clickhouse_server fixture

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
T_NS = 1_772_366_400 * 10**9
PROTOBUF = {"content-type": "application/x-protobuf"}
PROMPT = "ask bob@example.com about the refund"
EXPLANATION = "the answer cites carol@example.com"  # the score's comment: kept as sent


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    return KeyValue(key=key, value=AnyValue(double_value=value))


def evaluation(**extra: Any) -> list[KeyValue]:
    attrs = {"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.5,
             "gen_ai.evaluation.explanation": EXPLANATION,
             "gen_ai.input.messages": PROMPT, "gen_ai.response.id": "chatcmpl-1", **extra}
    return [kv(k, v) for k, v in attrs.items() if v is not None]


def logs_request(*records: list[KeyValue]) -> bytes:
    req = ExportLogsServiceRequest()
    scope = req.resource_logs.add().scope_logs.add()
    for attrs in records:
        record = scope.log_records.add(event_name="gen_ai.evaluation.result",
                                       trace_id=bytes.fromhex(TRACE),
                                       span_id=bytes.fromhex(SPAN), time_unix_nano=T_NS)
        record.attributes.extend(attrs)
    return req.SerializeToString()


def traces_request(*events: list[KeyValue]) -> bytes:
    """One span carrying ``events`` as gen_ai.evaluation.result span events."""
    span = Span(trace_id=bytes.fromhex(TRACE), span_id=bytes.fromhex(SPAN), name="chat",
                start_time_unix_nano=T_NS, end_time_unix_nano=T_NS + 10**9)
    for attrs in events:
        span.events.add(name="gen_ai.evaluation.result", time_unix_nano=T_NS + 2 * 10**9,
                        attributes=attrs)
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.append(span)
    return req.SerializeToString()


@dataclass
class Receiver:
    client: TestClient
    ingestor: Ingestor
    directory: Path

    def post(self, path: str, body: bytes) -> Any:
        return self.client.post(path, content=body, headers=PROTOBUF)

    def scores(self) -> list[dict[str, Any]]:
        return list(read_scores(StorageConfig(output_dir=self.directory)).to_pylist())

    def spans(self) -> list[str]:
        assert self.ingestor.writer.flush(30)
        store = open_server_store(self.directory)
        try:
            return [row["span_id"] for row in store.rows("SELECT span_id FROM {rel}")]
        finally:
            store.close()

    def health(self) -> dict[str, Any]:
        otlp: dict[str, Any] = self.client.get("/api/health").json()["otlp"]
        return otlp


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Any]:
    """``receiver(storage=..., **monitor_config)``: the server app receiving OTLP
    through its own writer into ``tmp_path/store`` (Parquet unless ``storage``)."""
    made: list[tuple[TestClient, Any]] = []

    def start(storage: StorageConfig | None = None, **config: Any) -> Receiver:
        directory = tmp_path / "store"
        writer = MonitoringWriter(MonitorConfig(
            storage=storage or StorageConfig(output_dir=directory, flush_interval_seconds=0.05),
            spool_enabled=False, **config,
        )).start()
        served = open_server_store(tmp_path / "served")
        ingestor = Ingestor(writer, True, 64 * 1024 * 1024)
        client = TestClient(create_app(served, ServerConfig(), ingestor=ingestor),  # type: ignore[arg-type]
                            base_url="http://127.0.0.1:8585")
        made.append((client, served))
        return Receiver(client, ingestor, directory)

    yield start
    for client, served in made:
        client.close()
        served.close()
        app = client.app.app  # type: ignore[attr-defined]
        app.state.llamonitor.extras["otlp"].close()


def _kept(score: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = json.loads(score["metadata"])["otel.attributes"]
    return attrs


# -- 1. the content policy -------------------------------------------------------


@pytest.mark.parametrize("route", ["logs", "traces"])
def test_a_scores_content_attributes_are_dropped_with_capture_off(
    receiver: Any, route: str
) -> None:
    """capture_content off (the default): a score's kept attributes hold no
    prompt (gen_ai.input.messages); the other ones and the explanation stay."""
    r = receiver()
    if route == "logs":
        assert r.post("/v1/logs", logs_request(evaluation())).status_code == 200
    else:
        assert r.post("/v1/traces", traces_request(evaluation())).status_code == 200
    (score,) = r.scores()
    assert _kept(score) == {"gen_ai.response.id": "chatcmpl-1"}
    assert "bob@" not in json.dumps(score, default=str)
    assert score["comment"] == EXPLANATION


@pytest.mark.parametrize("route", ["logs", "traces"])
def test_a_scores_content_attributes_are_redacted_with_capture_on(
    receiver: Any, route: str
) -> None:
    """capture_content on: the prompt is kept, through the redaction rules
    (built-in and redact_patterns), once (not redacted twice on /v1/traces)."""
    r = receiver(capture_content=True, redact_patterns=["refund"])
    if route == "logs":
        assert r.post("/v1/logs", logs_request(evaluation())).status_code == 200
    else:
        assert r.post("/v1/traces", traces_request(evaluation())).status_code == 200
    (score,) = r.scores()
    assert _kept(score) == {"gen_ai.input.messages": "ask [EMAIL] about the [REDACTED]",
                            "gen_ai.response.id": "chatcmpl-1"}
    assert score["comment"] == EXPLANATION


# -- 2. no store holds scores ----------------------------------------------------


def test_scores_no_store_holds_are_rejected_and_counted(receiver: Any) -> None:
    """A writer whose store holds no scores (memory, a custom backend): /v1/logs
    reports the scores rejected with the reason, /v1/traces accepts the span
    and says the score was not stored; both are counted in scores_dropped."""
    r = receiver(storage=StorageConfig(backend="memory"))
    answer = r.post("/v1/logs", logs_request(evaluation(), evaluation()))
    assert answer.status_code == 200
    partial = ExportLogsServiceResponse.FromString(answer.content).partial_success
    assert partial.rejected_log_records == 2
    assert "no store of this server holds scores" in partial.error_message
    assert "memory" in partial.error_message
    traces = r.post("/v1/traces", traces_request(evaluation()))
    assert traces.status_code == 200
    spans = ExportTraceServiceResponse.FromString(traces.content).partial_success
    assert spans.rejected_spans == 0
    assert "no store of this server holds scores" in spans.error_message
    health = r.health()
    assert health["scores_dropped"] == 3 and health["scores_accepted"] == 0
    assert health["spans_accepted"] == 1


# -- 3. a failing score store ----------------------------------------------------


def _block_scores(directory: Path) -> None:
    """A file where the Parquet store's scores directory goes: writing scores
    there fails (an OSError), writing spans does not."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "scores").write_text("not a directory")


def test_a_failing_score_store_never_costs_the_spans(receiver: Any, tmp_path: Path) -> None:
    """/v1/traces whose store cannot take scores: the span is accepted and
    stored, the answer says the score was not (and why), scores_failed counts it."""
    r = receiver()
    _block_scores(r.directory)
    answer = r.post("/v1/traces", traces_request(evaluation()))
    assert answer.status_code == 200
    partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
    assert partial.rejected_spans == 0
    assert "1 score(s) not stored" in partial.error_message
    assert r.spans() == [SPAN]
    health = r.health()
    assert health["scores_failed"] == 1 and health["spans_accepted"] == 1
    assert health["refused_busy"] == 0


def test_every_score_store_is_tried_after_one_fails(receiver: Any, tmp_path: Path) -> None:
    """The first store fails for now: the scores still go to the next one, but
    /v1/logs answers 503 (a 200 would make the sender drop what the first store
    never got); /v1/traces keeps its span and names the store that failed."""
    other = tmp_path / "other"
    r = receiver(extra_backends=[StorageConfig(output_dir=other)])
    _block_scores(r.directory)
    answer = r.post("/v1/logs", logs_request(evaluation()))
    assert answer.status_code == 503 and answer.headers["retry-after"]
    assert f"not in parquet {r.directory}" in answer.text
    (score,) = read_scores(StorageConfig(output_dir=other)).to_pylist()
    assert score["name"] == "relevance"
    health = r.health()
    assert health["refused_busy"] == 1 and health["scores_accepted"] == 0
    traces = r.post("/v1/traces", traces_request(evaluation(**{
        "gen_ai.evaluation.name": "groundedness"})))
    assert traces.status_code == 200
    partial = ExportTraceServiceResponse.FromString(traces.content).partial_success
    assert partial.rejected_spans == 0
    assert f"stored in parquet {other} only, not in parquet {r.directory}" in partial.error_message
    names = {s["name"] for s in read_scores(StorageConfig(output_dir=other)).to_pylist()}
    assert names == {"relevance", "groundedness"}


def test_logs_sent_again_reach_the_store_that_failed_once(
    receiver: Any, tmp_path: Path
) -> None:
    """The sender's retry of a 503 that one store answered and another did not:
    once the failed store is back, the same request is a 200 and each store
    holds the score once (an upsert by score_id, not a second row)."""
    other = tmp_path / "other"
    r = receiver(extra_backends=[StorageConfig(output_dir=other)])
    _block_scores(r.directory)
    body = logs_request(evaluation())
    assert r.post("/v1/logs", body).status_code == 503
    (r.directory / "scores").unlink()  # the store is back
    answer = r.post("/v1/logs", body)
    assert answer.status_code == 200
    assert not ExportLogsServiceResponse.FromString(answer.content).HasField("partial_success")
    assert [s["name"] for s in r.scores()] == ["relevance"]
    assert [s["name"] for s in read_scores(StorageConfig(output_dir=other)).to_pylist()] == [
        "relevance"]
    health = r.health()
    assert health["scores_accepted"] == 1 and health["refused_busy"] == 1


def _refusing_sqlite(path: Path) -> StorageConfig:
    """A SQLite store whose score table refuses every row for its content (a
    CHECK no value passes): an error that a retry would not fix."""
    import sqlite3

    from llamonitor.storage import _sql_scores

    storage = StorageConfig(backend="sqlite", output_dir=path.parent,
                            connection_string=f"sqlite:///{path}")
    _sql_scores.write(storage, "sqlite", _sql_scores.SCORES.empty())  # the table, as made
    conn = sqlite3.connect(path)
    (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'llamonitor_scores'"
                          ).fetchone()
    conn.execute("DROP TABLE llamonitor_scores")
    conn.execute(ddl[:ddl.rindex(")")] + ", CHECK (0))")
    conn.commit()
    conn.close()
    return storage


def test_logs_a_store_refuses_for_good_are_rejected_where_they_are(
    receiver: Any, tmp_path: Path
) -> None:
    """One store takes the scores, another refuses them for their content: no
    retry would help, so a 200 whose partial_success counts them rejected and
    says where they are stored and why the other store has none."""
    r = receiver(extra_backends=[_refusing_sqlite(tmp_path / "scores.db")])
    answer = r.post("/v1/logs", logs_request(evaluation(), evaluation(**{
        "gen_ai.evaluation.name": "groundedness"})))
    assert answer.status_code == 200
    partial = ExportLogsServiceResponse.FromString(answer.content).partial_success
    assert partial.rejected_log_records == 2
    assert f"2 score(s) stored in parquet {r.directory} only, not in sqlite" in (
        partial.error_message)
    assert "ScoresRefused" in partial.error_message
    assert {s["name"] for s in r.scores()} == {"relevance", "groundedness"}
    health = r.health()
    assert health["scores_failed"] == 2 and health["scores_accepted"] == 0
    assert health["refused_busy"] == 0


def test_logs_a_store_cannot_take_now_are_a_counted_503(receiver: Any) -> None:
    """/v1/logs whose only score store fails: 503 + Retry-After (the client
    sends them again), counted in refused_busy."""
    r = receiver()
    _block_scores(r.directory)
    answer = r.post("/v1/logs", logs_request(evaluation()))
    assert answer.status_code == 503 and answer.headers["retry-after"]
    health = r.health()
    assert health["refused_busy"] == 1 and health["scores_accepted"] == 0


def test_grpc_logs_a_store_cannot_take_now_are_counted(tmp_path: Path) -> None:
    """The gRPC LogsService: UNAVAILABLE, counted in refused_busy as on HTTP."""
    grpc = pytest.importorskip("grpc")
    from llamonitor.server import start_server

    _block_scores(tmp_path / "server")
    handle = start_server(ServerConfig(port=0, otlp_grpc_port=0), directory=tmp_path / "server")
    try:
        assert handle.receive is not None and handle.receive.grpc is not None
        with grpc.insecure_channel(f"127.0.0.1:{handle.receive.grpc.port}") as channel:
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                request_serializer=lambda b: b,
                response_deserializer=ExportLogsServiceResponse.FromString,
            )
            with pytest.raises(grpc.RpcError) as raised:
                export(logs_request(evaluation()), timeout=30)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert handle.receive.ingestor.health()["refused_busy"] == 1
    finally:
        handle.stop()


# -- 4. evaluation span events that are not scores -------------------------------


def test_span_events_that_are_not_scores_are_counted_and_explained(receiver: Any) -> None:
    """One span, three evaluation events: without a name, with a value that is
    no number, a good one. The span and the good score are stored; the two
    others are counted (scores_rejected) and said in the answer."""
    r = receiver()
    answer = r.post("/v1/traces", traces_request(
        evaluation(**{"gen_ai.evaluation.name": None}),
        evaluation(**{"gen_ai.evaluation.score.value": "high"}),
        evaluation(),
    ))
    assert answer.status_code == 200
    partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
    assert partial.rejected_spans == 0
    message = partial.error_message
    assert "rejected 2 gen_ai.evaluation.result event(s)" in message
    assert f"span {SPAN} events[0]" in message and "'high' is not a number" in message
    assert [s["name"] for s in r.scores()] == ["relevance"]
    assert r.spans() == [SPAN]
    health = r.health()
    assert health["scores_rejected"] == 2 and health["scores_accepted"] == 1


def test_logs_a_store_refuses_some_of_are_counted_one_by_one(
    receiver: Any, clickhouse_server: Any
) -> None:
    """ClickHouse writes the scores it can hold and refuses one whose time a
    DateTime cannot hold (RowsRejected): the answer says the others are stored
    and names the refused one, not the whole batch rejected."""
    database = "ol_" + secrets.token_hex(5)
    ch_execute(clickhouse_server, f"CREATE DATABASE {database}")
    try:
        dsn = clickhouse_server.dsn.rsplit("/", 1)[0] + "/" + database
        store = StorageConfig(backend="clickhouse", connection_string=SecretStr(dsn))
        r = receiver(storage=store)
        req = ExportLogsServiceRequest.FromString(logs_request(*(
            evaluation(**{"gen_ai.evaluation.name": f"good_{i}"}) for i in range(3)
        ), evaluation(**{"gen_ai.evaluation.name": "from_the_future"})))
        req.resource_logs[0].scope_logs[0].log_records[3].time_unix_nano = 7_258_118_400 * 10**9
        answer = r.post("/v1/logs", req.SerializeToString())
        assert answer.status_code == 200
        partial = ExportLogsServiceResponse.FromString(answer.content).partial_success
        assert partial.rejected_log_records == 1
        assert "1 score(s) not stored in clickhouse: from_the_future" in partial.error_message
        assert "DateTime range" in partial.error_message
        assert sorted(s["name"] for s in read_scores(store).to_pylist()) == [
            "good_0", "good_1", "good_2"
        ]  # fmt: skip
        health = r.health()
        assert health["scores_accepted"] == 3 and health["scores_failed"] == 1
    finally:
        ch_execute(clickhouse_server, f"DROP DATABASE IF EXISTS {database}")
