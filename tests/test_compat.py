"""llamonitor-async users switch without changing code: the ``llmops_monitoring``
import paths, the original's public surface, and the seed's own examples run
through both import names (seed 000 is its architecture, seed 004 its README)."""

from __future__ import annotations

import ast
import asyncio
import importlib
import json
import logging
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

import llamonitor
from _helpers import one, rows
from llamonitor import CollectorRegistry, MetricCollector, monitor_llm

# A 3x2 PNG: 8-byte signature, IHDR with width and height.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000003000000020806000000") + bytes(64)


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    """Seed examples register "cost" (and tests clear the registry): restore it."""
    saved = dict(CollectorRegistry._collectors)
    yield
    CollectorRegistry._collectors.clear()
    CollectorRegistry._collectors.update(saved)


def attrs(row: dict[str, Any]) -> Any:
    return json.loads(row["custom_attributes"] or "{}")


# -- import paths ------------------------------------------------------------------

ORIGINAL_PATHS = {
    "llmops_monitoring": [
        "monitor_llm", "MonitorConfig", "MonitoringWriter", "initialize_monitoring",
    ],
    "llmops_monitoring.instrumentation": ["MetricCollector", "CollectorRegistry", "monitor_llm"],
    "llmops_monitoring.instrumentation.decorators": ["monitor_llm"],
    "llmops_monitoring.instrumentation.context": [
        "SpanContext", "monitoring_session", "monitoring_trace", "get_current_session_id",
        "get_current_trace_id", "get_current_span_id", "get_current_parent_span_id",
        "set_session_id", "set_trace_id", "clear_context",
    ],
    "llmops_monitoring.instrumentation.base": ["MetricCollector", "CollectorRegistry"],
    "llmops_monitoring.instrumentation.collectors": [
        "TextCollector", "ImageCollector", "MultiTextCollector", "CostCollector",
    ],
    "llmops_monitoring.instrumentation.collectors.text": ["TextCollector", "MultiTextCollector"],
    "llmops_monitoring.instrumentation.collectors.image": ["ImageCollector"],
    "llmops_monitoring.instrumentation.collectors.cost": ["CostCollector"],
    "llmops_monitoring.schema": ["MetricEvent", "MonitorConfig", "StorageConfig"],
    "llmops_monitoring.schema.config": ["MonitorConfig", "StorageConfig"],
    "llmops_monitoring.schema.events": ["MetricEvent"],
    "llmops_monitoring.transport": ["MonitoringWriter", "StorageBackend"],
    "llmops_monitoring.transport.writer": ["MonitoringWriter", "initialize_monitoring"],
    "llmops_monitoring.transport.backends": ["StorageBackend"],
    "llmops_monitoring.transport.backends.base": ["StorageBackend"],
    "llmops_monitoring.transport.backends.parquet": ["ParquetBackend"],
    "llmops_monitoring.transport.backends.postgres": ["PostgresBackend"],
    "llmops_monitoring.transport.backends.mysql": ["MySQLBackend"],
    "llmops_monitoring.utils.logging_config": ["get_logger", "configure_logging"],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(ORIGINAL_PATHS))
