"""Configuration: seed constructors, environment variables, and early, named errors."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

import llamonitor
from llamonitor import (
    ConfigurationError,
    InMemoryBackend,
    MonitorConfig,
    StorageConfig,
    initialize_monitoring,
    monitor_llm,
)


def test_for_local_dev_is_parquet_in_monitoring_data() -> None:
    """for_local_dev(): the embedded Parquet store under ./monitoring_data."""
    config = MonitorConfig.for_local_dev()
    assert config.storage.backend == "parquet"
    assert config.storage.output_dir == Path("./monitoring_data")
    assert config.fail_silently is True
    assert config.queue_full_policy == "drop_newest"


@pytest.mark.parametrize(
    ("dsn", "backend"),
    [
        ("postgresql://u:p@h:5432/db", "postgres"),
        ("postgresql+asyncpg://u@h/db", "postgres"),
        ("mysql://root@127.0.0.1/test", "mysql"),
        ("sqlite:///tmp/x.db", "sqlite"),
    ],
)
def test_for_production_picks_the_backend_from_the_scheme(dsn: str, backend: str) -> None:
    """for_production(dsn) chooses the backend and hides the secret in reprs."""
    config = MonitorConfig.for_production(dsn)
    assert config.storage.backend == backend
    assert config.storage.connection_string is not None
    assert config.storage.connection_string.get_secret_value() == dsn
    assert "p@h" not in repr(config)


def test_for_production_rejects_an_unknown_scheme() -> None:
    """An unsupported scheme names the setting."""
    with pytest.raises(ConfigurationError, match=r"storage\.connection_string"):
        MonitorConfig.for_production("redis://localhost")


def test_environment_variables_flat_and_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    """LLMOPS_* variables (flat storage ones and nested with __) configure everything."""
    env = {
        "LLMOPS_BACKEND": "jsonl",
        "LLMOPS_CONNECTION_STRING": "postgresql://x@y/z",
        "LLMOPS_BATCH_SIZE": "250",
        "LLMOPS_FLUSH_INTERVAL_SECONDS": "2.5",
        "LLMOPS_MAX_QUEUE_SIZE": "1234",
        "LLMOPS_SAMPLE_RATE": "0.25",
        "LLMOPS_QUEUE_FULL_POLICY": "drop_oldest",
        "LLMOPS_FAIL_SILENTLY": "false",
        "LLMOPS_STORAGE__OUTPUT_DIR": "/tmp/somewhere",
        "LLMOPS_STORAGE__PARTITION_BY": "session_id",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    config = MonitorConfig.from_env()
    assert config.storage.backend == "jsonl"
    assert config.storage.batch_size == 250
    assert config.storage.flush_interval_seconds == 2.5
    assert config.storage.output_dir == Path("/tmp/somewhere")
    assert config.storage.partition_by == "session_id"
    assert config.storage.connection_string is not None
    assert config.max_queue_size == 1234
    assert config.sample_rate == 0.25
    assert config.queue_full_policy == "drop_oldest"
    assert config.fail_silently is False


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_queue_size": -1}, "max_queue_size"),
        ({"max_queue_bytes": 0}, "max_queue_bytes"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"queue_full_policy": "explode"}, "queue_full_policy"),
        ({"max_retries": -2}, "max_retries"),
    ],
)
def test_bad_values_fail_early_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    """Out-of-range monitor settings fail at construction, naming the field."""
    with pytest.raises(pydantic.ValidationError, match=field):
        MonitorConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"batch_size": -5}, "batch_size"), ({"flush_interval_seconds": 0}, "flush_interval_seconds")],
)
def test_bad_storage_values_name_the_field(kwargs: dict[str, object], field: str) -> None:
    """Negative sizes in storage settings are refused, naming the field."""
    with pytest.raises(pydantic.ValidationError, match=field):
        StorageConfig(**kwargs)  # type: ignore[arg-type]


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """LLMOPS_BATCH_SIZE=-1 fails at initialize_monitoring() naming batch_size."""
    monkeypatch.setenv("LLMOPS_BATCH_SIZE", "-1")
    with pytest.raises(pydantic.ValidationError, match="batch_size"):
        initialize_monitoring()


def test_presets_take_the_environment_over_their_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """for_local_dev() / for_production(): explicit arguments > environment > preset defaults."""
    monkeypatch.setenv("LLMOPS_STORAGE__OUTPUT_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("LLMOPS_BACKEND", "jsonl")
    monkeypatch.setenv("LLMOPS_BATCH_SIZE", "7")
    monkeypatch.setenv("LLMOPS_MAX_QUEUE_SIZE", "1234")
    local = MonitorConfig.for_local_dev()
    assert local.storage.output_dir == tmp_path / "env"
    assert local.storage.backend == "jsonl"
    assert local.storage.batch_size == 7
    assert local.storage.flush_interval_seconds == 1.0  # the preset's, no variable for it
    assert local.max_queue_size == 1234
    given = MonitorConfig.for_local_dev(tmp_path / "given", max_queue_size=99)
    assert given.storage.output_dir == tmp_path / "given"
    assert given.max_queue_size == 99
    production = MonitorConfig.for_production("postgresql://u@h/db")
    assert production.storage.backend == "postgres"  # the DSN given says so
    assert production.storage.batch_size == 7
    monkeypatch.delenv("LLMOPS_BATCH_SIZE")
    assert MonitorConfig.for_production("postgresql://u@h/db").storage.batch_size == 1000
    assert MonitorConfig.for_production("postgresql://u@h/db", batch_size=5).storage.batch_size == 5


def test_a_storage_config_given_explicitly_still_takes_unset_fields_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """MonitorConfig(storage=StorageConfig(backend=...)): the environment fills output_dir."""
    monkeypatch.setenv("LLMOPS_STORAGE__OUTPUT_DIR", str(tmp_path / "env"))
    config = MonitorConfig(storage=StorageConfig(backend="jsonl"))
    assert config.storage.backend == "jsonl"
    assert config.storage.output_dir == tmp_path / "env"
    explicit = MonitorConfig(storage=StorageConfig(output_dir=tmp_path / "mine"))
    assert explicit.storage.output_dir == tmp_path / "mine"


def test_an_invalid_backend_from_the_environment_fails_at_initialize_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LLMOPS_BACKEND=mongodb with the quick start's preset: a clear error, not silence."""
    monkeypatch.setenv("LLMOPS_BACKEND", "mongodb")
    error = r"storage\.backend: unknown backend 'mongodb'.*LLMOPS_BACKEND"
    with pytest.raises(ConfigurationError, match=error):
        initialize_monitoring(MonitorConfig.for_local_dev())


