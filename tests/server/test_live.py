"""The live tail (``/api/live/sse``, ``/api/live/ws``) on a real uvicorn server
with real clients: spans of this process (the tap) and of other processes (the
store pollers), filters, slow clients, the client cap, the origin check and a
prompt shutdown."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
pytest.importorskip("websockets")

from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import ClientConnection, connect  # noqa: E402

import llamonitor  # noqa: E402
from llamonitor import (  # noqa: E402
    MonitorConfig,
    StorageConfig,
    _taps,
    monitor_llm,
)
from llamonitor.server import ServerConfig, ServerHandle, _live, start_server  # noqa: E402

WAIT = 15.0
"""Generous: a span must arrive within flush_interval + 1 s; CI machines are slow."""


def parquet_config(store: Path, flush: float = 0.2) -> MonitorConfig:
    return MonitorConfig(
        storage=StorageConfig(backend="parquet", output_dir=store, flush_interval_seconds=flush)
    )


def wait_for(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def ws_url(handle: ServerHandle, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return handle.url.replace("http://", "ws://") + "api/live/ws" + (f"?{query}" if query else "")


class WsTail:
    """A WebSocket client reading on a thread."""

    def __init__(self, url: str, **kw: Any) -> None:
        self.conn: ClientConnection = connect(url, open_timeout=10, **kw).__enter__()
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    raw = self.conn.recv(timeout=0.1)
                except TimeoutError:
                    continue
                self.messages.append(json.loads(raw))
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd is not None else -1

    @property
    def spans(self) -> list[dict[str, Any]]:
        return [s for m in list(self.messages) for s in m.get("spans", ())]

    def names(self) -> list[str]:
        return [s["operation_name"] for s in self.spans]

    def closed(self) -> bool:
        return not self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        try:
            self.conn.close()
        except Exception:
            pass
        self._thread.join(5)


class StalledWs:
    """A WebSocket client over a socket with a small receive buffer, that reads
    nothing until :meth:`read` (so the server's sends to it block)."""

    def __init__(self, url: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.frames import Opcode
        from websockets.uri import parse_uri

        self._text = Opcode.TEXT
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
        self.sock.connect((host, int(port)))
        self.protocol.send_request(self.protocol.connect())
        self.sock.sendall(b"".join(self.protocol.data_to_send()))
        self.messages: list[dict[str, Any]] = []
        self.sock.settimeout(10)
        while self.protocol.handshake_exc is None and not self._pump_once(handshake=True):
            pass

    def _pump_once(self, handshake: bool = False) -> bool:
        from websockets.http11 import Response

        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        self.protocol.receive_data(data)
        opened = False
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                opened = True
            elif event.opcode is self._text:
                self.messages.append(json.loads(event.data))
        return opened or not handshake

    def read(self, until: Callable[[], bool], timeout: float = WAIT) -> bool:
        self.sock.settimeout(0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until():
            try:
                self._pump_once()
            except TimeoutError:
                pass
        return until()

    @property
    def spans(self) -> list[dict[str, Any]]:
        return [s for m in self.messages for s in m.get("spans", ())]

    def close(self) -> None:
        self.sock.close()


class SseTail:
    """An SSE client (httpx streaming) reading on a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.pings = 0
        self.status: int | None = None
        self.body: bytes = b""
        self.ended = threading.Event()
        self.opened = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.opened.wait(WAIT)

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self.url) as response:
                self.status = response.status_code
                if response.status_code != 200:
                    self.body = response.read()
                    self.opened.set()
                    return
                self.opened.set()
                for line in response.iter_lines():
                    if line.startswith(": ping"):
                        self.pings += 1
                    elif line.startswith("event:"):
                        self.events.append(line[6:].strip())
                    elif line.startswith("data:"):
                        self.messages.append(json.loads(line[5:]))
        except Exception:
            pass
        finally:
            self.opened.set()
            self.ended.set()

    @property
    def spans(self) -> list[dict[str, Any]]:
        return [s for m in list(self.messages) for s in m.get("spans", ())]

    def close(self) -> None:
        self._client.close()
        self._thread.join(5)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def serving(store: Path) -> Iterator[ServerHandle]:
    """This process writes ``store`` (flushed every 0.2 s) and serves it."""
    llamonitor.initialize_monitoring(parquet_config(store))
    handle = start_server(ServerConfig(port=0), directory=store)
    yield handle
    handle.stop()


def live_clients(handle: ServerHandle) -> int:
    return int(httpx.get(handle.url + "api/health", timeout=10).json()["live_clients"])


WRITER = textwrap.dedent(
    """
    import sys
    import llamonitor
    from llamonitor import MonitorConfig, StorageConfig, monitor_llm

    kind, where, name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if kind == "parquet":
        storage = StorageConfig(backend="parquet", output_dir=where, flush_interval_seconds=0.2)
    else:
        storage = StorageConfig(backend="sqlite", connection_string="sqlite:///" + where,
                                flush_interval_seconds=0.2)
    llamonitor.initialize_monitoring(MonitorConfig(storage=storage))

    @monitor_llm(operation_name=name)
    def op() -> str:
        return "ok"

    for _ in range(n):
        op()
    assert llamonitor.shutdown_monitoring(20)
    """
)


def write_elsewhere(tmp_path: Path, kind: str, where: Path, name: str, n: int = 1) -> None:
    """Spans named ``name`` written by another process."""
    subprocess.run(
        [sys.executable, "-c", WRITER, kind, str(where), name, str(n)],
        cwd=tmp_path, check=True, timeout=120,
    )


# -- this process's spans ----------------------------------------------------------


def test_a_span_of_this_process_arrives_over_ws_and_sse(store: Path) -> None:
    """initialize_monitoring(serve=...) taps the writer: the span arrives on both
    endpoints, once (tap and poller both see it), as a JSON-safe SpanSummary."""
    writer = llamonitor.initialize_monitoring(parquet_config(store), serve=ServerConfig(port=0))
    handle = writer.server
    assert isinstance(handle, ServerHandle) and handle.running
    assert _taps.TAPS, "the server taps the writer's primary sink"
    ws = WsTail(ws_url(handle))
    sse = SseTail(handle.url + "api/live/sse")
    assert wait_for(lambda: live_clients(handle) == 2)

    @monitor_llm(operation_name="same.process")
    def call() -> str:
        return "ok"

    call()
    assert wait_for(lambda: "same.process" in ws.names())
    assert wait_for(lambda: any(s["operation_name"] == "same.process" for s in sse.spans))
    time.sleep(1.0)  # the poller reads the same file: not sent twice
    assert ws.names().count("same.process") == 1
    (span,) = ws.spans
    assert set(span) == set(_live.SUMMARY_COLUMNS)
    assert span["timestamp"].endswith("Z") and span["error"] is False
    assert sse.events[0] == "spans"
    ws.close()
    sse.close()
    started = time.monotonic()
    assert llamonitor.shutdown_monitoring(10)
    assert time.monotonic() - started < 5
    assert not handle.running
    assert not _taps.TAPS, "the tap is removed when the server stops"


def test_start_server_without_a_store_serves_and_taps_the_writer(store: Path) -> None:
    llamonitor.initialize_monitoring(parquet_config(store, flush=0.5))
    handle = start_server(ServerConfig(port=0))
    try:
        ws = WsTail(ws_url(handle))
        assert wait_for(lambda: live_clients(handle) == 1)

        @monitor_llm(operation_name="tapped")
        def call() -> str:
            return "ok"

        call()
        assert wait_for(lambda: ws.names() == ["tapped"])
        ws.close()
    finally:
        handle.stop()


def test_children_of_a_long_trace_arrive_before_the_root_ends(serving: ServerHandle) -> None:
    ws = WsTail(ws_url(serving))
    assert wait_for(lambda: live_clients(serving) == 1)
    seen_while_running = threading.Event()

    @monitor_llm(operation_name="child")
    def child() -> str:
        return "ok"

    @monitor_llm(operation_name="root")
    def root() -> None:
        child()
        child()
        if wait_for(lambda: ws.names().count("child") == 2):
            seen_while_running.set()

    root()
    assert seen_while_running.is_set(), "the children arrived while the root was running"
    assert wait_for(lambda: "root" in ws.names())
    children = [s for s in ws.spans if s["operation_name"] == "child"]
    (root_span,) = [s for s in ws.spans if s["operation_name"] == "root"]
    assert {c["parent_span_id"] for c in children} == {root_span["span_id"]}
    ws.close()


# -- other processes' spans ------------------------------------------------------------


def test_a_span_written_by_another_process_to_the_parquet_store_arrives(
    tmp_path: Path, store: Path
) -> None:
    """The poller reads new files only: what was in the store when the client
    came is not sent; a compaction's merged file sends nothing again."""
    write_elsewhere(tmp_path, "parquet", store, "before", 3)
    handle = start_server(ServerConfig(port=0, poll_interval_seconds=0.2), directory=store)
    try:
        assert not _taps.TAPS, "no writer here: no tap"
        ws = WsTail(ws_url(handle))
        assert wait_for(lambda: live_clients(handle) == 1)
        time.sleep(0.5)  # the poller takes the store as it is as seen
        write_elsewhere(tmp_path, "parquet", store, "elsewhere", 2)
        assert wait_for(lambda: ws.names().count("elsewhere") == 2)
        write_elsewhere(tmp_path, "parquet", store, "elsewhere.again", 1)
        assert wait_for(lambda: "elsewhere.again" in ws.names())
        from llamonitor.storage._compact import compact

        compact(store)
        time.sleep(1.0)
        assert sorted(ws.names()) == ["elsewhere", "elsewhere", "elsewhere.again"]
        ws.close()
    finally:
        handle.stop()


def test_a_span_written_by_another_process_to_a_sqlite_store_arrives(tmp_path: Path) -> None:
    db = tmp_path / "spans.db"
    write_elsewhere(tmp_path, "sqlite", db, "before", 2)  # creates the table
    handle = start_server(ServerConfig(port=0, poll_interval_seconds=0.2), dsn=f"sqlite:///{db}")
    try:
        ws = WsTail(ws_url(handle))
        sse = SseTail(handle.url + "api/live/sse?operation=sql.*")
        assert wait_for(lambda: live_clients(handle) == 2)
        time.sleep(0.5)
        write_elsewhere(tmp_path, "sqlite", db, "sql.elsewhere", 2)
        assert wait_for(lambda: ws.names().count("sql.elsewhere") == 2)
        assert wait_for(lambda: len(sse.spans) == 2)
        time.sleep(1.0)  # polled again and again: sent once
        assert sorted(ws.names()) == ["sql.elsewhere", "sql.elsewhere"]
        assert {s["operation_name"] for s in sse.spans} == {"sql.elsewhere"}
        ws.close()
        sse.close()
    finally:
        handle.stop()


# -- filters ------------------------------------------------------------------------------


def test_filters_apply_to_the_live_tail(serving: ServerHandle) -> None:
    keep = WsTail(ws_url(serving, operation="keep.*"))
    errors = SseTail(serving.url + "api/live/sse?status=error")
    assert wait_for(lambda: live_clients(serving) == 2)

    @monitor_llm(operation_name="drop.me")
    def drop() -> str:
        return "ok"

    @monitor_llm(operation_name="keep.me")
    def keep_me() -> str:
        return "ok"

    @monitor_llm(operation_name="keep.failing")
    def failing() -> None:
        raise ValueError("x" * 1000)

    drop()
    keep_me()
    with pytest.raises(ValueError):
        failing()
    assert wait_for(lambda: len(keep.spans) == 2)
    assert wait_for(lambda: len(errors.spans) == 1)
    time.sleep(0.5)
    assert sorted(keep.names()) == ["keep.failing", "keep.me"]
    (failed,) = errors.spans
    assert failed["operation_name"] == "keep.failing" and failed["error"] is True
    assert len(failed["error_message"]) == 300
    keep.close()
    errors.close()


def test_a_bad_filter_is_refused_naming_it(serving: ServerHandle) -> None:
    response = httpx.get(serving.url + "api/live/sse?since=yesterday-ish", timeout=10)
    assert response.status_code == 400
    assert response.json()["parameter"] == "since"
    response = httpx.get(serving.url + "api/live/sse?status=maybe", timeout=10)
    assert response.status_code == 400 and response.json()["parameter"] == "status"
    for query, name in (("since=nope", "since"), ("status=maybe", "status"),
                        ("min_duration_ms=-1", "min_duration_ms"), ("colour=red", "colour")):
        with (
            connect(ws_url(serving) + "?" + query, open_timeout=10) as conn,
            pytest.raises(ConnectionClosed) as info,
        ):
            conn.recv(timeout=10)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1008
        assert info.value.rcvd.reason.startswith(name)
    assert live_clients(serving) == 0


# -- slow clients, the cap, the origin, the shutdown --------------------------------------


def test_a_slow_client_gets_a_dropped_notice_and_does_not_block_others(
    serving: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_live, "CLIENT_QUEUE_SPANS", 1000)
    serving.stop()  # a hub with a smaller queue: restart on the same store
    writer = llamonitor.get_writer()
    assert writer is not None
    handle = start_server(ServerConfig(port=0), directory=writer.config.storage.output_dir)
    try:
        slow = StalledWs(ws_url(handle))
        fast = WsTail(ws_url(handle))
        assert wait_for(lambda: live_clients(handle) == 2)
        n = 20_000

        @monitor_llm(operation_name="burst")
        def burst() -> str:
            return "ok"

        for _ in range(n // 200):  # batches a client that reads can keep up with
            for _ in range(200):
                burst()
            assert llamonitor.flush(10)
        assert wait_for(lambda: len(fast.spans) == n, 60), len(fast.spans)
        assert not any("dropped" in m for m in fast.messages)
        dropped = lambda: sum(m.get("dropped", 0) for m in slow.messages)  # noqa: E731
        assert slow.read(lambda: len(slow.spans) + dropped() == n)
        assert dropped() > 0 and len(slow.spans) < n
        assert slow.spans[-1]["event_id"] == fast.spans[-1]["event_id"], "the oldest dropped"
        slow.close()
        fast.close()
    finally:
        handle.stop()


def test_the_client_cap_refuses_with_a_clear_error(store: Path) -> None:
    llamonitor.initialize_monitoring(parquet_config(store))
    handle = start_server(ServerConfig(port=0, max_live_clients=2), directory=store)
    try:
        first, second = WsTail(ws_url(handle)), SseTail(handle.url + "api/live/sse")
        assert wait_for(lambda: live_clients(handle) == 2)
        with (
            connect(ws_url(handle), open_timeout=10) as conn,
            pytest.raises(ConnectionClosed) as info,
        ):
            conn.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1013
        assert "max_live_clients" in info.value.rcvd.reason
        refused = SseTail(handle.url + "api/live/sse")
        assert refused.status == 503
        assert "max_live_clients" in json.loads(refused.body)["error"]
        first.close()
        assert wait_for(lambda: live_clients(handle) == 1)
        third = WsTail(ws_url(handle))
        assert wait_for(lambda: live_clients(handle) == 2)
        third.close()
        second.close()
        assert wait_for(lambda: live_clients(handle) == 0)
    finally:
        handle.stop()


def test_a_cross_origin_websocket_is_refused(serving: ServerHandle) -> None:
    evil: Any = "https://evil.example"
    with (
        pytest.raises((InvalidStatus, ConnectionClosed)),
        connect(ws_url(serving), origin=evil, open_timeout=10) as conn,
    ):
        conn.recv(timeout=10)
    own: Any = serving.url.rstrip("/")
    with connect(ws_url(serving), origin=own, open_timeout=10):
        assert wait_for(lambda: live_clients(serving) == 1)
    assert wait_for(lambda: live_clients(serving) == 0)


def test_shutdown_with_connected_clients_is_prompt(store: Path) -> None:
    writer = llamonitor.initialize_monitoring(parquet_config(store), serve=ServerConfig(port=0))
    handle = writer.server
    wss = [WsTail(ws_url(handle)) for _ in range(3)]
    sses = [SseTail(handle.url + "api/live/sse") for _ in range(2)]
    assert wait_for(lambda: live_clients(handle) == 5)
    started = time.monotonic()
    assert llamonitor.shutdown_monitoring(10)
    assert time.monotonic() - started < 3.0
    assert not handle.running
    assert all(wait_for(ws.closed, 5) for ws in wss)
    assert {ws.close_code for ws in wss} <= {1001, 1012}
    assert all(sse.ended.wait(5) for sse in sses)


def test_an_idle_sse_stream_is_pinged(
    serving: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_live, "PING_SECONDS", 0.2)
    sse = SseTail(serving.url + "api/live/sse")
    ws = WsTail(ws_url(serving))
    assert wait_for(lambda: sse.pings >= 2)
    assert wait_for(lambda: {} in ws.messages)  # an idle WS gets an empty message
    sse.close()
    ws.close()


# -- the parts -------------------------------------------------------------------------


def test_a_failing_tap_never_affects_the_sink(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def bad(table: Any) -> None:
        calls.append(table.num_rows)
        raise RuntimeError("tap broke")

    llamonitor.initialize_monitoring(parquet_config(store))

    @monitor_llm(operation_name="op")
    def op() -> str:
        return "ok"

    before = _taps.errors()
    _taps.add_tap(bad)
    try:
        for _ in range(3):
            op()
            assert llamonitor.flush(10)
    finally:
        _taps.remove_tap(bad)
    assert sum(calls) == 3 and _taps.errors() - before == 3
    assert sum("live tap failed" in r.getMessage() for r in caplog.records) == 1
    health = llamonitor.get_writer().health_check()  # type: ignore[union-attr]
    assert health["events_written"] == 3 and health["sinks"]["parquet"]["healthy"]
    op()
    assert llamonitor.flush(10)
    assert len(calls) == 3, "a removed tap is not called"


def test_the_hub_dedupes_with_bounded_memory_and_is_json_safe() -> None:
    import asyncio

    from llamonitor.server._query import SpanFilters

    hub = _live.Hub(max_clients=1, queue_spans=3, dedupe_capacity=10)

    async def run() -> list[dict[str, Any]] | None:
        client = hub.subscribe(SpanFilters())
        with pytest.raises(_live.TooManyClients, match="max_live_clients"):
            hub.subscribe(SpanFilters())
        rows = [{"event_id": f"e{i}", "operation_name": "x", "duration_ms": float("nan")}
                for i in range(5)]
        assert hub.publish_rows(rows) == 5
        assert hub.publish_rows(rows) == 0  # seen
        return await client.next_messages(1.0)

    messages = asyncio.run(run())
    assert messages is not None
    assert messages[0] == {"dropped": 2}
    assert [s["event_id"] for s in messages[1]["spans"]] == ["e2", "e3", "e4"]
    json.dumps(messages, allow_nan=False)  # NaN became null
    hub.publish_rows({"event_id": f"f{i}"} for i in range(100))
    assert len(hub._seen) == 10
