"""Quality: scores and feedback on traces, evaluators that write them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.quality._evaluators import Evaluator, evaluator_by_name, run_evaluator
    from llamonitor.quality._judge import LLMJudge
    from llamonitor.quality._scores import score

# Imported at first use (see llamonitor._lazy).
_EXPORTS: dict[str, str] = {
    "Evaluator": "llamonitor.quality._evaluators",
    "LLMJudge": "llamonitor.quality._judge",
    "evaluator_by_name": "llamonitor.quality._evaluators",
    "run_evaluator": "llamonitor.quality._evaluators",
    "score": "llamonitor.quality._scores",
}

__all__ = ["Evaluator", "LLMJudge", "evaluator_by_name", "run_evaluator", "score"]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
