"""Helpers of the collector tests: pick one reading out of a collection."""

from __future__ import annotations

from collections.abc import Iterable

from llamonitor.metrics import Metric


def value(metrics: Iterable[Metric], name: str, **labels: str) -> float:
    """The value of the one reading ``name`` with ``labels`` (fails if absent)."""
    found = [m for m in metrics if m.name == name and dict(m.labels) == labels]
    assert len(found) == 1, f"{name}{labels}: {len(found)} readings"
    v = found[0].value
    assert v is not None
    return v


def names(metrics: Iterable[Metric]) -> set[str]:
    return {m.name for m in metrics}
