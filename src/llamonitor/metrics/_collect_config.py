"""Collector configuration from code or from seed 003's YAML shape::

    monitoring:
      collectors:
        - type: system          # a registered collector name
          interval: 10s         # 500ms, 10s, 1m, 1h or a number of seconds
          metrics: [cpu_usage, memory_usage, disk_io]
        - type: container
          interval: 30s
      exporters:
        - type: prometheus
          endpoint: /metrics
          port: 9090

``collectors`` may also be a mapping (``system: {enabled: true, interval: 15}``).
A key this module does not know is a :class:`ConfigurationError` naming its
path (``monitoring.collectors[0].intervall``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llamonitor.schema.config import ConfigurationError

__all__ = ["CollectorSettings", "MetricsConfig", "load_config", "parse_config",
           "parse_interval"]

_COLLECTOR_KEYS = ("type", "enabled", "interval", "metrics", "options")
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass
class CollectorSettings:
    """One collector: its registered ``type``, whether ``enabled``, its
    ``interval`` in seconds (``None``: the collector's default), the metric
    groups (``None``: all) and other keyword ``options`` for its factory."""

    type: str
    enabled: bool = True
    interval: float | None = None
    metrics: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MetricsConfig:
    """The parsed ``monitoring`` section.

    Attributes:
        collectors: the collectors to run.
        exporters: exporter configs for ``MonitorConfig(exporters=...)``.
    """

    collectors: list[CollectorSettings] = field(default_factory=list)
    exporters: list[Any] = field(default_factory=list)


def parse_interval(value: Any, setting: str) -> float:
    """Seconds from ``10``, ``2.5``, ``"500ms"``, ``"10s"``, ``"1m"`` or ``"1h"``.

    Raises:
        ConfigurationError: not an interval, or not positive (names ``setting``).
    """
    if isinstance(value, bool):
        raise ConfigurationError(setting, f"expected seconds or '10s', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _INTERVAL.match(value)):
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise ConfigurationError(setting, f"expected seconds or '500ms', '10s', '1m', '1h', "
                                          f"got {value!r}")
    if not seconds > 0:
        raise ConfigurationError(setting, f"must be positive, got {value!r}")
    return seconds


def _collector(raw: Any, setting: str, name: str | None = None) -> CollectorSettings:
    if isinstance(raw, bool) and name is not None:
        return CollectorSettings(type=name, enabled=raw)
    if raw is None and name is not None:
        return CollectorSettings(type=name)
    if not isinstance(raw, Mapping):
        raise ConfigurationError(setting, f"expected a mapping, got {type(raw).__name__}")
    known = [k for k in _COLLECTOR_KEYS if name is None or k != "type"]
    for key in raw:
        if key not in known:
            raise ConfigurationError(f"{setting}.{key}", f"unknown key; expected one of {known}")
    kind = name if name is not None else raw.get("type")
    if not isinstance(kind, str) or not kind:
        raise ConfigurationError(f"{setting}.type", f"expected a collector name, got {kind!r}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigurationError(f"{setting}.enabled", f"expected true or false, got {enabled!r}")
    interval = raw.get("interval")
    seconds = None if interval is None else parse_interval(interval, f"{setting}.interval")
    metrics = raw.get("metrics")
    if metrics is not None and (isinstance(metrics, str) or not isinstance(metrics, Sequence)
                                or not all(isinstance(m, str) for m in metrics)):
        raise ConfigurationError(f"{setting}.metrics", f"expected a list of names, got {metrics!r}")
    options = raw.get("options") or {}
    if not isinstance(options, Mapping):
        raise ConfigurationError(f"{setting}.options", "expected a mapping")
    return CollectorSettings(kind, enabled, seconds, None if metrics is None else list(metrics),
                             dict(options))


def _exporter(raw: Any, setting: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(setting, f"expected a mapping, got {type(raw).__name__}")
    kind = raw.get("type")
    options = {k: v for k, v in raw.items() if k != "type"}
    if kind != "prometheus":
        raise ConfigurationError(f"{setting}.type", f"exporter type {kind!r} is not available; "
                                 "supported: ['prometheus'] (others: see "
                                 "MonitorConfig.exporters)")
    endpoint = options.pop("endpoint", "/metrics")
    if endpoint != "/metrics":
        raise ConfigurationError(f"{setting}.endpoint",
                                 f"the Prometheus endpoint is /metrics, got {endpoint!r}")
    try:  # by name: the metrics layer does not import the exporters
        prometheus_config = importlib.import_module("llamonitor.export").PrometheusConfig
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{setting}.type", "the prometheus exporter is not in this "
                                 "version of llamonitor") from exc
    try:
        return prometheus_config(**options)
    except ConfigurationError:
        raise
    except Exception as exc:  # pydantic's ValidationError names the field
        errors = getattr(exc, "errors", None)
        first: dict[str, Any] = (errors() or [{}])[0] if callable(errors) else {}
        loc = ".".join(str(p) for p in first.get("loc", ())) or "?"
        raise ConfigurationError(f"{setting}.{loc}", first.get("msg", str(exc))) from exc


def parse_config(data: Any, setting: str = "") -> MetricsConfig:
    """A :class:`MetricsConfig` from the parsed YAML (a mapping with a
    ``monitoring`` key, or the ``monitoring`` section itself when ``setting``
    is given).

    Raises:
        ConfigurationError: an unknown key or a bad value (names its path).
    """
    if not setting:
        if not isinstance(data, Mapping) or "monitoring" not in data:
            raise ConfigurationError("monitoring", "the configuration has no 'monitoring' section")
        for key in data:
            if key != "monitoring":
                raise ConfigurationError(str(key), "unknown key; expected 'monitoring'")
        data, setting = data["monitoring"], "monitoring"
    if data is None:
        return MetricsConfig()
    if not isinstance(data, Mapping):
        raise ConfigurationError(setting, f"expected a mapping, got {type(data).__name__}")
    for key in data:
        if key not in ("collectors", "exporters"):
            raise ConfigurationError(f"{setting}.{key}",
                                     "unknown key; expected 'collectors' or 'exporters'")
    config = MetricsConfig()
    raw = data.get("collectors") or []
    if isinstance(raw, Mapping):
        config.collectors = [_collector(v, f"{setting}.collectors.{k}", str(k))
                             for k, v in raw.items()]
    elif isinstance(raw, Sequence) and not isinstance(raw, str):
        config.collectors = [_collector(v, f"{setting}.collectors[{i}]")
                             for i, v in enumerate(raw)]
    else:
        raise ConfigurationError(f"{setting}.collectors", "expected a list or a mapping")
    exporters = data.get("exporters") or []
    if not isinstance(exporters, Sequence) or isinstance(exporters, str):
        raise ConfigurationError(f"{setting}.exporters", "expected a list")
    config.exporters = [_exporter(v, f"{setting}.exporters[{i}]")
                        for i, v in enumerate(exporters)]
    return config


def load_config(path: str) -> MetricsConfig:
    """Read seed 003's YAML configuration (PyYAML: the ``[metrics]`` extra).

    Args:
        path: the YAML file.

    Returns:
        The parsed configuration (pass it to :func:`llamonitor.metrics.configure_collectors`;
        its ``exporters`` to ``MonitorConfig(exporters=...)``).

    Raises:
        ImportError: PyYAML is missing (names the extra).
        ConfigurationError: unreadable, not YAML, or a bad key or value (names its path).
    """
    try:
        import yaml
    except ImportError as exc:
        raise ImportError("reading a YAML configuration needs PyYAML: "
                          "pip install 'llamonitor[metrics]'") from exc
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigurationError("monitoring", f"cannot read {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError("monitoring", f"{path} is not valid YAML: {exc}") from exc
    return parse_config(data)