def test_unknown_backend_fails_at_initialize_naming_the_setting() -> None:
    """An unknown backend name is refused with the list of known ones."""
    config = MonitorConfig(storage=StorageConfig(backend="cassandra"))
    with pytest.raises(ConfigurationError, match=r"storage\.backend.*cassandra.*parquet"):
        initialize_monitoring(config)
    assert llamonitor.get_writer() is None


def test_unwritable_output_dir_fails_at_initialize(tmp_path: Path) -> None:
    """A directory that cannot be created names storage.output_dir."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = MonitorConfig(storage=StorageConfig(output_dir=blocker / "store"))
    with pytest.raises(ConfigurationError, match=r"storage\.output_dir"):
        initialize_monitoring(config)


def test_unimportable_backend_path_names_the_setting() -> None:
    """'module:Class' that does not import fails early with the setting's name."""
    config = MonitorConfig(storage=StorageConfig(backend="no_such_module:Backend"))
    with pytest.raises(ConfigurationError, match=r"storage\.backend.*no_such_module"):
        initialize_monitoring(config)


def test_a_user_backend_plugs_in_by_dotted_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """StorageConfig(backend='pkg.module:Class') builds the user's StorageBackend."""
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sink.py").write_text(
        "from llamonitor import StorageBackend\n"
        "EVENTS = []\n"
        "class ListBackend(StorageBackend):\n"
        "    async def write_batch(self, events):\n"
        "        EVENTS.extend(events)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    initialize_monitoring(MonitorConfig(storage=StorageConfig(backend="userpkg.sink:ListBackend")))

    @monitor_llm(operation_name="plugged", custom_attributes={"k": 1})
    def plugged() -> str:
        return "ok"

    plugged()
    assert llamonitor.flush(5)
    import userpkg.sink  # type: ignore[import-not-found]

    (event,) = userpkg.sink.EVENTS
    assert isinstance(event, llamonitor.MetricEvent)
    assert event.operation_name == "plugged"
    assert event.custom_attributes == {"k": 1}


def test_not_a_backend_is_refused() -> None:
    """An object without write_batch/write_table is not accepted as a backend."""
    with pytest.raises(ConfigurationError, match=r"storage\.backend"):
        initialize_monitoring(MonitorConfig(storage=StorageConfig(backend=object())))


def test_disabled_config_records_nothing() -> None:
    """enabled=False: decorated functions run, nothing is recorded."""
    backend = InMemoryBackend()
    initialize_monitoring(MonitorConfig(enabled=False, storage=StorageConfig(backend=backend)))

    @monitor_llm()
    def f() -> int:
        return 3

    assert f() == 3
    assert llamonitor.flush(1)
    assert len(backend) == 0


@pytest.mark.parametrize(
    "dsn",
    ["postgresql://u:pw@127.0.0.1:70000/test", "mysql://root:pw@127.0.0.1:0/test"],
)
def test_a_port_outside_1_to_65535_fails_at_initialize_naming_the_setting(dsn: str) -> None:
    """Even with fail_silently (the default): a wrong port is configuration, not an outage."""
    with pytest.raises(ConfigurationError, match=r"storage\.connection_string.*port") as error:
        initialize_monitoring(MonitorConfig.for_production(dsn))
    assert "pw" not in str(error.value)
