"""Configuration models of the metric pipeline (``llamonitor.metrics``).

Here (in ``schema``) so that ``MonitorConfig`` can hold them without
importing the metrics package.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

RuleAgg = Literal[
    "sum", "avg", "min", "max", "last", "count", "increase", "rate", "p50", "p90", "p95", "p99"
]


def parse_duration(value: object, setting: str = "duration") -> float:
    """Seconds of ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"250ms"`` or a number.

    Raises:
        ValueError: not a positive duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"{setting}: {value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"{setting}: {value!r} is not a duration such as 30s, 5m, 1h, 1d")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not seconds > 0:
        raise ValueError(f"{setting}: {value!r} must be > 0")
    return seconds


class RecordingRule(BaseModel):
    """A recording rule: an aggregate of one metric, precomputed every
    ``every`` over the trailing ``window`` and stored as the gauge ``record``
    (seed 003's Prometheus example, as data rather than PromQL).

    ``{record: "llm:cost_usd:rate1h", metric: "llm_cost_usd_total", agg:
    "rate", by: ["model"], window: "1h"}``.

    Args:
        record: the name of the stored series.
        metric: the metric aggregated.
        agg: counters: ``increase``, ``rate`` (per second); gauges: ``avg``,
            ``min``, ``max``, ``last``, ``sum`` (of the series' last values),
            ``count`` (points); histograms/summaries: ``count``, ``sum``,
            ``avg``, ``min``, ``max``, ``rate`` (observations per second),
            ``p50``/``p90``/``p95``/``p99`` (from the merged DDSketch).
        by: labels kept (the series of a group are combined); ``[]``: one
            series.
        match: only series with these label values.
        window: the trailing window (``"5m"``, ``"1h"``, seconds).
        every: how often it is evaluated (default 60 s).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    record: str
    metric: str
    agg: RuleAgg
    by: list[str] = Field(default_factory=list)
    match: dict[str, str] = Field(default_factory=dict)
    window: float = 300.0
    every: float = 60.0

    @field_validator("record", "metric")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
        return v

    @field_validator("by")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        for label in v:
            if not _LABEL.match(label):
                raise ValueError(f"{label!r} is not a label name")
        return v

    @field_validator("match")
    @classmethod
    def _match(cls, v: dict[str, str]) -> dict[str, str]:
        for label in v:
            if not _LABEL.match(label):
                raise ValueError(f"{label!r} is not a label name")
        return {k: str(x) for k, x in v.items()}

    @field_validator("window", "every", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float:
        return parse_duration(v)
