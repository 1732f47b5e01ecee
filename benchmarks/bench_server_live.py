#!/usr/bin/env python
"""The live tail under load: spans landing from another process, clients tailing.

Three kinds of process: a *writer* (decorated calls paced at ``--rate``
spans/s into a Parquet store, ``flush_interval_seconds`` 1 s), a *server*
(``start_server(directory=store)``: no writer in it, so every span reaches it
through the store poller, every ``poll_interval_seconds``), and this process,
with ``--clients`` WebSocket clients on threads.

Latency: from a span's end (its ``timestamp`` + ``duration_ms``, wall clock,
same machine) to its receipt by a client; compared with the bound the API
promises from another process, flush interval + poll interval (+ 1 s of
slack). Memory: the server's RSS at start (clients connected, before the
writer starts) and at the end.

Usage::

    python benchmarks/bench_server_live.py            # 60 s at 1,000 spans/s, 10 clients
    python benchmarks/bench_server_live.py --quick    # ~20 s
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

FLUSH_SECONDS = 1.0
POLL_SECONDS = 0.5

SERVER = textwrap.dedent(
    """
    import sys
    from llamonitor.server import ServerConfig, start_server
    handle = start_server(ServerConfig(port=0, poll_interval_seconds=float(sys.argv[2])),
                          directory=sys.argv[1])
    print(handle.url, flush=True)
    sys.stdin.read()  # until the benchmark closes it
    handle.stop()
    """
)

WRITER = textwrap.dedent(
    """
    import sys, time
    import llamonitor
    from llamonitor import MonitorConfig, StorageConfig, monitor_llm
    store, rate = sys.argv[1], int(sys.argv[2])
    seconds, flush = float(sys.argv[3]), float(sys.argv[4])
    llamonitor.initialize_monitoring(MonitorConfig(storage=StorageConfig(
        backend="parquet", output_dir=store, flush_interval_seconds=flush)))

    @monitor_llm(operation_name="bench.live")
    def op() -> str:
        return "ok"

    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < seconds:
        due = int((time.monotonic() - start) * rate)
        while sent < due:
            op()
            sent += 1
        time.sleep(0.005)
    llamonitor.shutdown_monitoring(30)
    print(sent, flush=True)
    """
)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Client(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.conn = connect(url, open_timeout=10, max_size=None).__enter__()
        self.latencies: list[float] = []
        self.received = 0
        self.dropped = 0
        self.stop = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    raw = self.conn.recv(timeout=0.2)
                except TimeoutError:
                    continue
                now = time.time()
                message = json.loads(raw)
                self.dropped += message.get("dropped", 0)
                for span in message.get("spans", ()):
                    start = datetime.fromisoformat(span["timestamp"].replace("Z", "+00:00"))
                    end = start.timestamp() + (span["duration_ms"] or 0) / 1000.0
                    self.latencies.append(now - end)
                    self.received += 1
        except ConnectionClosed:
            pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="~20 s instead of ~70 s")
    parser.add_argument("--seconds", type=float, default=None, help="how long the writer writes")
    parser.add_argument("--rate", type=int, default=1000, help="spans per second")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    seconds = args.seconds or (15.0 if args.quick else 60.0)

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        store.mkdir()
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(store), str(POLL_SECONDS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert server.stdout is not None and server.stdin is not None
        url = server.stdout.readline().strip()
        ws = url.replace("http://", "ws://") + "api/live/ws"
        clients = [Client(ws) for _ in range(args.clients)]
        time.sleep(1.0)
        rss_start = rss_kb(server.pid)
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store), str(args.rate), str(seconds),
             str(FLUSH_SECONDS)],
            stdout=subprocess.PIPE, text=True, cwd=tmp,
        )
        out, _ = writer.communicate()
        written = int(out.strip().splitlines()[-1])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and min(c.received for c in clients) < written:
            time.sleep(0.1)
        rss_end = rss_kb(server.pid)
        for c in clients:
            c.stop.set()
        server.stdin.close()
        server.wait(15)

    latencies = [x for c in clients for x in c.latencies]
    bound = FLUSH_SECONDS + POLL_SECONDS + 1.0
    result = {
        "seconds": seconds,
        "rate": args.rate,
        "clients": args.clients,
        "spans_written": written,
        "received_per_client_min": min(c.received for c in clients),
        "received_per_client_max": max(c.received for c in clients),
        "dropped_total": sum(c.dropped for c in clients),
        "latency_median_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 0.95), 3) if latencies else None,
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        "bound_s": bound,
        "server_rss_start_mb": round(rss_start / 1024, 1),
        "server_rss_end_mb": round(rss_end / 1024, 1),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"writer: {written:,} spans in {seconds:g} s ({args.rate:,}/s), "
          f"{args.clients} WS clients, server polling every {POLL_SECONDS} s")
    print(f"received per client: {result['received_per_client_min']:,} .. "
          f"{result['received_per_client_max']:,}; dropped: {result['dropped_total']}")
    print(f"latency span end -> client: median {result['latency_median_s']} s, "
          f"p95 {result['latency_p95_s']} s, max {result['latency_max_s']} s "
          f"(flush {FLUSH_SECONDS} s + poll {POLL_SECONDS} s + 1 s = {bound} s)")
    print(f"server RSS: {result['server_rss_start_mb']} MB at start, "
          f"{result['server_rss_end_mb']} MB after {seconds:g} s")


if __name__ == "__main__":
    main()
