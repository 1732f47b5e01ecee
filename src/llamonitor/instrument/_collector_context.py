"""Seed 000's collector context, answered by the span itself.

The original system passed collectors a dict (``duration_ms``, ``span_ctx``,
``custom_attributes``, ``measurement``, ``model``, ``function_args``,
``text_metrics``, ``image_metrics``). llamonitor passes the span; while its
collectors run the span holds a :class:`Call` and answers those keys, each
computed only when a collector asks, so collectors that never look cost
nothing more than one attribute store.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from llamonitor._records import measure_text
from llamonitor.instrument._extract import as_str, extract_text


class Call(NamedTuple):
    """What a span knows of its call while the collectors run."""

    spec: Any
    t0: int
    t1: int
    result: Any
    kwargs: dict[str, Any]


class ImageFacts:
    """``context["image_metrics"]``: what is known of the images without reading them."""

    __slots__ = ("count", "file_size_bytes")

    def __init__(self, count: int, file_size_bytes: int | None) -> None:
        self.count = count
        self.file_size_bytes = file_size_bytes

    def __repr__(self) -> str:
        return f"ImageFacts(count={self.count}, file_size_bytes={self.file_size_bytes})"


_KEYS = (
    "duration_ms",
    "span_ctx",
    "custom_attributes",
    "measurement",
    "model",
    "function_args",
)


def context_keys(span: Any) -> tuple[str, ...]:
    call: Call | None = getattr(span, "_call", None)
    if call is None:
        return ("span_ctx", "custom_attributes")
    keys: tuple[str, ...] = _KEYS
    if call.spec.measure_text:
        keys += ("text_metrics",)
    if call.spec.measures_images:
        keys += ("image_metrics",)
    return keys


def _attributes(span: Any, call: Call | None) -> dict[str, Any]:
    static = call.spec.custom_attributes if call is not None else None
    return {**(static or {}), **(span._attrs or {})}


def _text(call: Call) -> Any:
    spec = call.spec
    text = (spec.extractor or extract_text)(call.result)
    if text is None:
        return None
    return measure_text(text if text.__class__ is str else as_str(text))


def _images(call: Call) -> ImageFacts:
    from llamonitor.instrument._images import find_image_refs

    refs = find_image_refs(call.result)
    sizes = [r.size for r in refs if r.size is not None]
    return ImageFacts(len(refs), sum(sizes) if sizes else None)


def context_value(span: Any, key: str) -> Any:
    """The value of seed context ``key`` for ``span``.

    Raises:
        KeyError: not a key the context has now.
    """
    call: Call | None = getattr(span, "_call", None)
    if key == "span_ctx":
        return span
    if key == "custom_attributes":
        return _attributes(span, call)
    if call is None or key not in context_keys(span):
        raise KeyError(key)
    if key == "duration_ms":
        return (call.t1 - call.t0) / 1e6
    if key == "measurement":
        return call.spec.measurement
    if key == "model":
        return call.kwargs.get("model") or _attributes(span, call).get("model")
    if key == "function_args":
        return call.kwargs
    if key == "text_metrics":
        return _text(call)
    return _images(call)
