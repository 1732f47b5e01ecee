"""Recording rules (placeholder until the rule language lands)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def parse_rules(rules: Sequence[Any]) -> list[Any]:
    return list(rules)


def evaluate_due(storage: Any, rules: Sequence[Any], now: float | None) -> list[Any]:
    return []
