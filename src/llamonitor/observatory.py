"""The seed-002 style of monitoring, for code that is not decorated.

::

    obs = Observatory(project_name="my-project")
    session = obs.start_session("answer-question")
    obs.record_call(provider="openai", model_name="gpt-4o", prompt_tokens=500,
                    completion_tokens=200, latency_ms=1500, agent_name="planner")
    obs.end_session(session)

    with obs.track("research", agent_name="researcher"):
        ...  # decorated calls and instrumented clients inside are its children
        obs.record_call(...)

Everything goes through the same transport and store as ``@monitor_llm``:
a session is a span (``operation_type="session"``) whose children are the
calls made while it is open; ``record_call`` is an ``llm_call`` span that
ended now and lasted ``latency_ms``; its cost is priced like any other.
"""

from __future__ import annotations

import contextvars
import enum
import time
from types import TracebackType
from typing import Any

from llamonitor import _handoff
from llamonitor._internal import CURRENT, SUPPRESSED, report_internal_error
from llamonitor._records import error_facts
from llamonitor.instrument._context import SpanContext, _restore, start_span
from llamonitor.instrument._record import spec_for
from llamonitor.llm import AGENT
from llamonitor.llm.content import capture, prompt_hash
from llamonitor.schema.config import MonitorConfig
from llamonitor.transport import writer as _writer


