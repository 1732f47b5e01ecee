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
``custom_attributes`` under its name. ``should_collect(result, args, kwargs)``
returning False skips a collector for that call.

The ``context`` a collector gets is the span (a :class:`SpanContext`); it also
answers seed 000's context keys (``context["duration_ms"]``,
``context.get("custom_attributes")``, ``"model"``, ``"function_args"``,
``"text_metrics"``...), each computed only when asked.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from llamonitor._records import Deferred, measure_text
from llamonitor.instrument._extract import as_str, extract_text
from llamonitor.llm._usage import (
    TOKEN_SOURCE_ESTIMATE,
    estimate_tokens,
    response_facts,
    response_text,
)
from llamonitor.schema._columns import IMAGE_METRICS, TEXT_METRICS


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

    def should_collect(self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether to run :meth:`collect` for this call (default: always)."""
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_metrics(metrics: Sequence[str] | None, allowed: Sequence[str], setting: str) -> None:
    if metrics is None:
        return
    unknown = [m for m in metrics if m not in allowed]
    if unknown:
        raise ValueError(f"{setting}: unknown metric(s) {unknown}; choose from {list(allowed)}")


def _text_columns(values: Sequence[int], metrics: Sequence[str] | None) -> dict[str, int]:
    """``text_*`` columns of the four text metrics, those in ``metrics`` only."""
    return {
        f"text_{name}": value
        for name, value in zip(TEXT_METRICS, values, strict=True)
        if metrics is None or name in metrics
    }


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
    def on_worker(self) -> bool:
        """Whether the text can be measured on the worker thread: true unless a
        subclass overrides :meth:`collect` (then ``collect`` runs per call)."""
        return type(self).collect is TextCollector.collect

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
        return _text_columns(measure_text(text), self.metrics)


class ImageCollector(MetricCollector):
    """Count, total pixels, file size, width, height and format of the images
    in a result: ``bytes``, file paths, base64 ``data:`` URLs, PIL images, and
    lists or dicts of them. Dimensions come from the image headers (Pillow,
    the ``[images]`` extra, when installed; PNG/JPEG/GIF/WebP/BMP otherwise).

    Args:
        metrics: a subset of ``count``, ``total_pixels``, ``file_size_bytes``,
            ``width``, ``height``, ``format`` (``dimensions``: width and
            height); default all.

    Only cheap references are taken on the application thread; headers are
    read on the worker thread.
    """

    def __init__(self, metrics: Sequence[str] | None = None) -> None:
        if metrics is not None:
            names = [n for m in metrics for n in _IMAGE_ALIASES.get(m, (m,))]
            _check_metrics(names, IMAGE_METRICS, "ImageCollector.metrics")
            metrics = names
        self.metrics = tuple(metrics) if metrics is not None else None

    @property
    def metric_type(self) -> str:
        return "image"

    def collect(
        self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any], context: Any
    ) -> dict[str, Any] | None:
        from llamonitor.instrument._images import find_image_refs, measure_image_refs

        refs = find_image_refs(result)
        if not refs:
            return {"image_count": 0} if self.metrics is None or "count" in self.metrics else None
        if self.metrics is None:
            return {"images": Deferred(measure_image_refs, refs)}
        return {"images": Deferred(_some_image_metrics, refs, self.metrics)}


_IMAGE_ALIASES = {"dimensions": ("width", "height")}  # seed 000's name for both


def _some_image_metrics(refs: Any, metrics: tuple[str, ...]) -> dict[str, Any]:
    from llamonitor.instrument._images import measure_image_refs

    measured = measure_image_refs(refs)
    return {k: v for k, v in measured.items() if k[len("image_") :] in metrics}


class MultiTextCollector(TextCollector):
    """The text of results that hold several texts: a list of strings (or of
    objects with ``.text``), or an object with ``.texts`` / ``.outputs``.

    Args:
        metrics: as for :class:`TextCollector`.
        aggregate: True (default) measures the texts joined by newlines (on
            the worker thread); False sums each text's own measurement.
    """

    def __init__(self, metrics: Sequence[str] | None = None, aggregate: bool = True) -> None:
        super().__init__(metrics, _joined_texts if aggregate else None)
        self.aggregate = aggregate

    @property
    def on_worker(self) -> bool:
        return self.aggregate

    def collect(
        self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any], context: Any
    ) -> dict[str, Any] | None:
        texts = _texts_of(result)
        if not texts:
            return None
        if self.aggregate:
            return super().collect("\n".join(texts), args, kwargs, context)
        sums = [0, 0, 0, 0]
        for text in texts:
            for j, value in enumerate(measure_text(text)):
                sums[j] += value
        return _text_columns(sums, self.metrics)


def _texts_of(result: Any) -> list[str]:
    if isinstance(result, (list, tuple)):
        items: Any = result
    else:
        items = getattr(result, "texts", None)
        if items is None:
            items = getattr(result, "outputs", None)
        if not isinstance(items, (list, tuple)):
            return []
    texts = []
    for item in items:
        text = item if isinstance(item, str) else getattr(item, "text", None)
        if isinstance(text, str) and text:
            texts.append(as_str(text))
    return texts


def _joined_texts(result: Any) -> str | None:
    texts = _texts_of(result)
    return "\n".join(texts) if texts else None


class CostCollector(MetricCollector):
    """Tokens for pricing a call (registered as ``"cost"``).

    The usage the result carries (OpenAI, Anthropic responses or dicts of
    their shape) is used as is; without one, the output tokens are estimated
    from the result's text (one token per 4 characters, ``token_source``
    ``estimate:chars/4``). The model comes from the response, a ``model``
    argument of the call, or ``custom_attributes={"model": ...}``. The worker
    prices the tokens into ``cost_usd`` (``genai-prices``, or
    ``MonitorConfig.model_prices``); token counts given in
    ``custom_attributes`` win over the estimate.

    Args:
        model_attribute: the ``custom_attributes`` key holding the model name.
    """

    def __init__(self, model_attribute: str = "model") -> None:
        self.model_attribute = model_attribute

    @property
    def metric_type(self) -> str:
        return "cost"

    def collect(
        self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any], context: Any
    ) -> dict[str, Any] | None:
        attrs = _get(context, "custom_attributes") or {}
        out = dict(response_facts(result) or {})
        model = (
            kwargs.get("model")
            or attrs.get(self.model_attribute)
            or attrs.get("gen_ai.request.model")
        )
        if model is None and "response_model" not in out:
            return out or None  # nothing to price
        if isinstance(model, str):
            out["model"] = model
        given = ("output_tokens", "gen_ai.usage.output_tokens")
        if "output_tokens" not in out and not any(k in attrs for k in given):
            text = response_text(result) if out else None
            if text is None:
                text = extract_text(result)
            if text is None:
                return out or None
            out["output_tokens"] = estimate_tokens(len(text))
            out["token_source"] = TOKEN_SOURCE_ESTIMATE
        return out


def _get(context: Any, key: str) -> Any:
    try:
        return context.get(key)
    except Exception:
        return None


class CollectorRegistry:
    """Collectors by name, for ``@monitor_llm(collectors=["name"])``.

    Built in: ``text``, ``image``, ``cost``.
    """

    _collectors: dict[str, Callable[[], MetricCollector]] = {
        "text": TextCollector,
        "image": ImageCollector,
        "cost": CostCollector,
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
    def clear(cls) -> None:
        """Forget every collector, the built-in ones included (for tests)."""
        with cls._lock:
            cls._collectors.clear()

    @classmethod
    def create(cls, name: str) -> MetricCollector:
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

    @classmethod
    def get(cls, name: str) -> MetricCollector | None:
        """A new instance of the collector registered as ``name``, or ``None``."""
        with cls._lock:
            factory = cls._collectors.get(name)
        return None if factory is None else factory()

    @classmethod
    def get_all(cls, names: Sequence[str] | None = None) -> list[MetricCollector]:
        """New instances of the collectors ``names`` (default: all); unknown names
        are left out."""
        found = (cls.get(name) for name in (cls.list_available() if names is None else names))
        return [c for c in found if c is not None]

    @classmethod
    def names(cls) -> list[str]:
        with cls._lock:
            return sorted(cls._collectors)

    list_available = names
