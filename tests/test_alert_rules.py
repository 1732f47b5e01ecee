"""Alert rule files: what parses, and the error (file, line, rule, setting) of what does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamonitor.quality import AnomalyRule, RuleFileError, ThresholdRule, load_rules, parse_rules

GOOD_TOML = """
[settings]
interval = "15s"

[[notifiers]]
name = "ops"
type = "slack"
url = "https://hooks.example.com/services/T0/B0/secret"

[[rules]]
name = "slow answers"
metric = "latency_p95"
operation = "llm.answer"
threshold = "3s"
window = "5m"
for = "5m"
group_by = ["model"]

[[rules]]
name = "spend"
metric = "cost"
threshold = "$50"
window = "1d"

[[rules]]
name = "errors"
metric = "error_rate"
threshold = "5%"
window = "10m"

[[rules]]
name = "latency anomaly"
kind = "anomalous"
signal = "latency_p95"
bucket = "1h"
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_issue_s_three_rules_and_an_anomaly_parse_with_their_units(tmp_path: Path) -> None:
    """'p95 of llm.answer > 3 s for 5 min', '$50/day', '5%' become seconds, dollars, fractions."""
    rules = load_rules(_write(tmp_path, "a.toml", GOOD_TOML))
    slow, spend, errors, anomaly = rules.rules
    assert isinstance(slow, ThresholdRule)
    assert (slow.threshold, slow.window, slow.for_seconds, slow.operation) == (
        3.0, 300.0, 300.0, "llm.answer")
    assert isinstance(spend, ThresholdRule) and spend.threshold == 50.0
    assert spend.window == 86400.0
    assert isinstance(errors, ThresholdRule) and errors.threshold == pytest.approx(0.05)
    assert isinstance(anomaly, AnomalyRule) and anomaly.bucket == 3600.0
    assert rules.notifiers[0].type == "slack"


def test_yaml_holds_the_same_rules(tmp_path: Path) -> None:
    """A YAML file with the same keys gives the same rules."""
    text = """
rules:
  - name: slow answers
    metric: latency_p95
    threshold: 250ms
    window: 1m
notifiers:
  - {name: hook, type: webhook, url: "http://127.0.0.1:9/x"}
"""
    rules = load_rules(_write(tmp_path, "a.yaml", text))
    assert rules.rules[0].threshold == pytest.approx(0.25)  # type: ignore[union-attr]


def test_a_file_without_notifiers_notifies_the_log() -> None:
    """No notifier configured: notifications still go somewhere (the log)."""
    rules = parse_rules({"rules": [{"name": "r", "metric": "volume", "threshold": 1}]})
    assert [n.type for n in rules.notifiers] == ["log"]


@pytest.mark.parametrize(
    ("name", "text", "line", "needle"),
    [
        ("syntax.toml", '[[rules]]\nname = "a"\nmetric = = "cost"\n', 3, "not valid TOML"),
        ("syntax.yaml", "rules:\n  - name: a\n    metric: [cost\n", 4, "not valid YAML"),
        ("unknown.toml", GOOD_TOML + 'windw = "5m"\n', 36,
         "rules[3] ('latency anomaly').windw: not a setting"),
        ("metric.toml", '[[rules]]\nname = "a"\nmetric = "p95"\nthreshold = 1\n', 3,
         "rules[0] ('a').metric: 'p95' is not one of"),
        ("threshold.toml", '[[rules]]\nname = "a"\nmetric = "cost"\nthreshold = "lots"\n',
         4, "rules[0] ('a').threshold: 'lots' is not a number"),
        ("window.yaml", "rules:\n  - name: a\n    metric: cost\n    threshold: 1\n"
         "    window: soon\n", 5, "rules[0] ('a').window: 'soon' is not a duration"),
        ("notify.toml", '[[rules]]\nname = "a"\nmetric = "cost"\nthreshold = 1\n'
         'notify = ["pager"]\n', 5, "no notifier named 'pager'"),
        ("twice.toml", '[[rules]]\nname = "a"\nmetric = "cost"\nthreshold = 1\n'
         '[[rules]]\nname = "a"\nmetric = "cost"\nthreshold = 2\n', 5, "a second rule named"),
        ("url.toml", '[[notifiers]]\nname = "h"\ntype = "webhook"\nurl = "ftp://x"\n', 1,
         "notifiers[0] ('h'): a webhook notifier needs url"),
        ("kind.toml", '[[rules]]\nname = "a"\nkind = "magic"\n', 1, "rules[0] ('a')"),
        ("group.toml", '[[rules]]\nname = "a"\nmetric = "cost"\nthreshold = 1\n'
         'group_by = ["colour"]\n', 5, "'colour' is not one of"),
    ],
)
def test_a_bad_rule_file_names_the_file_the_line_and_the_setting(
    tmp_path: Path, name: str, text: str, line: int, needle: str
) -> None:
    """Each mistake gives one clear error with the file:line and the rule's name."""
    path = _write(tmp_path, name, text)
    with pytest.raises(RuleFileError) as info:
        load_rules(path)
    message = str(info.value)
    assert needle in message, message
    assert f"{path}:{line}" in message, message
    assert info.value.line == line


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A path with no file is an error naming it, not a traceback."""
    with pytest.raises(RuleFileError, match="cannot read the file"):
        load_rules(tmp_path / "nope.toml")
