"""Is it going well: alert rules over the spans, and their notifications.

::

    from llamonitor.quality import load_rules, Watcher

    rules = load_rules("alerts.toml")
    watcher = Watcher(rules, store="./monitoring_data")
    watcher.evaluate()          # one evaluation: notifications are sent in the background
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

# Imported at first use (see llamonitor._lazy).
_EXPORTS: dict[str, str] = {
    "AlertSettings": "llamonitor.quality._alert_rules",
    "AnomalyRule": "llamonitor.quality._alert_rules",
    "Notifier": "llamonitor.quality._alert_rules",
    "RuleFileError": "llamonitor.quality._alert_rules",
    "RuleSet": "llamonitor.quality._alert_rules",
    "ThresholdRule": "llamonitor.quality._alert_rules",
    "load_rules": "llamonitor.quality._alert_rules",
    "parse_rules": "llamonitor.quality._alert_rules",
}

__all__ = [
    "AlertSettings",
    "AnomalyRule",
    "Notifier",
    "RuleFileError",
    "RuleSet",
    "ThresholdRule",
    "load_rules",
    "parse_rules",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
