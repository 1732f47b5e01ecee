"""Metric collectors: what is measured about a span's result.

A collector is a small callable class with one signature (seed 000)::

    class MyCollector(MetricCollector):
        def collect(self, result, args, kwargs, context):
            return {"custom_attributes": {"answer_length": len(result)}}

        @property
        def metric_type(self) -> str:
            return "my_metric"

    CollectorRegistry.register("my_metric", MyCollector)

    @monitor_llm(collectors=["my_metric"])
    async def answer(q): ...

``collect`` runs on the application thread right after the function returns
(it must see the live result), so keep it cheap: return a
``llamonitor.Deferred`` for work that can wait for the worker thread. Keys of
the returned dict that name a column (``text_char_count``, ``image_width``...)
set that column; ``custom_attributes`` is merged; any other key is stored in
``custom_attributes`` under its name.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from llamonitor._records import Deferred, measure_text
from llamonitor.instrument._extract import as_str, extract_text
from llamonitor.schema._columns import TEXT_METRICS


class MetricCollector(ABC):
    """Base class of collectors (seed 000's extension point)."""

    @abstractmethod
    def collect(
        self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any], context: Any
    ) -> dict[str, Any] | None:
        """Measure ``result`` of a call with ``args``/``kwargs`` in span ``context``."""

    @property
    @abstractmethod
    def metric_type(self) -> str:
        """A short name of what this collector measures."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_metrics(metrics: Sequence[str] | None, allowed: Sequence[str], setting: str) -> None:
    if metrics is None:
        return
    unknown = [m for m in metrics if m not in allowed]
    if unknown:
        raise ValueError(f"{setting}: unknown metric(s) {unknown}; choose from {list(allowed)}")


class TextCollector(MetricCollector):
    """Characters, words, UTF-8 bytes and lines of the result's text.

    Args:
        metrics: a subset of ``char_count``, ``word_count``, ``byte_size``,
            ``line_count`` (default: all).
        extractor: ``fn(result) -> str | None`` to find the text yourself
            (default: str results, ``text``/``content``/``output`` keys,
            OpenAI and Anthropic response objects).

    Used in ``@monitor_llm(collectors=[TextCollector(...)])`` the measurement
    itself happens on the worker thread.
    """

    def __init__(
        self,
        metrics: Sequence[str] | None = None,
        extractor: Callable[[Any], str | None] | None = None,
    ) -> None:
        _check_metrics(metrics, TEXT_METRICS, "TextCollector.metrics")
        self.metrics = tuple(metrics) if metrics is not None else None
        self.extractor = extractor

    @property
    def metric_type(self) -> str:
        return "text"

    @property
    def mask(self) -> tuple[bool, ...] | None:
        """Which of the four metrics to keep (``None``: all)."""
        if self.metrics is None:
            return None
        return tuple(m in self.metrics for m in TEXT_METRICS)

    def extract(self, result: Any) -> str | None:
        text = (self.extractor or extract_text)(result)
        return text if text is None or text.__class__ is str else as_str(text)

    def collect(
        self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any], context: Any
    ) -> dict[str, Any] | None:
        text = self.extract(result)
        if text is None:
            return None
        m = measure_text(text)
        return {
            f"text_{name}": value
            for name, value in zip(TEXT_METRICS, m, strict=True)
            if self.metrics is None or name in self.metrics
        }


class ImageCollector(MetricCollector):
    """Count, total pixels, file size, width, height and format of the images
    in a result: ``bytes``, file paths, base64 ``data:`` URLs, PIL images, and
    lists or dicts of them. Dimensions come from the image headers (Pillow,
    the ``[images]`` extra, when installed; PNG/JPEG/GIF/WebP/BMP otherwise).

    Only cheap references are taken on the application thread; headers are
    read on the worker thread.
    """

    @property
    def metric_type(self) -> str:
        return "image"

    def collect(
        self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any], context: Any
    ) -> dict[str, Any] | None:
        from llamonitor.instrument._images import find_image_refs, measure_image_refs

        refs = find_image_refs(result)
        if not refs:
            return {"image_count": 0}
        return {"images": Deferred(measure_image_refs, refs)}


class CollectorRegistry:
    """Collectors by name, for ``@monitor_llm(collectors=["name"])``."""

    _collectors: dict[str, Callable[[], MetricCollector]] = {
        "text": TextCollector,
        "image": ImageCollector,
    }
    _lock = threading.Lock()

    @classmethod
    def register(cls, name: str, collector: Callable[[], MetricCollector]) -> None:
        """Register a collector class (or zero-argument factory) under ``name``."""
        with cls._lock:
            cls._collectors[name] = collector

    @classmethod
    def unregister(cls, name: str) -> None:
        with cls._lock:
            cls._collectors.pop(name, None)

    @classmethod
    def get(cls, name: str) -> MetricCollector:
        """A new instance of the collector registered as ``name``.

        Raises:
            KeyError: no collector has that name (the message lists the names).
        """
        with cls._lock:
            factory = cls._collectors.get(name)
            names = sorted(cls._collectors)
        if factory is None:
            raise KeyError(f"no collector named {name!r}; registered: {names}")
        return factory()

    create = get

    @classmethod
    def names(cls) -> list[str]:
        with cls._lock:
            return sorted(cls._collectors)
