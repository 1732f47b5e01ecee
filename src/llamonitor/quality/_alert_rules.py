"""Alert rules and notifiers: the models, and reading them from a TOML or YAML file.

A rule file holds ``rules``, ``notifiers`` and optional ``settings``::

    [settings]
    interval = "15s"

    [[notifiers]]
    name = "ops"
    type = "slack"            # or "webhook" (generic JSON), "log"
    url = "https://hooks.slack.com/services/..."

    [[rules]]
    name = "slow answers"
    metric = "latency_p95"    # seconds
    operation = "llm.answer"
    comparison = ">"
    threshold = "3s"
    window = "5m"
    for = "5m"
    group_by = ["model"]
    notify = ["ops"]

A file that does not parse, or a rule that is not valid, raises
:class:`RuleFileError`, whose message names the file, the line and the
setting (``rules[0] ("slow answers").threshold``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llamonitor.schema._metrics_config import parse_duration
from llamonitor.schema.config import ConfigurationError

Comparison = Literal[">", ">=", "<", "<="]

METRICS: tuple[str, ...] = (
    "volume", "errors", "error_rate", "cost", "tokens", "input_tokens", "output_tokens",
    "latency_avg", "latency_max", "latency_p50", "latency_p90", "latency_p95", "latency_p99",
)
"""What a threshold rule measures over its window (latencies in seconds, cost in USD,
``error_rate`` a fraction 0..1, ``volume`` the spans)."""

LATENCY_METRICS = frozenset(m for m in METRICS if m.startswith("latency_"))

ANOMALY_SIGNALS: tuple[str, ...] = ("cost", "tokens", "latency_p95", "error_rate", "volume")
"""What an ``anomalous`` rule watches (``llamonitor.analysis.anomalies``)."""

GROUP_COLUMNS: dict[str, str] = {
    "model": "model",
    "operation": "operation_name",
    "agent": "agent_name",
    "provider": "provider",
    "project": "project_name",
}
"""``group_by`` / filter names -> the span column (the only identifiers that reach SQL)."""

DEFAULT_INTERVAL_SECONDS = 15.0
DEFAULT_WINDOW_SECONDS = 300.0
DEFAULT_WEBHOOK_TIMEOUT_SECONDS = 5.0
DEFAULT_LATE_SECONDS = 120.0
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _seconds(v: object) -> float:
    try:
        return parse_duration(v, "-")
    except ValueError as exc:
        raise ValueError(str(exc).removeprefix("-: ")) from None


def _seconds_or_zero(v: object) -> float:
    if v in (0, "0", 0.0):
        return 0.0
    return _seconds(v)


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1)
    """Shown in every notification; unique in the file."""
    operation: str | None = None
    """Only spans of this operation (a glob with ``*`` works)."""
    model: str | None = None
    agent: str | None = None
    provider: str | None = None
    project: str | None = None
    group_by: list[str] = Field(default_factory=list)
    """One alert per value of these (``model``, ``operation``, ``agent``, ``provider``,
    ``project``); none: one alert over all spans."""
    notify: list[str] | None = None
    """Notifier names; ``None``: every notifier of the file."""
    cooldown: float = 0.0
    """After an incident resolves, a new one of the same rule and group notifies
    only once this long has passed (seconds or ``"10m"``)."""
    severity: str = "warning"
    description: str = ""

    @field_validator("group_by")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        for g in v:
            if g not in GROUP_COLUMNS:
                raise ValueError(f"{g!r} is not one of {', '.join(GROUP_COLUMNS)}")
        return v

    @field_validator("cooldown", mode="before")
    @classmethod
    def _cooldown(cls, v: object) -> float:
        return _seconds_or_zero(v)

    def filters(self) -> dict[str, str]:
        """The span columns this rule keeps, and the value (glob for ``operation``)."""
        out = {}
        for key in GROUP_COLUMNS:
            value = getattr(self, key)
            if value is not None:
                out[GROUP_COLUMNS[key]] = value
        return out


class ThresholdRule(_Rule):
    """``metric`` over the trailing ``window`` compared with ``threshold``; fires
    once the comparison has held for ``for_seconds`` (``for`` in a file)."""

    kind: Literal["threshold"] = "threshold"
    metric: str
    comparison: Comparison = ">"
    threshold: float
    window: float = DEFAULT_WINDOW_SECONDS
    for_seconds: float = Field(default=0.0, alias="for")
    min_count: int = Field(default=1, ge=0)
    """A group with fewer spans in the window is not evaluated (no error rate of 1 of 2)."""

    @field_validator("threshold", mode="before")
    @classmethod
    def _units(cls, v: object, info: ValidationInfo) -> object:
        if isinstance(v, str):
            return _threshold(v, str(info.data.get("metric")))
        return v

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"{v!r} is not one of {', '.join(METRICS)}")
        return v

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, v: object) -> float:
        return _seconds(v)

    @field_validator("for_seconds", mode="before")
    @classmethod
    def _for(cls, v: object) -> float:
        return _seconds_or_zero(v)


class AnomalyRule(_Rule):
    """Fires while the latest complete bucket of ``signal`` is anomalous
    (:func:`llamonitor.analysis.anomalies.detect_anomalies`)."""

    kind: Literal["anomalous"]
    signal: str
    bucket: float = 3600.0
    """The width of the buckets compared (seconds or ``"1h"``)."""
    history: float = 7 * 86400.0
    """How much history the baseline is learnt from."""

    @field_validator("signal")
    @classmethod
    def _signal(cls, v: str) -> str:
        if v not in ANOMALY_SIGNALS:
            raise ValueError(f"{v!r} is not one of {', '.join(ANOMALY_SIGNALS)}")
        return v

    @field_validator("bucket", "history", mode="before")
    @classmethod
    def _durations(cls, v: object) -> float:
        return _seconds(v)


Rule = Annotated[ThresholdRule | AnomalyRule, Field(discriminator="kind")]


class Notifier(BaseModel):
    """Where notifications go: ``webhook`` (generic JSON), ``slack`` (a Slack-compatible
    incoming webhook), or ``log`` (the ``llamonitor.alerts`` logger)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    type: Literal["webhook", "slack", "log"]
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    """Sent with each request; ``${VAR}`` is replaced from the environment (never logged)."""
    timeout: float = DEFAULT_WEBHOOK_TIMEOUT_SECONDS

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, v: object) -> float:
        return _seconds(v)

    @model_validator(mode="after")
    def _url(self) -> Notifier:
        if self.type == "log":
            return self
        if not self.url or not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError(f"a {self.type} notifier needs url = 'http(s)://...'")
        return self

    def resolved_headers(self) -> dict[str, str]:
        return {k: _ENV.sub(lambda m: os.environ.get(m.group(1), ""), v)
                for k, v in self.headers.items()}


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: float = DEFAULT_INTERVAL_SECONDS
    """How often the rules are evaluated."""
    late: float = DEFAULT_LATE_SECONDS
    """Spans may reach the store this long after they started: each evaluation
    reads again the buckets of this last stretch (not the whole window)."""
    state: str | None = None
    """The state file (default: ``.alerts-state.json`` next to the store)."""

    @field_validator("interval", "late", mode="before")
    @classmethod
    def _durations(cls, v: object) -> float:
        return _seconds(v)