def test_original_import_paths(module: str) -> None:
    """Every public name of llamonitor-async imports from its original module."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        mod = importlib.import_module(module)
    for name in ORIGINAL_PATHS[module]:
        value = getattr(mod, name)
        ours = getattr(llamonitor, name, None) or getattr(llamonitor.instrument, name, None)
        if isinstance(value, type) and ours is not None:
            assert issubclass(value, ours), f"{module}.{name} is not llamonitor's"
        elif ours is not None:
            assert value is ours, f"{module}.{name} is not llamonitor's"
    assert sorted(mod.__all__) == mod.__all__


def test_import_warns_once_naming_llamonitor() -> None:
    """Importing the old name warns once, at the importing line, that it is now llamonitor."""
    code = (
        "import llmops_monitoring.schema.config\n"
        "import llmops_monitoring\n"
        "from llmops_monitoring.instrumentation.context import monitoring_session\n"
        "import llmops_monitoring.transport.backends.parquet\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # the packages under test
    done = subprocess.run(
        [sys.executable, "-W", "always::DeprecationWarning", "-c", code],
        capture_output=True, text=True, timeout=60, check=True, env=env,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if "DeprecationWarning" in line]
    assert len(lines) == 1, done.stderr
    expected = "<string>:1: DeprecationWarning: llmops_monitoring is now llamonitor"
    assert lines[0].startswith(expected)


# -- MonitorConfig's legacy settings -----------------------------------------------


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"auto_start": False}, "initialize_monitoring"),
        ({"worker_threads": 2}, "storage.batch_size"),
        ({"extensions": {"prometheus": {"enabled": True}}}, "extra_backends"),
    ],
)
def test_legacy_settings_warn_naming_the_replacement(
    settings: dict[str, Any], named: str, spans: llamonitor.InMemoryBackend
) -> None:
    """auto_start, worker_threads, extensions are accepted; a value with no effect
    here warns (at the user's line) naming what to use; monitoring still runs."""
    with pytest.warns(DeprecationWarning, match=re.escape(named)) as caught:
        config = llamonitor.MonitorConfig(
            storage=llamonitor.StorageConfig(backend=spans), **settings
        )
    assert caught[0].filename == __file__
    llamonitor.initialize_monitoring(config)
    monitor_llm("op")(lambda: 1)()
    assert one(spans)["operation_name"] == "op"


def test_extension_added_after_the_config_warns_at_initialize(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """Seed style ``config.extensions["websocket"] = ...`` warns when monitoring starts."""
    config = llamonitor.MonitorConfig(storage=llamonitor.StorageConfig(backend=spans))
    config.extensions["websocket"] = {"enabled": True}
    with pytest.warns(DeprecationWarning, match="'websocket'"):
        llamonitor.initialize_monitoring(config)


class Failing(llamonitor.StorageBackend):
    async def write_batch(self, events: list[llamonitor.MetricEvent]) -> None:
        raise ConnectionError("store is down")


def test_retry_failed_writes_false_drops_a_failed_batch(tmp_path: Path) -> None:
    """retry_failed_writes=False: no retries, no spool; the batch is counted failed."""
    config = llamonitor.MonitorConfig(
        storage=llamonitor.StorageConfig(backend=Failing, output_dir=tmp_path),
        retry_failed_writes=False,
    )
    assert config.max_retries == 0 and config.spool_enabled is False
    writer = llamonitor.initialize_monitoring(config)
    monitor_llm("op")(lambda: 1)()
    llamonitor.flush(5)
    health = writer.health_check()
    counts = (health["events_failed"], health["events_retried"], health["events_spooled"])
    assert counts == (1, 0, 0)


# -- collectors ----------------------------------------------------------------------


class Length(MetricCollector):
    def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any]:
        return {"custom_attributes": {"length": len(result)}}

    def should_collect(self, result: Any, args: Any, kwargs: Any) -> bool:
        return bool(kwargs.get("measure"))

    @property
    def metric_type(self) -> str:
        return "length"


def test_should_collect_is_honoured(spans: llamonitor.InMemoryBackend) -> None:
    """A collector whose should_collect() says False does not run for that call."""

    @monitor_llm("op", collectors=[Length()])
    def answer(text: str, measure: bool = False) -> str:
        return text

    answer("abc", measure=True)
    answer("abcd")
    assert sorted(attrs(r).get("length", 0) for r in rows(spans)) == [0, 3]


def test_registry_surface() -> None:
    """get_all(), list_available(), get(unknown) is None, clear(); "cost" is built in."""
    assert {"text", "image", "cost"} <= set(CollectorRegistry.list_available())
    assert CollectorRegistry.get("no-such-collector") is None
    assert isinstance(CollectorRegistry.get("cost"), llamonitor.instrument.CostCollector)
    CollectorRegistry.register("length", Length)
    found = CollectorRegistry.get_all(["length", "no-such-collector"])
    assert [type(c) for c in found] == [Length]
    assert len(CollectorRegistry.get_all()) == len(CollectorRegistry.list_available())
    CollectorRegistry.clear()
    assert CollectorRegistry.list_available() == [] and CollectorRegistry.get_all() == []


class SeedContext(MetricCollector):
    """A collector of seed 000's style: it reads the context as a dict."""

    def collect(self, result: Any, args: Any, kwargs: Any, context: Any = None) -> Any:
        if context is None or "measurement" not in context:
            return {}
        return {
            "custom_attributes": {
                "slow": context["duration_ms"] > 1000,
                "team": context.get("custom_attributes", {}).get("team"),
                "model": context["model"],
                "args": sorted(context["function_args"]),
                "chars": context.get("text_metrics").char_count,
                "images": context["image_metrics"].count,
                "measurement": context["measurement"],
                "span_id": context["span_ctx"].span_id,
                "keys": sorted(dict(context)),
            }
        }

    @property
    def metric_type(self) -> str:
        return "seed"


def test_collector_context_answers_the_seed_keys(spans: llamonitor.InMemoryBackend) -> None:
    """context["duration_ms"], .get("custom_attributes"), model, function_args,
    text_metrics, image_metrics, measurement, span_ctx: as seed 000 passed them."""

    @monitor_llm(
        "op", measure_text=True, measure_images=True, collectors=[SeedContext()],
        custom_attributes={"team": "search"}, measurement="token",
    )  # fmt: skip
    def answer(prompt: str, model: str = "gpt-4o") -> dict[str, Any]:
        return {"text": "four five", "images": [PNG]}

    answer("q", model="gpt-4o-mini")
    row = one(spans)
    got = attrs(row)
    assert got["slow"] is False and got["team"] == "search" and got["model"] == "gpt-4o-mini"
    assert (got["args"], got["chars"], got["images"]) == (["model"], 9, 1)
    assert got["measurement"] == "token" and got["span_id"] == row["span_id"]
    assert got["keys"] == sorted(
        ["duration_ms", "span_ctx", "custom_attributes", "measurement", "model",
         "function_args", "text_metrics", "image_metrics"]
    )  # fmt: skip


def test_builtin_cost_collector(spans: llamonitor.InMemoryBackend) -> None:
    """collectors=["cost"]: tokens from the result's usage, else estimated from its
    text, priced into cost_usd for the model in custom_attributes."""

    @monitor_llm("estimated", collectors=["cost"], custom_attributes={"model": "gpt-4o-mini"})
    def estimated() -> str:
        return "x" * 400

    @monitor_llm("usage", collectors=["cost"])
    def with_usage(model: str) -> dict[str, Any]:
        return {"model": model, "usage": {"prompt_tokens": 10, "completion_tokens": 20}}

    estimated()
    with_usage(model="gpt-4o-mini")
    by_op = {r["operation_name"]: r for r in rows(spans)}
    est, usage = by_op["estimated"], by_op["usage"]
    assert (est["output_tokens"], est["token_source"]) == (100, "estimate:chars/4")
    assert (usage["input_tokens"], usage["output_tokens"], usage["token_source"]) == (
        10, 20, "provider",
    )  # fmt: skip
    assert est["cost_usd"] > 0 and usage["cost_usd"] > 0


def test_measure_images_list_keeps_only_those_metrics(spans: llamonitor.InMemoryBackend) -> None:
    """measure_images=["count", "dimensions"]: count, width, height; not size or format."""

    @monitor_llm("img", measure_images=["count", "dimensions"])
    def image() -> bytes:
        return PNG

    image()
    row = one(spans)
    assert (row["image_count"], row["image_width"], row["image_height"]) == (1, 3, 2)
    assert row["image_file_size_bytes"] is None and row["image_format"] is None


def test_measurement_mode_is_checked() -> None:
    """measurement= takes seed 000's modes; another value fails at decoration, named."""
    for mode in ("auto", "capacity", "token", "hybrid", {"mode": "token"}, None):
        monitor_llm("op", measurement=mode)
    with pytest.raises(ValueError, match="measurement: unknown mode 'tokens'"):
        monitor_llm("op", measurement="tokens")


def test_original_collector_arguments(spans: llamonitor.InMemoryBackend) -> None:
    """TextCollector(measure=, text_extractor=(result, args, kwargs)), MultiTextCollector,
    ImageCollector(measure=) take the original's arguments."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from llmops_monitoring.instrumentation import collectors as old

    def prompt_of(result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return str(args[0])  # the original's extractors see the call's arguments

    prompt = old.TextCollector(measure=["char_count"], text_extractor=prompt_of)
    monitor_llm("prompt", collectors=[prompt])(lambda q: "ignored")("hello")
    monitor_llm("multi", collectors=[old.MultiTextCollector(aggregate=False)])(
        lambda: ["a b", "c"]
    )()
    monitor_llm("img", collectors=[old.ImageCollector(measure=["count"])])(lambda: [PNG, PNG])()
    by_op = {r["operation_name"]: r for r in rows(spans)}
    assert (by_op["prompt"]["text_char_count"], by_op["prompt"]["text_word_count"]) == (5, None)
    assert (by_op["multi"]["text_char_count"], by_op["multi"]["text_word_count"]) == (4, 3)
    assert (by_op["img"]["image_count"], by_op["img"]["image_width"]) == (2, None)


# -- context, backends, writer ------------------------------------------------------


def test_span_context_current_to_dict_and_span_id(spans: llamonitor.InMemoryBackend) -> None:
    """SpanContext(span_id=...) keeps a 16-hex id; current() and to_dict() as in seed 000."""
    with llamonitor.SpanContext(
        session_id="s1", trace_id="t1", operation_name="outer", span_id="00f067aa0ba902b7"
    ) as outer:
        assert llamonitor.SpanContext.current() is outer
        monitor_llm("inner")(lambda: None)()
    assert outer.to_dict() == {
        "session_id": "s1", "trace_id": "t1", "span_id": "00f067aa0ba902b7",
        "parent_span_id": None,
    }  # fmt: skip
    by_op = {r["operation_name"]: r for r in rows(spans)}
    assert by_op["outer"]["span_id"] == "00f067aa0ba902b7"
    assert by_op["inner"]["parent_span_id"] == "00f067aa0ba902b7"
    other = llamonitor.SpanContext(span_id="span-789")  # any text: a stable 64-bit id
    assert other.span_id == llamonitor.SpanContext(span_id="span-789").span_id


def test_original_context_functions(spans: llamonitor.InMemoryBackend) -> None:
    """The original's SpanContext argument order, get_current_*, set_*_id, clear_context."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from llmops_monitoring.instrumentation import context as old

    def inner() -> tuple[Any, ...]:
        return (old.get_current_session_id(), old.get_current_trace_id(),
                old.get_current_span_id(), old.get_current_parent_span_id())  # fmt: skip

    with old.SpanContext("s1", "t1", "00000000000000aa", "outer") as outer:
        got = monitor_llm("inner")(inner)()
    assert outer.span_id == "00000000000000aa" and got[:2] == ("s1", "t1")
    by_op = {r["operation_name"]: r for r in rows(spans)}
    assert got[3] == "00000000000000aa" and got[2] == by_op["inner"]["span_id"]

    async def task() -> Any:
        old.set_session_id("s2")
        old.set_trace_id("t2")
        ids = (old.get_current_session_id(), old.get_current_trace_id())
        old.clear_context()
        return ids, old.get_current_session_id()

    assert asyncio.run(task()) == (("s2", "t2"), None)


class OneByOne(llamonitor.StorageBackend):
    """A seed 000 style backend that wants events one at a time."""

    calls: list[str] = []

    async def initialize(self) -> None:
        pass

    async def write_event(self, event: llamonitor.MetricEvent) -> None:
        self.calls.append(event.operation_name)

    async def write_batch(self, events: list[llamonitor.MetricEvent]) -> None:
        self.calls.append("batch")

    async def close(self) -> None:
        pass

    def supports_batch_writes(self) -> bool:
        return False


def test_supports_batch_writes(tmp_path: Path) -> None:
    """Backends batch by default; one that says False gets write_event per event."""
    assert Failing().supports_batch_writes() is True
    config = llamonitor.StorageConfig(backend=OneByOne, output_dir=tmp_path)
    llamonitor.initialize_monitoring(llamonitor.MonitorConfig(storage=config, spool_enabled=False))
    for name in ("a", "b"):
        monitor_llm(name)(lambda: None)()
    assert llamonitor.flush(5)
    assert sorted(OneByOne.calls) == ["a", "b"]


def test_writer_write_event(spans: llamonitor.InMemoryBackend) -> None:
    """await writer.write_event(event) queues a ready-made event (seed 000)."""
    event = llamonitor.MetricEvent.from_row(
        {"event_id": "e1", "session_id": "s", "trace_id": "t", "span_id": "1",
         "operation_name": "made", "timestamp": "2025-01-01T00:00:00", "duration_ms": 1.0}
    )  # fmt: skip

    async def main() -> None:
        writer = llamonitor.MonitoringWriter.get_instance_sync()
        assert writer is not None
        assert await writer.write_event(event)

    asyncio.run(main())
    assert one(spans)["operation_name"] == "made"


def test_logging_helpers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """get_logger prints to stdout; configure_logging routes llamonitor's logs to a file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from llmops_monitoring.utils.logging_config import configure_logging, get_logger

    get_logger("compat_test_app").info("hello from the app")
    assert "INFO - hello from the app" in capsys.readouterr().out
    log = tmp_path / "logs" / "monitor.log"
    library = [logging.getLogger(n) for n in ("llamonitor", "llmops_monitoring")]
    saved = [(lg.level, lg.propagate, list(lg.handlers)) for lg in library]
    try:
        configure_logging(level="DEBUG", format_style="simple", log_file=log, quiet=True)
        logging.getLogger("llamonitor.compat_test").debug("from the library")
    finally:
        configure_logging(quiet=True)  # closes the file handler it added
        for lg, (level, propagate, handlers) in zip(library, saved, strict=True):
            lg.setLevel(level)
            lg.propagate = propagate
            lg.handlers[:] = handlers
    assert log.read_text() == "DEBUG: from the library\n"


# -- the seeds' examples, run unchanged through both import names --------------------
#
# Each example is the seed's text. The only edit is the import name: with
# "llamonitor", ``from llmops_monitoring.x.y import ...`` reads ``from llamonitor
# import ...``; with "llmops_monitoring", ``from llamonitor import ...`` reads
# ``from llmops_monitoring import ...``. Seed 000's snippets have no imports:
# PRELUDE adds them at the original's paths (its "Key Files").

PRELUDE = """
import asyncio
from typing import List
from llmops_monitoring import monitor_llm, initialize_monitoring, MonitorConfig
from llmops_monitoring.instrumentation.base import MetricCollector, CollectorRegistry
from llmops_monitoring.instrumentation.context import SpanContext
from llmops_monitoring.schema.config import StorageConfig
from llmops_monitoring.schema.events import MetricEvent
from llmops_monitoring.transport.backends.base import StorageBackend
from llmops_monitoring.transport.writer import MonitoringWriter
"""

SEED_004_BASIC_USAGE = """
import asyncio
from llamonitor import monitor_llm, initialize_monitoring, MonitorConfig

@monitor_llm(
    operation_name="generate_text",
    measure_text=True,  # Collect all text metrics
    custom_attributes={"model": "gpt-4"}
)
async def my_llm_function(prompt: str):
    # Your LLM call here
    return {"text": "Generated response..."}

async def main():
    # Initialize monitoring
    await initialize_monitoring(MonitorConfig.for_local_dev())

    # Use your decorated functions
    result = await my_llm_function("Hello!")

    # Events are automatically tracked and written asynchronously

if __name__ == "__main__":
    asyncio.run(main())
"""

SEED_004_CONFIGURATION = """
from llmops_monitoring import MonitorConfig
from llmops_monitoring.schema.config import StorageConfig

# Local development
config = MonitorConfig.for_local_dev()

# Production
config = MonitorConfig.for_production(
    "postgresql://user:pass@host:5432/monitoring"
)

# Custom
config = MonitorConfig(
    storage=StorageConfig(
        backend="parquet",
        output_dir="./my_data",
        batch_size=500,
        flush_interval_seconds=10.0
    ),
    max_queue_size=50000
)

await initialize_monitoring(config)
"""

SEED_004_STORAGE_BACKENDS = """
config = MonitorConfig(
    storage=StorageConfig(
        backend="parquet",
        output_dir="./monitoring_data",
        partition_by="date"  # or "session_id"
    )
)
parquet = config

config = MonitorConfig(
    storage=StorageConfig(
        backend="postgres",
        connection_string="postgresql://user:pass@host:5432/db",
        table_name="metric_events",
        pool_size=20
    )
)
"""

# Its helpers (llm.classify, search_kb, generate_response) are not in the seed.
SEED_004_HIERARCHY_HELPERS = """
class llm:
    async def classify(query):
        return "weather"

@monitor_llm("search_kb", operation_type="tool")
async def search_kb(intent):
    return "sunny"

@monitor_llm("generate_response")
async def generate_response(knowledge):
    return "It is " + knowledge

await initialize_monitoring(MonitorConfig.for_local_dev())
"""

SEED_004_HIERARCHY = """
from llmops_monitoring.instrumentation.context import monitoring_session, monitoring_trace

@monitor_llm("orchestrator", operation_type="agent_workflow")
async def run_workflow(query: str):
    # All nested calls automatically tracked
    intent = await classify_intent(query)      # Child span
    knowledge = await search_kb(intent)        # Child span
    response = await generate_response(knowledge)  # Child span
    return response

@monitor_llm("classify_intent")
async def classify_intent(query: str):
    # Automatically linked to parent
    return await llm.classify(query)

# Use with session context
with monitoring_session("user-123"):
    with monitoring_trace("conversation-1"):
        result = await run_workflow("What is the weather?")
"""

SEED_004_CUSTOM_METRICS = """
from llmops_monitoring.instrumentation.base import MetricCollector, CollectorRegistry

class CostCollector(MetricCollector):
    def collect(self, result, args, kwargs, context):
        # Your cost calculation logic
        return {"custom_attributes": {"cost_usd": 0.002}}

    @property
    def metric_type(self) -> str:
        return "cost"

# Register
CollectorRegistry.register("cost", CostCollector)

# Use
@monitor_llm(collectors=["cost"])
async def my_function():
    ...
"""

SEED_000_HIERARCHY = """
# Parent operation
with SpanContext(session_id="s1", trace_id="t1") as parent:
    parent_span_id = None  # Root

    # Child operation (automatic inheritance)
    with SpanContext() as child:
        child.session_id == "s1"  # Inherited
        child.trace_id == "t1"     # Inherited
        child.parent_span_id == parent.span_id  # Linked
"""

SEED_000_ASYNC = """
@monitor_llm("parent")
async def parent_op():
    await child_op()  # Context propagates

@monitor_llm("child")
async def child_op():
    # Automatically linked to parent
    pass
"""

SEED_000_COLLECTOR = """
class MyCollector(MetricCollector):
    def collect(self, result, args, kwargs, context):
        # Extract your metrics
        return {"custom_attributes": {...}}

    @property
    def metric_type(self) -> str:
        return "my_metric"

# Register
CollectorRegistry.register("my_metric", MyCollector)

# Use
@monitor_llm(collectors=["my_metric"])
async def my_func():
    pass
"""

SEED_000_BACKEND = """
class MyBackend(StorageBackend):
    async def initialize(self):
        # Setup connections
        pass

    async def write_event(self, event: MetricEvent):
        # Single write
        pass

    async def write_batch(self, events: List[MetricEvent]):
        # Batch write (more efficient)
        pass

    async def close(self):
        # Cleanup
        pass
"""

SEED_000_SCHEMA_EVOLUTION = """
from typing import Optional
from pydantic import BaseModel
from llmops_monitoring.schema.events import MetricEvent, TextMetrics

# 1. Add Pydantic model
class AudioMetrics(BaseModel):
    duration_seconds: float
    sample_rate: int
    channels: int

# 2. Update MetricEvent
class MyMetricEvent(MetricEvent):
    audio_metrics: Optional[AudioMetrics] = None

# 3. Create collector
class AudioCollector(MetricCollector):
    def collect(self, result, args, kwargs, context=None):
        return {"audio_metrics": AudioMetrics(**result)}

    @property
    def metric_type(self) -> str:
        return "audio"

# 4. Register
CollectorRegistry.register("audio", AudioCollector)

@monitor_llm("transcribe", collectors=["audio"])
def transcribe(clip):
    return {"duration_seconds": 2.5, "sample_rate": 16000, "channels": 1}
"""

SEED_000_MONITOR_THE_MONITOR = """
writer = MonitoringWriter.get_instance_sync()
health = await writer.health_check()
"""


def as_import_name(code: str, name: str) -> str:
    """``code`` with its imports under ``name`` (see above)."""
    if name == "llamonitor":
        return re.sub(r"from llmops_monitoring(\.[\w.]+)? import", "from llamonitor import", code)
    return code.replace("from llamonitor import", "from llmops_monitoring import")


def run_seed(name: str, *snippets: str, ns: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run seed snippets in one namespace, as a script would (top-level await allowed)."""
    ns = {"__name__": "__main__"} if ns is None else ns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for snippet in snippets:
            code = compile(
                as_import_name(snippet, name), "<seed>", "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            )  # fmt: skip
            pending = eval(code, ns)
            if pending is not None:
                asyncio.run(pending)
    return ns


def stored(directory: Path) -> list[dict[str, Any]]:
    llamonitor.flush(10)
    sql = f"SELECT * FROM read_parquet('{directory}/**/*.parquet') ORDER BY timestamp"
    cursor = duckdb.sql(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


BOTH = pytest.mark.parametrize("name", ["llamonitor", "llmops_monitoring"])


@BOTH
def test_seed_004_basic_usage(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 004's quick start writes its span with text metrics and the model."""
    monkeypatch.chdir(tmp_path)
    run_seed(name, SEED_004_BASIC_USAGE)
    (row,) = stored(tmp_path / "monitoring_data")
    assert (row["operation_name"], row["model"], row["text_char_count"]) == (
        "generate_text", "gpt-4", len("Generated response..."),
    )  # fmt: skip


@BOTH
def test_seed_004_configuration(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 004's programmatic configuration: the presets and a custom Parquet store."""
    monkeypatch.chdir(tmp_path)
    ns = run_seed(name, PRELUDE, SEED_004_CONFIGURATION)
    monitor_llm("configured")(lambda: None)()
    (row,) = stored(tmp_path / "my_data")
    assert row["operation_name"] == "configured"
    assert ns["config"].storage.batch_size == 500 and ns["config"].max_queue_size == 50000


@BOTH
def test_seed_004_storage_backends(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seed 004's Parquet and PostgreSQL settings; the Parquet one writes
    ``./monitoring_data/YYYY-MM-DD/events_*.parquet``."""
    monkeypatch.chdir(tmp_path)
    ns = run_seed(name, PRELUDE, SEED_004_STORAGE_BACKENDS)
    pg = ns["config"].storage
    assert (pg.backend, pg.table_name, pg.pool_size) == ("postgres", "metric_events", 20)
    llamonitor.initialize_monitoring(ns["parquet"])
    monitor_llm("op")(lambda: None)()
    llamonitor.flush(10)
    (day,) = (tmp_path / "monitoring_data").iterdir()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", day.name)
    assert [f.name.startswith("events_") for f in day.glob("*.parquet")] == [True]


@BOTH
def test_seed_004_hierarchy(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 004's agentic workflow: one trace in session user-123, children linked."""
    monkeypatch.chdir(tmp_path)
    ns = run_seed(name, PRELUDE, SEED_004_HIERARCHY_HELPERS, SEED_004_HIERARCHY)
    assert ns["result"] == "It is sunny"
    by_op = {r["operation_name"]: r for r in stored(tmp_path / "monitoring_data")}
    root = by_op.pop("orchestrator")
    assert (root["session_id"], root["trace_id"], root["parent_span_id"]) == (
        "user-123", "conversation-1", None,
    )  # fmt: skip
    assert sorted(by_op) == ["classify_intent", "generate_response", "search_kb"]
    assert {r["parent_span_id"] for r in by_op.values()} == {root["span_id"]}
    assert {r["trace_id"] for r in by_op.values()} == {"conversation-1"}


@BOTH
def test_seed_004_custom_metrics(name: str, spans: llamonitor.InMemoryBackend) -> None:
    """Seed 004's CostCollector, registered as "cost", adds its attribute."""
    ns = run_seed(name, PRELUDE, SEED_004_CUSTOM_METRICS)
    asyncio.run(ns["my_function"]())
    assert attrs(one(spans)) == {"cost_usd": 0.002}


@BOTH
def test_seed_000_hierarchy(name: str, spans: llamonitor.InMemoryBackend) -> None:
    """Seed 000's SpanContext example: the child inherits ids and links its parent;
    across await, the child span's parent is the parent span."""
    ns = run_seed(name, PRELUDE, SEED_000_HIERARCHY, SEED_000_ASYNC)
    parent, child = ns["parent"], ns["child"]
    assert (child.session_id, child.trace_id) == ("s1", "t1")
    assert child.parent_span_id == parent.span_id is not None
    asyncio.run(ns["parent_op"]())
    by_op = {r["operation_name"]: r for r in rows(spans)}
    assert by_op["child"]["parent_span_id"] == by_op["parent"]["span_id"]


@BOTH
def test_seed_000_collector(
    name: str, spans: llamonitor.InMemoryBackend, internal_errors: list[Any]
) -> None:
    """Seed 000's collector, run as printed (its ``{...}`` placeholder is a set):
    the span is stored, the odd value kept as an attribute and counted, not raised."""
    ns = run_seed(name, PRELUDE, SEED_000_COLLECTOR)
    assert asyncio.run(ns["my_func"]()) is None
    assert attrs(one(spans)) == {"custom_attributes": "{Ellipsis}"}
    assert [kind for kind, _ in internal_errors] == ["collector_value:custom_attributes"]
    internal_errors.clear()


@BOTH
def test_seed_000_backend_and_health(name: str, tmp_path: Path) -> None:
    """Seed 000's MyBackend plugs in as StorageConfig(backend=MyBackend); "monitoring
    the monitor" reports running, queue_size, buffer_size, backend_healthy."""
    ns = run_seed(name, PRELUDE, SEED_000_BACKEND)
    storage = llamonitor.StorageConfig(backend=ns["MyBackend"], output_dir=tmp_path)
    llamonitor.initialize_monitoring(llamonitor.MonitorConfig(storage=storage))
    monitor_llm("op")(lambda: None)()
    assert llamonitor.flush(5)
    health = run_seed(name, PRELUDE, SEED_000_MONITOR_THE_MONITOR, ns=ns)["health"]
    assert health["running"] is True and health["backend_healthy"] is True
    assert (health["queue_size"], health["buffer_size"], health["events_written"]) == (0, 0, 1)


@BOTH
def test_seed_000_schema_evolution(name: str, tmp_path: Path) -> None:
    """Seed 000's "Schema Evolution": an AudioMetrics model on the event and a
    collector for it give audio_* columns in the Parquet store."""
    llamonitor.initialize_monitoring(llamonitor.MonitorConfig.for_local_dev(tmp_path))
    ns = run_seed(name, PRELUDE, SEED_000_SCHEMA_EVOLUTION)
    try:
        ns["transcribe"]("clip.wav")
        (row,) = stored(tmp_path)
    finally:
        llamonitor.CollectorRegistry.unregister("audio")
    assert (row["audio_duration_seconds"], row["audio_sample_rate"], row["audio_channels"]) == (
        2.5, 16000, 1,
    )  # fmt: skip
    event = ns["TextMetrics"](char_count=3)
    assert event.char_count == 3
