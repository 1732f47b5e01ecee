#!/usr/bin/env python
"""llamonitor benchmark: what the content policy costs the OTLP receiver, as a
ratio to the mapping alone, same run.

Usage::

    python benchmarks/bench_otlp_content.py            # 20,480 spans, best of 5
    python benchmarks/bench_otlp_content.py --quick    # 5,120 spans, best of 3

Per request of 512 spans (``bench_otlp_ingest.payloads``: OTel GenAI spans),
the receiver's core as ``Ingestor`` runs it: decode, map, build the Arrow
table -- the floor -- then the same with the content steps of
``llamonitor.otel._redact``: capture off (content dropped after the mapping)
and capture on with the built-in redaction rules (content redacted whole on
the decoded request before the mapping). Twice: spans without content, and
the same spans with ``gen_ai.input.messages`` / ``gen_ai.output.messages``.
CPU time of this process (``time.process_time``), interleaved, best of N, so
a shared machine skews the ratios little.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_otlp_ingest import _kv, payloads
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from llamonitor.llm.content import make_redactor
from llamonitor.otel import rows_from_request
from llamonitor.otel._redact import ContentPolicy, apply_to_columns, redact_request

PROMPT = (
    '[{"role":"user","parts":[{"type":"text","content":"Weather in Paris? Mail bob@example.com"}]}]'
)
ANSWER = '[{"role":"assistant","parts":[{"type":"text","content":"Rainy, 57F."}]}]'


def with_content(bodies: list[bytes]) -> list[bytes]:
    out = []
    for body in bodies:
        req = ExportTraceServiceRequest.FromString(body)
        for span in req.resource_spans[0].scope_spans[0].spans:
            span.attributes.extend([_kv("gen_ai.input.messages", PROMPT),
                                    _kv("gen_ai.output.messages", ANSWER)])
        out.append(req.SerializeToString())
    return out


def spans_per_second(bodies: list[bytes], policy: ContentPolicy | None) -> float:
    t0 = time.process_time()
    n = 0
    for body in bodies:
        req = ExportTraceServiceRequest.FromString(body)
        wire: bytes | None = body
        if policy is not None and redact_request(req, policy):
            wire = None
        mapped = rows_from_request(req, wire=wire)
        if policy is not None:
            apply_to_columns(mapped.columns, policy)
        mapped.table()
        n += len(mapped)
    return n / (time.process_time() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    spans, rounds = (5120, 3) if args.quick else (20480, 5)
    plain = payloads(spans)
    policies = {
        "capture off": ContentPolicy(False, None),
        "capture on, built-in rules": ContentPolicy(True, make_redactor(True, [], None)),
    }
    print(f"{spans:,} spans, bodies of 512, best of {rounds} (CPU time)")
    for label, bodies in (("no content", plain), ("with content", with_content(plain))):
        best = dict.fromkeys(["floor", *policies], 0.0)
        for _ in range(rounds):
            best["floor"] = max(best["floor"], spans_per_second(bodies, None))
            for name, policy in policies.items():
                best[name] = max(best[name], spans_per_second(bodies, policy))
        floor = best["floor"]
        parts = [f"mapping alone {floor:,.0f}/s"] + [
            f"{name} {best[name]:,.0f}/s ({best[name] / floor:.2f}x)" for name in policies
        ]
        print(f"{label}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