class RuleSet(BaseModel):
    """A rule file: its rules, notifiers and settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[Rule] = Field(default_factory=list)
    notifiers: list[Notifier] = Field(default_factory=lambda: [Notifier(name="log", type="log")])
    settings: AlertSettings = Field(default_factory=AlertSettings)

    @model_validator(mode="before")
    @classmethod
    def _kinds(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("rules"), list):
            data = {**data, "rules": [
                {"kind": "threshold", **r} if isinstance(r, dict) and "kind" not in r else r
                for r in data["rules"]
            ]}
        return data

    @model_validator(mode="after")
    def _names(self) -> RuleSet:
        seen: set[str] = set()
        for i, r in enumerate(self.rules):
            if r.name in seen:
                raise _Located(f"rules[{i}]", f"a second rule named {r.name!r}")
            seen.add(r.name)
        names = {n.name for n in self.notifiers}
        for i, r in enumerate(self.rules):
            for n in r.notify or ():
                if n not in names:
                    raise _Located(f"rules[{i}].notify", f"no notifier named {n!r}")
        return self


class _Located(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _threshold(text: str, metric: str) -> float:
    t = text.strip().replace(",", "")
    try:
        if t.endswith("%"):
            return float(t[:-1]) / 100
        if t.startswith("$"):
            return float(t[1:])
        if metric in LATENCY_METRICS:
            return _seconds(t)
        return float(t)
    except ValueError:
        raise ValueError(f"{text!r} is not a number (3, '5%', '$50', '3s')") from None


class RuleFileError(ConfigurationError):
    """A rule file that does not parse or holds a bad rule: names the file, line, setting."""

    def __init__(self, path: str, line: int | None, setting: str, message: str) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line else path
        super().__init__(setting, f"{message} ({where})")


# -- reading a file ----------------------------------------------------------------------


def load_rules(path: str | os.PathLike[str]) -> RuleSet:
    """The rules of a ``.toml``, ``.yaml`` or ``.yml`` file.

    Raises:
        RuleFileError: unreadable, not TOML/YAML, or a bad rule (file, line, setting).
    """
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleFileError(str(p), None, "alerts.rules", f"cannot read the file: {exc}") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        data, lines = _yaml(text, str(p))
    else:
        data, lines = _toml(text, str(p))
    return parse_rules(data, str(p), lines)


def parse_rules(
    data: Any, path: str = "<rules>", lines: dict[str, int] | None = None
) -> RuleSet:
    """A :class:`RuleSet` from a mapping (``rules``, ``notifiers``, ``settings``).

    Raises:
        RuleFileError: a bad rule, naming it and its line when ``lines`` knows it.
    """
    lines = lines or {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RuleFileError(path, 1, "alerts", "the file must hold a mapping with 'rules'")
    try:
        return RuleSet.model_validate(data)
    except _Located as exc:
        raise RuleFileError(path, _line(lines, exc.path), _named(data, exc.path),
                            exc.message) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        located = (err.get("ctx") or {}).get("error")
        if isinstance(located, _Located):
            raise RuleFileError(path, _line(lines, located.path), _named(data, located.path),
                                located.message) from None
        dotted = _dotted(list(err["loc"]))
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "not a setting of llamonitor's alert rules"
        raise RuleFileError(path, _line(lines, dotted), _named(data, dotted), message) from None


def _dotted(loc: list[Any]) -> str:
    """``rules[0].window`` for pydantic's ``("rules", 0, "threshold", "window")``: the
    tagged union puts the rule's kind in the path, which is no key of the file."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        if (i >= 2 and loc[i - 2] == "rules" and isinstance(loc[i - 1], int)
                and part in ("threshold", "anomalous")):
            continue
        out += f".{part}" if out else str(part)
    return out


