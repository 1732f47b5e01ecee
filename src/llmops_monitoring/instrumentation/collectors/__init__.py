"""``llmops_monitoring.instrumentation.collectors``: the built-in collectors.

llamonitor's collectors, taking seed 000's arguments too (``measure=``,
``text_extractor=(result, args, kwargs)``, ``image_extractor=``,
``model_attribute=``, ``custom_pricing=``).
"""

from llmops_monitoring.instrumentation.collectors._legacy import (
    CostCollector,
    ImageCollector,
    MultiTextCollector,
    TextCollector,
)

__all__ = ["CostCollector", "ImageCollector", "MultiTextCollector", "TextCollector"]
