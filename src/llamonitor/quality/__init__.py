"""Is it going well: scores and feedback, evaluators that write them, alert rules and notifications.

::

    from llamonitor.quality import load_rules, score

    score("helpfulness", 0.8, trace_id=tid, source="human")
    rules = load_rules("alerts.toml")   # evaluated by ``llamonitor watch`` / ``serve``
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.quality._alert_rules import (
        AlertSettings,
        AnomalyRule,
        Notifier,
        RuleFileError,
        RuleSet,
        ThresholdRule,
        load_rules,
        parse_rules,
    )
    from llamonitor.quality._evaluators import Evaluator, evaluator_by_name, run_evaluator
    from llamonitor.quality._judge import LLMJudge
    from llamonitor.quality._scores import score

# Imported at first use (see llamonitor._lazy).
_EXPORTS: dict[str, str] = {
    "AlertSettings": "llamonitor.quality._alert_rules",
    "AnomalyRule": "llamonitor.quality._alert_rules",
    "Evaluator": "llamonitor.quality._evaluators",
    "LLMJudge": "llamonitor.quality._judge",
    "Notifier": "llamonitor.quality._alert_rules",
    "RuleFileError": "llamonitor.quality._alert_rules",
    "RuleSet": "llamonitor.quality._alert_rules",
    "ThresholdRule": "llamonitor.quality._alert_rules",
    "evaluator_by_name": "llamonitor.quality._evaluators",
    "load_rules": "llamonitor.quality._alert_rules",
    "parse_rules": "llamonitor.quality._alert_rules",
    "run_evaluator": "llamonitor.quality._evaluators",
    "score": "llamonitor.quality._scores",
}

__all__ = [
    "AlertSettings",
    "AnomalyRule",
    "Evaluator",
    "LLMJudge",
    "Notifier",
    "RuleFileError",
    "RuleSet",
    "ThresholdRule",
    "evaluator_by_name",
    "load_rules",
    "parse_rules",
    "run_evaluator",
    "score",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