def _named(data: Any, dotted: str) -> str:
    """``rules[0] ("slow answers").threshold`` for ``rules[0].threshold``."""
    m = re.match(r"^(rules|notifiers)\[(\d+)\](.*)$", dotted)
    if not m:
        return dotted
    items = data.get(m.group(1)) if isinstance(data, dict) else None
    i = int(m.group(2))
    name = None
    if isinstance(items, list) and i < len(items) and isinstance(items[i], dict):
        name = items[i].get("name")
    label = f"{m.group(1)}[{i}]" + (f" ({name!r})" if isinstance(name, str) else "")
    return label + m.group(3)


def _line(lines: dict[str, int], dotted: str) -> int | None:
    key = dotted
    while key:
        if key in lines:
            return lines[key]
        key = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", key) if re.search(r"(\.[^.\[]+|\[\d+\])$",
                                                                     key) else ""
    return None


def _toml(text: str, path: str) -> tuple[Any, dict[str, int]]:
    import importlib

    tomllib: Any
    try:
        tomllib = importlib.import_module("tomllib")
    except ImportError:  # Python 3.10
        try:
            tomllib = importlib.import_module("tomli")
        except ImportError:
            raise ImportError(
                "reading a TOML rule file on Python 3.10 needs tomli: pip install "
                "'llamonitor[alerts]' (or write the rules in YAML)"
            ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise RuleFileError(path, int(m.group(1)) if m else None, "alerts",
                            f"not valid TOML: {exc}") from None
    return data, _toml_lines(text)


_HEADER = re.compile(r"^\s*\[\[\s*(rules|notifiers)\s*\]\]")
_TABLE = re.compile(r"^\s*\[\s*([A-Za-z_]+)\s*\]")
_KEY = re.compile(r"^\s*\"?([A-Za-z_][A-Za-z0-9_]*)\"?\s*=")


def _toml_lines(text: str) -> dict[str, int]:
    """The line of each ``[[rules]]`` entry and of each key in it (``rules[0].window``)."""
    lines: dict[str, int] = {}
    counts = {"rules": 0, "notifiers": 0}
    prefix = ""
    for number, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            kind = m.group(1)
            prefix = f"{kind}[{counts[kind]}]"
            counts[kind] += 1
            lines[prefix] = number
            continue
        t = _TABLE.match(line)
        if t:
            prefix = t.group(1)
            lines[prefix] = number
            continue
        k = _KEY.match(line)
        if k:
            lines[f"{prefix}.{k.group(1)}" if prefix else k.group(1)] = number
    return lines


def _yaml(text: str, path: str) -> tuple[Any, dict[str, int]]:
    try:
        import yaml
    except ImportError:
        raise ImportError(
            "reading a YAML rule file needs PyYAML: pip install 'llamonitor[alerts]'"
        ) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise RuleFileError(path, line, "alerts", f"not valid YAML: {exc}") from None
    lines: dict[str, int] = {}
    if node is not None:
        _yaml_lines(node, "", lines)
    return data, lines


def _yaml_lines(node: Any, prefix: str, lines: dict[str, int]) -> None:
    import yaml

    if prefix:
        lines.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = f"{prefix}.{key.value}" if prefix else str(key.value)
            lines[name] = key.start_mark.line + 1
            _yaml_lines(value, name, lines)
            lines[name] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _yaml_lines(item, f"{prefix}[{i}]", lines)
