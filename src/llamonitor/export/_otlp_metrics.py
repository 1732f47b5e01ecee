"""The span metrics as an OTLP ``ExportMetricsServiceRequest`` (``[otlp]`` extra).

The same families as the Prometheus exposition, under their OpenTelemetry
names and attribute keys (``gen_ai.client.token.usage``,
``gen_ai.client.operation.duration``, ``..._time_to_first_chunk``;
``llamonitor.cost.usd`` and ``llamonitor.errors`` as monotonic sums), all
cumulative from the state's start: histograms with the conventions' explicit
bounds, a label left empty is an attribute left out. An OpenTelemetry
Collector exporting them to Prometheus gives the names ``/metrics`` has.
"""

from __future__ import annotations

import os
from typing import Any

from llamonitor.export._metric_state import FamilyData, Snapshot, SpanMetrics

__all__ = ["SCOPE_NAME", "metrics_request"]

SCOPE_NAME = "llamonitor"
EXTRA = "pip install 'llamonitor[otlp]'"


def _proto() -> tuple[Any, Any, Any, Any]:
    try:
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
        from opentelemetry.proto.common.v1 import common_pb2
        from opentelemetry.proto.metrics.v1 import metrics_pb2
        from opentelemetry.proto.resource.v1 import resource_pb2
    except ImportError as exc:
        raise ImportError(f"OTLP metrics need opentelemetry-proto: {EXTRA}") from exc
    return metrics_service_pb2, common_pb2, metrics_pb2, resource_pb2


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("llamonitor")
    except Exception:  # pragma: no cover - a source tree
        return "unknown"


def metrics_request(
    source: SpanMetrics | Snapshot,
    service_name: str | None = None,
    resource: dict[str, str] | None = None,
) -> Any:
    """The metrics of ``source`` as an ``ExportMetricsServiceRequest``.

    Args:
        source: a :class:`SpanMetrics` (its snapshot is taken) or a snapshot.
        service_name: the resource's ``service.name`` (default:
            ``OTEL_SERVICE_NAME``, else ``llamonitor``).
        resource: more resource attributes.

    Returns:
        ``opentelemetry.proto.collector.metrics.v1.metrics_service_pb2.ExportMetricsServiceRequest``.

    Raises:
        ImportError: ``opentelemetry-proto`` is missing (names the extra).
    """
    service, common, metrics, resources = _proto()
    snap = source.snapshot() if isinstance(source, SpanMetrics) else source
    name = service_name or os.environ.get("OTEL_SERVICE_NAME") or "llamonitor"
    attributes = {"service.name": name, **(resource or {})}

    def kv(key: str, value: str) -> Any:
        return common.KeyValue(key=key, value=common.AnyValue(string_value=value))

    out = [_metric(data, snap, metrics, kv) for data in snap.families]
    return service.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics.ResourceMetrics(
                resource=resources.Resource(attributes=[kv(k, v) for k, v in attributes.items()]),
                scope_metrics=[
                    metrics.ScopeMetrics(
                        scope=common.InstrumentationScope(name=SCOPE_NAME, version=_version()),
                        metrics=out,
                    )
                ],
            )
        ]
    )


def _metric(data: FamilyData, snap: Snapshot, metrics: Any, kv: Any) -> Any:
    family = data.family
    cumulative = metrics.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    times = {"start_time_unix_nano": snap.start_time_ns, "time_unix_nano": snap.time_ns}
    labels = [lab.attribute for lab in family.labels]
    attrs = [
        [kv(key, value) for key, value in zip(labels, values, strict=True) if value]
        for values in data.label_values
    ]
    if family.kind == "histogram":
        bounds = [float(b) for b in family.bounds]
        points = [
            metrics.HistogramDataPoint(
                attributes=a,
                count=int(sum(counts)),
                sum=total,
                bucket_counts=counts,
                explicit_bounds=bounds,
                **times,
            )
            for a, counts, total in zip(
                attrs, data.bucket_counts.tolist(), data.sums.tolist(), strict=True
            )
        ]
        return metrics.Metric(
            name=family.otel_name,
            description=family.description,
            unit=family.otel_unit,
            histogram=metrics.Histogram(data_points=points, aggregation_temporality=cumulative),
        )
    integer = family.key == "errors"
    points = [
        metrics.NumberDataPoint(
            attributes=a, **({"as_int": int(v)} if integer else {"as_double": v}), **times
        )
        for a, v in zip(attrs, data.sums.tolist(), strict=True)
    ]
    return metrics.Metric(
        name=family.otel_name,
        description=family.description,
        unit=family.otel_unit,
        sum=metrics.Sum(
            data_points=points, aggregation_temporality=cumulative, is_monotonic=True
        ),
    )
