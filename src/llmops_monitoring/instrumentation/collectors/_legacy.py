"""llamonitor's collectors with seed 000's constructor arguments."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llamonitor import instrument

# seed 000: an extractor takes (result, args, kwargs)
Extractor = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]


class TextCollector(instrument.TextCollector):
    """Text metrics of the result.

    Args:
        measure: a subset of ``char_count``, ``word_count``, ``byte_size``,
            ``line_count`` (default all).
        text_extractor: ``fn(result, args, kwargs) -> str | None`` (then the
            text is measured when the call returns; without one, on the
            worker thread).
        measurement: accepted for seed 000 code; see ``monitor_llm(measurement=)``.
    """

    def __init__(
        self,
        measure: Sequence[str] | None = None,
        text_extractor: Extractor | None = None,
        measurement: str | dict[str, Any] | None = None,
        *,
        metrics: Sequence[str] | None = None,
        extractor: Callable[[Any], str | None] | None = None,
    ) -> None:
        super().__init__(metrics if metrics is not None else measure, extractor)
        self.text_extractor = text_extractor
        self.measurement = measurement

    @property
    def on_worker(self) -> bool:
        return self.text_extractor is None

    def collect(
        self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any], context: Any
    ) -> dict[str, Any] | None:
        if self.text_extractor is not None:
            result = self.text_extractor(result, args, kwargs)
            if result is None:
                return None
            result = str(result)
        return super().collect(result, args, kwargs, context)


class MultiTextCollector(instrument.MultiTextCollector):
    """Text metrics of results holding several texts (``measure=``, ``aggregate=``)."""

    def __init__(
        self,
        measure: Sequence[str] | None = None,
        aggregate: bool = True,
        *,
        metrics: Sequence[str] | None = None,
    ) -> None:
        super().__init__(metrics if metrics is not None else measure, aggregate)


class ImageCollector(instrument.ImageCollector):
    """Image metrics of the result.

    Args:
        measure: a subset of ``count``, ``total_pixels``, ``file_size_bytes``,
            ``dimensions`` (width and height), ``format`` (default all).
        image_extractor: ``fn(result, args, kwargs) -> list of images``.
        use_pil: accepted; headers are read with Pillow when it is installed,
            with a built-in reader otherwise.
    """

    def __init__(
        self,
        measure: Sequence[str] | None = None,
        image_extractor: Extractor | None = None,
        use_pil: bool = True,
        *,
        metrics: Sequence[str] | None = None,
    ) -> None:
        super().__init__(metrics if metrics is not None else measure)
        self.image_extractor = image_extractor
        self.use_pil = use_pil

    def collect(
        self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any], context: Any
    ) -> dict[str, Any] | None:
        if self.image_extractor is not None:
            result = self.image_extractor(result, args, kwargs)
        return super().collect(result, args, kwargs, context)


class CostCollector(instrument.CostCollector):
    """Tokens and cost of a call (see ``llamonitor.instrument.CostCollector``).

    Args:
        pricing_file: a JSON file of prices in seed 000's form
            (``{"models": {name: {"input_cost_per_1k_tokens": ..,
            "output_cost_per_1k_tokens": ..}}}``).
        custom_pricing: ``{name: {"input_cost_per_1k_tokens": ..,
            "output_cost_per_1k_tokens": ..}}``; wins over ``pricing_file``.
            A model priced here gets its ``cost_usd`` (``cost_source``
            ``override``) from these prices; others are priced by llamonitor.
        model_attribute: the ``custom_attributes`` key holding the model name.
    """

    def __init__(
        self,
        pricing_file: str | Path | None = None,
        custom_pricing: dict[str, dict[str, float]] | None = None,
        model_attribute: str = "model",
    ) -> None:
        super().__init__(model_attribute)
        prices: dict[str, dict[str, float]] = {}
        if pricing_file is not None:
            data = json.loads(Path(pricing_file).read_text(encoding="utf-8"))
            prices.update(data.get("models", {}))
        prices.update(custom_pricing or {})
        self.custom_pricing = prices

    def collect(
        self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any], context: Any
    ) -> dict[str, Any] | None:
        out = super().collect(result, args, kwargs, context)
        if not out or not self.custom_pricing:
            return out
        price = self.custom_pricing.get(str(out.get("response_model") or out.get("model")))
        if price is not None:
            attrs = context.get("custom_attributes") or {}
            tokens_in = out.get("input_tokens", attrs.get("input_tokens")) or 0
            tokens_out = out.get("output_tokens", attrs.get("output_tokens")) or 0
            out["cost_usd"] = (
                tokens_in * price.get("input_cost_per_1k_tokens", 0.0)
                + tokens_out * price.get("output_cost_per_1k_tokens", 0.0)
            ) / 1000
            out["cost_source"] = "override"
        return out