class ModelProvider(str, enum.Enum):
    """Providers named in seed 002 (any string is accepted as well)."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GOOGLE = "google"
    MISTRAL = "mistral"
    COHERE = "cohere"
    AZURE = "azure"
    BEDROCK = "aws-bedrock"
    GROQ = "groq"
    OTHER = "other"


def _writer_store() -> Any:
    """The query side of the primary store monitoring writes to."""
    import importlib

    from llamonitor.storage import parquet
    from llamonitor.storage.jsonl import DEFAULT_FILE_NAME

    writer = _writer.MonitoringWriter.get_instance_sync()
    storage = None if writer is None else writer.config.storage
    backend = None if storage is None else storage.backend
    if backend == "parquet":
        return parquet.query(storage.output_dir)  # type: ignore[union-attr]
    if backend == "jsonl":
        from llamonitor.storage._duckdb import DuckDBQuery, jsonl_relation

        path = storage.output_dir / DEFAULT_FILE_NAME  # type: ignore[union-attr]
        return DuckDBQuery(lambda _filters: jsonl_relation(path))
    if backend in ("postgres", "postgresql", "mysql", "mariadb", "sqlite", "clickhouse"):
        name = {"postgresql": "postgres", "mariadb": "mysql"}.get(backend, backend)
        return importlib.import_module(f"llamonitor.storage.{name}").query(storage)
    raise ValueError(
        f"get_report: the {backend!r} backend cannot be read back; pass store= "
        "(a Parquet directory or a query object)"
    )


def _submit(record: tuple[Any, ...]) -> None:
    pipe = _handoff.ACTIVE
    if pipe is None:
        return
    if record[1].sampled:
        pipe.submit(record)
    else:
        pipe.count_sampled_out()


class Session:
    """An open session (or tracked block) of an :class:`Observatory`.

    Attributes:
        session_id, trace_id, span_id: its ids.
        name: the name given at start.
    """

    def __init__(
        self,
        obs: Observatory,
        name: str,
        operation_type: str,
        agent_name: str | None,
        session_id: str | None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self._obs = obs
        self.name = name
        self._type = operation_type
        self._agent = agent_name
        self._ended = False
        parent = CURRENT.get()
        self._off = parent is SUPPRESSED
        self._span: SpanContext = start_span(None if self._off else parent, session_id, None)
        if attributes:
            self._span.set_attributes(attributes)
        self._token: contextvars.Token[Any] | None = None
        self._agent_token: contextvars.Token[str | None] | None = None
        self._t0 = 0

    @property
    def session_id(self) -> str:
        return self._span.session_id

    @property
    def trace_id(self) -> str:
        return self._span.trace_id

    @property
    def span_id(self) -> str | None:
        return self._span.span_id

    def set_attribute(self, key: str, value: Any) -> None:
        self._span.set_attribute(key, value)

    def _begin(self) -> Session:
        if not self._off:
            self._token = CURRENT.set(self._span)
        if self._agent is not None:
            self._agent_token = AGENT.set(self._agent)
        self._t0 = time.perf_counter_ns()
        return self

    def _end(self, exc: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        t1 = time.perf_counter_ns()
        if self._agent_token is not None:
            try:
                AGENT.reset(self._agent_token)
            except (ValueError, RuntimeError):
                pass  # ended in another context than it began in
        if self._token is not None:
            _restore(self._token, self._span)
        if self._off:
            return
        try:
            extra: dict[str, Any] = {}
            if self._obs.project_name is not None:
                extra["project_name"] = self._obs.project_name
            if self._agent is not None:
                extra["agent_name"] = self._agent
            error = None if exc is None else error_facts(exc)
            spec = spec_for(self.name, self._type)
            _submit((spec, self._span, self._t0, t1, error, None, extra or None))
        except Exception as internal:
            report_internal_error("observatory", internal)

    # A tracked block works as ``with`` and ``async with``.
    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end(exc)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end(exc)

    def __repr__(self) -> str:
        return f"Session(name={self.name!r}, session_id={self.session_id!r})"


class Observatory:
    """Sessions, tracked blocks and manually recorded LLM calls of one project.

    Args:
        project_name: stored in the ``project_name`` column of its spans.
        config: used to start monitoring if none is running yet (default:
            ``MonitorConfig.from_env()``, i.e. Parquet under
            ``./monitoring_data`` unless ``LLMOPS_*`` variables say otherwise).
            Monitoring already running is used as it is.
    """

    def __init__(self, project_name: str | None = None, config: MonitorConfig | None = None):
        self.project_name = project_name
        if _handoff.ACTIVE is None:
            if config is None:
                config = MonitorConfig.from_env()
            if project_name is not None and config.project_name is None:
                config = config.model_copy(update={"project_name": project_name})
            _writer.initialize_monitoring(config)

    def start_session(
        self,
        name: str = "session",
        *,
        session_id: str | None = None,
        agent_name: str | None = None,
        **attributes: Any,
    ) -> Session:
        """Open a session: calls made until :meth:`end_session` (in this
        thread or task, and those it starts) are its children."""
        return Session(self, name, "session", agent_name, session_id, attributes)._begin()

    def end_session(self, session: Session, error: BaseException | None = None) -> None:
        """Close ``session`` and record it (``error``: it failed with this exception)."""
        session._end(error)

    def track(
        self,
        name: str,
        *,
        agent_name: str | None = None,
        session_id: str | None = None,
        **attributes: Any,
    ) -> Session:
        """``with obs.track(name):`` -- a session when none is open, else a step
        of the open one (``operation_type`` ``agent`` with an ``agent_name``,
        else ``step``). An exception in the block marks it failed and passes on."""
        parent = CURRENT.get()
        outer = parent is None or parent is SUPPRESSED or parent.trace_id is None
        kind = "session" if outer else ("agent" if agent_name else "step")
        return Session(self, name, kind, agent_name, session_id, attributes)._begin()

    def get_report(self, session: Session | str, store: Any = None) -> Any:
        """The :class:`~llamonitor.analysis.SessionReport` of ``session`` (seed
        002's ``get_report``): what is queued is flushed first, then the session
        is read back from ``store`` -- by default the store monitoring writes to
        (Parquet, JSONL, PostgreSQL, MySQL or SQLite).

        Raises:
            ValueError: no store given and the primary backend cannot be read
                back (an in-memory or custom backend).
        """
        from llamonitor.analysis import session_report

        _writer.flush(10.0)
        session_id = session.session_id if isinstance(session, Session) else str(session)
        return session_report(_writer_store() if store is None else store, session_id)

    def record_call(
        self,
        provider: str | ModelProvider | None = None,
        model_name: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        latency_ms: float | None = None,
        agent_name: str | None = None,
        operation: str = "llm_call",
        success: bool = True,
        error: str | BaseException | None = None,
        *,
        cost_usd: float | None = None,
        cached_tokens: int | None = None,
        finish_reason: str | None = None,
        prompt: Any = None,
        completion: str | None = None,
        **attributes: Any,
    ) -> None:
        """Record one LLM call that already happened (ended now, lasted ``latency_ms``).

        Its cost is priced from the model and tokens unless ``cost_usd`` is
        given. ``prompt`` and ``completion`` are stored only when content
        capture is on (redacted); the prompt's hash always is. Never raises.
        """
        try:
            self._record_call(
                provider, model_name, prompt_tokens, completion_tokens, latency_ms,
                agent_name, operation, success, error, cost_usd, cached_tokens,
                finish_reason, prompt, completion, attributes,
            )  # fmt: skip
        except Exception as internal:
            report_internal_error("record_call", internal)

    def _record_call(
        self,
        provider: str | ModelProvider | None,
        model_name: str | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        latency_ms: float | None,
        agent_name: str | None,
        operation: str,
        success: bool,
        error: str | BaseException | None,
        cost_usd: float | None,
        cached_tokens: int | None,
        finish_reason: str | None,
        prompt: Any,
        completion: str | None,
        attributes: dict[str, Any],
    ) -> None:
        parent = CURRENT.get()
        if parent is SUPPRESSED or _handoff.ACTIVE is None:
            return
        t1 = time.perf_counter_ns()
        t0 = t1 - int(max(0.0, float(latency_ms or 0.0)) * 1e6)
        span = start_span(parent)
        if attributes:
            span.set_attributes(attributes)
        if isinstance(provider, ModelProvider):
            provider = provider.value
        extra: dict[str, Any] = {
            "provider": provider,
            "model": model_name,
            "input_tokens": prompt_tokens,
            "output_tokens": completion_tokens,
            "cache_read_tokens": cached_tokens,
            "finish_reason": finish_reason,
            "agent_name": agent_name or AGENT.get(),
            "project_name": self.project_name,
        }
        if prompt_tokens is not None or completion_tokens is not None:
            extra["token_source"] = "user"
        if cost_usd is not None:
            extra["cost_usd"] = float(cost_usd)
            extra["cost_source"] = "user"
        if prompt is not None:
            extra["prompt_hash"] = prompt_hash(prompt)
        content = capture(prompt, completion)
        if content:
            extra.update(content)
        failure = None
        if isinstance(error, BaseException):
            failure = error_facts(error)
        elif error is not None or not success:
            failure = ("LLMCallError", str(error) if error is not None else "call failed")
        spec = spec_for(operation, "llm_call")
        _submit((spec, span, t0, t1, failure, completion, extra))
