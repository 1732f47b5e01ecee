"""Collectors configured from seed 003's YAML shape, and its GPU example
expressed as a registered collector (reading nvidia-smi's CSV from a file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llamonitor.metrics import (
    ContainerCollector,
    Metric,
    MetricCollector,
    PointBuffer,
    SystemCollector,
    configure_collectors,
    load_config,
    parse_labels,
    register_collector,
    stop_collectors,
)
from llamonitor.metrics._collect_base import MetricCollectorRegistry
from llamonitor.schema.config import ConfigurationError

from ._points import value


class GPUMetricsCollector(MetricCollector):
    """Seed 003's example: usage and memory per GPU, from the CSV
    ``nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits``
    prints (read from ``path``, so it runs without a GPU)."""

    name = "gpu"
    default_interval_seconds = 15.0

    def __init__(self, path: str, metrics: list[str] | None = None) -> None:
        self.path = path

    def collect(self) -> list[Metric]:
        metrics = []
        for line in Path(self.path).read_text().splitlines():
            gpu_id, usage, memory_mib = (x.strip() for x in line.split(","))
            labels = {"gpu_id": gpu_id}
            metrics.append(Metric.gauge("gpu_usage_percent", float(usage), labels,
                                        unit="percent"))
            metrics.append(Metric.gauge("gpu_memory_bytes", float(memory_mib) * 2**20, labels,
                                        unit="bytes"))
        return metrics

    def get_metadata(self) -> dict[str, Any]:
        return {"name": "gpu_metrics", "version": "1.0",
                "metrics": ["gpu_usage_percent", "gpu_memory_bytes"]}


SEED_YAML = """
monitoring:
  collectors:
    - type: system
      interval: 10s
      metrics:
        - cpu_usage
        - memory_usage
        - disk_io
    - type: docker
      interval: 30s
      metrics:
        - container_stats
        - container_events
    - type: application
      interval: 5s
      metrics:
        - evaluation_count
        - error_rate
        - queue_depth
    - type: gpu
      interval: 1m
      options:
        path: {gpu}
"""


@pytest.fixture
def gpu_file(tmp_path: Path) -> Path:
    path = tmp_path / "nvidia-smi.csv"
    path.write_text("0, 93, 10240\n1, 5, 512\n")
    register_collector("gpu", GPUMetricsCollector)
    yield path
    MetricCollectorRegistry.unregister("gpu")


def test_the_seeds_yaml_shape_runs_its_collectors(tmp_path: Path, gpu_file: Path) -> None:
    """Seed 003's collectors section (docker = the cgroup collector) plus a
    user's GPU collector, each at its interval, all collected."""
    path = tmp_path / "monitoring.yaml"
    path.write_text(SEED_YAML.format(gpu=gpu_file))
    config = load_config(str(path))
    assert [(c.type, c.interval) for c in config.collectors] == [
        ("system", 10.0), ("docker", 30.0), ("application", 5.0), ("gpu", 60.0)]
    sink = PointBuffer()
    s = configure_collectors(config, sink=sink, start=False)
    try:
        assert isinstance(s.collectors[0], SystemCollector)
        assert isinstance(s.collectors[1], ContainerCollector)
        s.run_due()
        stats = s.stats()
        assert {k: v.interval_seconds for k, v in stats.items()} == {
            "system": 10.0, "container": 30.0, "application": 5.0, "gpu": 60.0}
        assert all(v.errors == 0 for v in stats.values())
    finally:
        stop_collectors()
    table = sink.table()
    gpu = [Metric(r["name"], r["value"], r["kind"], parse_labels(r["labels"]))
           for r in table.to_pylist() if r["source"] == "gpu"]
    assert value(gpu, "gpu_usage_percent", gpu_id="0") == 93.0
    assert value(gpu, "gpu_memory_bytes", gpu_id="1") == 512 * 2**20
    assert "process_memory_rss_bytes" in table.column("name").to_pylist()
    assert "process_threads" not in table.column("name").to_pylist()  # not in its metrics:


def test_the_mapping_shape_and_disabled_collectors(tmp_path: Path) -> None:
    """``collectors: {system: {enabled, interval}}`` works; disabled ones do not run."""
    path = tmp_path / "m.yaml"
    path.write_text("monitoring:\n  collectors:\n    system: {enabled: true, interval: 20}\n"
                    "    container: {enabled: false}\n    application: false\n")
    s = configure_collectors(load_config(str(path)), sink=PointBuffer(), start=False)
    try:
        assert list(s.stats()) == ["system"] and s.stats()["system"].interval_seconds == 20
    finally:
        stop_collectors()


@pytest.mark.parametrize(("text", "setting"), [
    ("monitoring:\n  collectors:\n    - type: system\n      intervall: 10s\n",
     "monitoring.collectors[0].intervall"),
    ("monitoring:\n  colectors: []\n", "monitoring.colectors"),
    ("monitoring:\n  collectors:\n    - type: system\n      interval: soon\n",
     "monitoring.collectors[0].interval"),
    ("monitoring:\n  collectors:\n    system: {enabled: yes please}\n",
     "monitoring.collectors.system.enabled"),
    ("monitoring:\n  exporters:\n    - type: cloudwatch\n      region: us-east-1\n",
     "monitoring.exporters[0].type"),
    ("other: 1\nmonitoring: {}\n", "other"),
    ("monitoring: [\n", "monitoring"),
])
def test_bad_yaml_names_the_key(tmp_path: Path, text: str, setting: str) -> None:
    """An unknown key, a bad value or bad YAML is a ConfigurationError naming its path."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as err:
        load_config(str(path))
    assert err.value.setting == setting


@pytest.mark.parametrize(("text", "setting"), [
    ("monitoring:\n  collectors:\n    - type: gpu2\n", "monitoring.collectors[0].type"),
    ("monitoring:\n  collectors:\n    - type: system\n      metrics: [cpu_usag]\n",
     "monitoring.collectors[0].metrics"),
])
def test_unknown_collectors_and_groups_fail_at_configure(tmp_path: Path, text: str,
                                                         setting: str) -> None:
    """An unregistered type or an unknown metric group fails before anything runs."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as err:
        configure_collectors(load_config(str(path)), sink=PointBuffer(), start=False)
    assert err.value.setting == setting


def test_prometheus_exporter_maps_to_its_config(tmp_path: Path) -> None:
    """The seed's prometheus exporter becomes a PrometheusConfig when the
    exporter is in this version, and a ConfigurationError naming it when not."""
    path = tmp_path / "p.yaml"
    path.write_text("monitoring:\n  exporters:\n    - type: prometheus\n      endpoint: /metrics\n"
                    "      port: 9090\n")
    try:
        from llamonitor.export import PrometheusConfig  # type: ignore[attr-defined]
    except ImportError:
        with pytest.raises(ConfigurationError) as err:
            load_config(str(path))
        assert err.value.setting == "monitoring.exporters[0].type"
    else:
        (exporter,) = load_config(str(path)).exporters
        assert isinstance(exporter, PrometheusConfig) and exporter.port == 9090
