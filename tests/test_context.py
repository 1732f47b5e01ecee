"""The session → trace → span hierarchy: ids, parent links and their propagation."""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import llamonitor
from llamonitor import (
    ContextThreadPoolExecutor,
    SpanContext,
    current_session_id,
    current_span,
    current_trace_id,
    monitor_llm,
    monitoring_session,
    monitoring_trace,
    propagate_context,
)
from llamonitor.instrument import _record

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def rows(spans: llamonitor.InMemoryBackend) -> list[dict[str, Any]]:
    assert llamonitor.flush(5)
    return spans.rows()


def one_name(spans: llamonitor.InMemoryBackend) -> str:
    (row,) = rows(spans)
    return str(row["operation_name"])


def by_name(spans: llamonitor.InMemoryBackend) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in rows(spans):
        assert row["operation_name"] not in out, f"two spans named {row['operation_name']}"
        out[row["operation_name"]] = row
    return out


@monitor_llm("leaf")
async def leaf_async() -> str:
    return "ok"


@monitor_llm("leaf")
def leaf_sync() -> str:
    return "ok"


# -- SpanContext ----------------------------------------------------------------


def test_seed_example_children_inherit_session_and_trace_and_link_parent() -> None:
    """Seed 000: a nested SpanContext inherits session/trace and links to its parent."""
    with SpanContext(session_id="s1", trace_id="t1") as parent:
        assert parent.parent_span_id is None
        with SpanContext() as child:
            assert child.session_id == "s1"
            assert child.trace_id == "t1"
            assert child.parent_span_id == parent.span_id
            assert child.span_id != parent.span_id


def test_span_started_with_nothing_gets_fresh_ids() -> None:
    """A root SpanContext gets 32-hex session/trace ids, a 16-hex span id, no parent."""
    with SpanContext() as a:
        pass
    with SpanContext() as b:
        pass
    for span in (a, b):
        assert HEX32.match(span.session_id)
        assert HEX32.match(span.trace_id)
        assert span.span_id is not None and HEX16.match(span.span_id)
        assert span.parent_span_id is None
    assert a.session_id != b.session_id
    assert a.trace_id != b.trace_id
    assert a.span_id != b.span_id


def _ms(hex_id: str) -> int:
    return int(hex_id[:12], 16)


def test_ids_begin_with_the_time_so_database_indexes_append(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """Event ids are UUIDv7s; session and trace ids begin with the same 48-bit millisecond
    time (set at each batch), so rows written later sort after earlier ones in the indexes
    on them. The 80 bits after the time stay random: ids made in one millisecond differ."""
    before = time.time_ns() // 1_000_000

    @monitor_llm("timed")
    def call() -> str:
        return "ok"

    with monitoring_session():
        call()
    for _ in range(200):
        call()
    first = rows(spans)
    time.sleep(0.01)
    call()
    rows(spans)  # a batch after the sleep: the prefix moves on

    @monitor_llm("late")
    def late_call() -> str:
        return "ok"

    late_call()
    (late,) = [r for r in rows(spans) if r["operation_name"] == "late"]
    after = time.time_ns() // 1_000_000

    for row in [*first, late]:
        assert uuid.UUID(row["event_id"]).version == 7
        for key in ("event_id", "session_id", "trace_id"):
            assert HEX32.match(row[key])
            assert before - 1000 <= _ms(row[key]) <= after, key
    for key in ("event_id", "session_id", "trace_id"):
        assert len({r[key] for r in first}) == len(first), f"{key} not unique"
        assert late[key] > max(r[key] for r in first), f"a later {key} sorts first"
    randoms = {int(r["trace_id"][12:], 16) for r in first}
    assert len(randoms) == len(first) and max(randoms) > 2**70  # 80 random bits, not a counter


def test_span_context_restores_the_previous_span_on_exit_even_after_an_error() -> None:
    """Leaving a SpanContext (normally or by an exception) restores the outer span."""
    assert current_span() is None
    with SpanContext() as outer:
        try:
            with SpanContext() as inner:
                assert current_span() is inner
                raise KeyError("x")
        except KeyError:
            pass
        assert current_span() is outer
    assert current_span() is None


def test_span_context_with_operation_name_is_recorded(spans: llamonitor.InMemoryBackend) -> None:
    """SpanContext(operation_name=...) records one span with its ids, attributes and error."""
    with SpanContext(session_id="s1", trace_id="t1", operation_name="block") as block:
        block.set_attribute("step", 3)
        with SpanContext(operation_name="inner") as inner:
            leaf_sync()
    try:
        with SpanContext(operation_name="failing"):
            raise ValueError("boom")
    except ValueError:
        pass
    got = by_name(spans)
    assert got["block"]["span_id"] == block.span_id
    assert got["block"]["session_id"] == "s1"
    assert got["block"]["trace_id"] == "t1"
    assert got["block"]["parent_span_id"] is None
    assert json.loads(got["block"]["custom_attributes"]) == {"step": 3}
    assert got["inner"]["parent_span_id"] == block.span_id
    assert got["leaf"]["parent_span_id"] == inner.span_id
    assert got["leaf"]["trace_id"] == "t1"
    assert got["failing"]["error"] is True
    assert got["failing"]["error_type"] == "ValueError"
    assert got["failing"]["error_message"] == "boom"


def test_many_distinct_block_names_do_not_grow_memory_without_bound(
    spans: llamonitor.InMemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks named per request are all recorded while the per-name cache stays bounded."""
    monkeypatch.setattr(_record, "MAX_BLOCK_SPECS", 5)
    for i in range(20):
        with SpanContext(operation_name=f"request-{i}"):
            pass
    assert len(_record._specs) <= 5
    assert sorted(r["operation_name"] for r in rows(spans)) == sorted(
        f"request-{i}" for i in range(20)
    )


def test_span_context_without_operation_name_is_not_recorded(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """A plain SpanContext only scopes ids: the decorated call under it is the only row."""
    with SpanContext(session_id="s1", trace_id="t1") as parent:
        leaf_sync()
    (row,) = rows(spans)
    assert row["parent_span_id"] == parent.span_id
    assert (row["session_id"], row["trace_id"]) == ("s1", "t1")


def test_blocks_ended_in_another_context_do_not_raise(spans: llamonitor.InMemoryBackend) -> None:
    """Blocks entered in one context and exited in another (async fixtures) do not raise."""
    span = SpanContext(operation_name="moved")
    other = contextvars.copy_context()
    other.run(span.__enter__)
    span.__exit__(None, None, None)
    assert current_span() is None
    scope = monitoring_session("moved-session")
    other.run(scope.__enter__)
    scope.__exit__(None, None, None)
    assert current_session_id() is None
    assert one_name(spans) == "moved"


# -- decorated calls: propagation ---------------------------------------------------


def test_child_links_to_parent_across_await(spans: llamonitor.InMemoryBackend) -> None:
    """Seed 000: an awaited decorated call is a child of the awaiting decorated call."""

    @monitor_llm("parent", operation_type="agent_workflow")
    async def parent() -> str:
        await asyncio.sleep(0)
        return await leaf_async()

    asyncio.run(parent())
    got = by_name(spans)
    p, c = got["parent"], got["leaf"]
    assert p["parent_span_id"] is None
    assert c["parent_span_id"] == p["span_id"]
    assert (c["session_id"], c["trace_id"]) == (p["session_id"], p["trace_id"])
    assert HEX32.match(p["session_id"]) and HEX32.match(p["trace_id"])


def test_three_levels_link_each_to_its_direct_parent(spans: llamonitor.InMemoryBackend) -> None:
    """A grandchild links to the child, not to the root."""

    @monitor_llm("middle")
    async def middle() -> str:
        return await leaf_async()

    @monitor_llm("root")
    async def root() -> str:
        return await middle()

    asyncio.run(root())
    got = by_name(spans)
    assert got["middle"]["parent_span_id"] == got["root"]["span_id"]
    assert got["leaf"]["parent_span_id"] == got["middle"]["span_id"]
    assert len({r["trace_id"] for r in got.values()}) == 1


def test_recursive_calls_form_a_chain(spans: llamonitor.InMemoryBackend) -> None:
    """A decorated function calling itself records one span per level, each under the last."""

    @monitor_llm("fact")
    def fact(n: int) -> int:
        return 1 if n <= 1 else n * fact(n - 1)

    assert fact(4) == 24
    got = rows(spans)
    by_id = {r["span_id"]: r for r in got}
    (root,) = [r for r in got if r["parent_span_id"] is None]
    depth, node = 1, root
    children = {r["parent_span_id"]: r for r in got if r["parent_span_id"]}
    while node["span_id"] in children:
        node = children[node["span_id"]]
        depth += 1
    assert depth == 4 == len(by_id)


def test_gather_children_are_siblings_of_one_parent(spans: llamonitor.InMemoryBackend) -> None:
    """Calls run with asyncio.gather are distinct spans, all children of the gathering span."""

    @monitor_llm("child")
    async def child(i: int) -> int:
        await asyncio.sleep(0.001 * (3 - i))
        return i

    @monitor_llm("parent")
    async def parent() -> list[int]:
        return list(await asyncio.gather(child(0), child(1), child(2)))

    assert asyncio.run(parent()) == [0, 1, 2]
    all_rows = rows(spans)
    (p,) = [r for r in all_rows if r["operation_name"] == "parent"]
    children = [r for r in all_rows if r["operation_name"] == "child"]
    assert len(children) == 3
    assert {r["parent_span_id"] for r in children} == {p["span_id"]}
    assert len({r["span_id"] for r in children}) == 3
    assert {r["trace_id"] for r in children} == {p["trace_id"]}


def test_create_task_child_links_to_the_creating_span(spans: llamonitor.InMemoryBackend) -> None:
    """A task created inside a span runs its decorated calls as that span's children."""

    @monitor_llm("parent")
    async def parent() -> str:
        task = asyncio.create_task(leaf_async())
        return await task

    asyncio.run(parent())
    got = by_name(spans)
    assert got["leaf"]["parent_span_id"] == got["parent"]["span_id"]
    assert got["leaf"]["trace_id"] == got["parent"]["trace_id"]


def test_to_thread_child_links_to_the_calling_span(spans: llamonitor.InMemoryBackend) -> None:
    """asyncio.to_thread carries the context: the sync call in the thread is a child."""
    threads: list[str] = []

    @monitor_llm("in_thread")
    def in_thread() -> str:
        threads.append(threading.current_thread().name)
        return "ok"

    @monitor_llm("parent")
    async def parent() -> str:
        return await asyncio.to_thread(in_thread)

    asyncio.run(parent())
    got = by_name(spans)
    assert threads and threads[0] != threading.main_thread().name
    assert got["in_thread"]["parent_span_id"] == got["parent"]["span_id"]
    assert got["in_thread"]["trace_id"] == got["parent"]["trace_id"]


def test_context_thread_pool_executor_links_children(spans: llamonitor.InMemoryBackend) -> None:
    """Tasks submitted (or mapped) to ContextThreadPoolExecutor are children of the submitter."""

    @monitor_llm("parent")
    def parent() -> list[str]:
        with ContextThreadPoolExecutor(max_workers=3) as pool:
            first = pool.submit(leaf_sync).result()
            rest = list(pool.map(lambda _: leaf_sync(), range(4)))
        return [first, *rest]

    assert parent() == ["ok"] * 5
    all_rows = rows(spans)
    (p,) = [r for r in all_rows if r["operation_name"] == "parent"]
    leaves = [r for r in all_rows if r["operation_name"] == "leaf"]
    assert len(leaves) == 5
    assert {r["parent_span_id"] for r in leaves} == {p["span_id"]}
    assert {r["trace_id"] for r in leaves} == {p["trace_id"]}


def test_run_in_executor_with_the_context_pool_links_children(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """loop.run_in_executor(ContextThreadPoolExecutor(), fn) runs fn as a child span."""

    @monitor_llm("parent")
    async def parent() -> str:
        loop = asyncio.get_running_loop()
        with ContextThreadPoolExecutor(max_workers=1) as pool:
            return await loop.run_in_executor(pool, leaf_sync)

    assert asyncio.run(parent()) == "ok"
    got = by_name(spans)
    assert got["leaf"]["parent_span_id"] == got["parent"]["span_id"]


def test_many_threads_recording_at_once_get_distinct_spans(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """Calls from many threads at once are all recorded, each its own root span and trace."""

    def work() -> None:
        for _ in range(200):
            leaf_sync()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = rows(spans)
    assert len(got) == 1600
    assert len({r["span_id"] for r in got}) == 1600
    assert len({r["trace_id"] for r in got}) == 1600
    assert all(r["parent_span_id"] is None for r in got)


def test_plain_thread_pool_does_not_link_which_is_why_the_helper_exists(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """A plain ThreadPoolExecutor loses the context: its spans are roots of new traces."""

    @monitor_llm("parent")
    def parent() -> str:
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(leaf_sync).result()

    parent()
    got = by_name(spans)
    assert got["leaf"]["parent_span_id"] is None
    assert got["leaf"]["trace_id"] != got["parent"]["trace_id"]


def test_propagate_context_links_a_thread_target(spans: llamonitor.InMemoryBackend) -> None:
    """threading.Thread(target=propagate_context(fn)) makes fn's spans children; wraps is kept."""

    @monitor_llm("parent")
    def parent() -> None:
        target = propagate_context(leaf_sync)
        assert target.__name__ == "leaf_sync"
        t = threading.Thread(target=target)
        t.start()
        t.join()

    parent()
    got = by_name(spans)
    assert got["leaf"]["parent_span_id"] == got["parent"]["span_id"]


def test_one_propagated_function_runs_in_several_threads_at_once(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """The same propagate_context() callable can run concurrently in many threads."""
    barrier = threading.Barrier(4, timeout=5)
    failures: list[BaseException] = []

    @monitor_llm("worker")
    def work() -> None:
        barrier.wait()

    def guarded(fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # pragma: no cover - the failure being tested
                failures.append(exc)

        return run

    @monitor_llm("parent")
    def parent() -> None:
        target = guarded(propagate_context(work))
        threads = [threading.Thread(target=target) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    parent()
    assert failures == []
    all_rows = rows(spans)
    (p,) = [r for r in all_rows if r["operation_name"] == "parent"]
    workers = [r for r in all_rows if r["operation_name"] == "worker"]
    assert len(workers) == 4
    assert {r["parent_span_id"] for r in workers} == {p["span_id"]}


def test_concurrent_tasks_keep_their_own_parents(spans: llamonitor.InMemoryBackend) -> None:
    """Interleaved tasks never mix their hierarchies: each child links to its own parent."""

    @monitor_llm("child")
    async def child(tag: str) -> str:
        await asyncio.sleep(0.001)
        return tag

    @monitor_llm("parent")
    async def parent(tag: str) -> list[str]:
        out = []
        for _ in range(3):
            out.append(await child(tag))
            await asyncio.sleep(0)
        return out

    async def main() -> None:
        await asyncio.gather(*(parent(str(i)) for i in range(5)))

    asyncio.run(main())
    all_rows = rows(spans)
    parents = {r["span_id"]: r for r in all_rows if r["operation_name"] == "parent"}
    children = [r for r in all_rows if r["operation_name"] == "child"]
    assert len(parents) == 5 and len(children) == 15
    for c in children:
        p = parents[c["parent_span_id"]]
        assert c["trace_id"] == p["trace_id"]
    assert len({p["trace_id"] for p in parents.values()}) == 5


# -- sessions and traces ---------------------------------------------------------------


def test_seed_session_and_trace_scopes(spans: llamonitor.InMemoryBackend) -> None:
    """Seed 004: spans under monitoring_session/monitoring_trace carry those ids, linked."""

    @monitor_llm("orchestrator", operation_type="agent_workflow")
    async def run_workflow(query: str) -> str:
        return await leaf_async()

    async def main() -> None:
        with monitoring_session("user-123"), monitoring_trace("conversation-1"):
            await run_workflow("What is the weather?")

    asyncio.run(main())
    got = by_name(spans)
    root, child = got["orchestrator"], got["leaf"]
    assert root["operation_type"] == "agent_workflow"
    for row in (root, child):
        assert row["session_id"] == "user-123"
        assert row["trace_id"] == "conversation-1"
    assert root["parent_span_id"] is None
    assert child["parent_span_id"] == root["span_id"]


def test_session_scope_gives_each_root_call_its_own_trace(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """Under monitoring_session only, each root span starts a new trace in that session."""
    with monitoring_session("sess") as scope:
        assert current_span() is None
        assert current_session_id() == "sess"
        assert current_trace_id() is None
        assert scope.session_id == "sess"
        leaf_sync()
        leaf_sync()
    a, b = rows(spans)
    assert a["session_id"] == b["session_id"] == "sess"
    assert a["trace_id"] != b["trace_id"]
    assert a["parent_span_id"] is None and b["parent_span_id"] is None


def test_session_scope_without_id_makes_a_fresh_one_shared_inside(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """monitoring_session() with no id makes one fresh session id for everything inside."""
    with monitoring_session() as scope:
        leaf_sync()
        leaf_sync()
    assert HEX32.match(scope.session_id)
    assert {r["session_id"] for r in rows(spans)} == {scope.session_id}


def test_trace_scope_alone_gets_a_fresh_session(spans: llamonitor.InMemoryBackend) -> None:
    """monitoring_trace(id) outside any session gives its spans a fresh session, that trace."""
    with monitoring_trace("t-9"):
        assert current_trace_id() == "t-9"
        leaf_sync()
        leaf_sync()
    a, b = rows(spans)
    assert a["trace_id"] == b["trace_id"] == "t-9"
    assert a["session_id"] == b["session_id"]
    assert HEX32.match(a["session_id"])
    assert a["parent_span_id"] is None and b["parent_span_id"] is None


def test_repeating_the_current_session_or_trace_keeps_the_parent_link(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """monitoring_session/monitoring_trace naming the ids already current change nothing."""

    @monitor_llm("handler", session_id_from="user", trace_id_from="request")
    def handler(user: str, request: str) -> None:
        with monitoring_session(user), monitoring_trace(request):
            leaf_sync()

    handler("u1", "r1")
    got = by_name(spans)
    assert got["leaf"]["parent_span_id"] == got["handler"]["span_id"]
    assert (got["leaf"]["session_id"], got["leaf"]["trace_id"]) == ("u1", "r1")


def test_a_new_trace_inside_a_span_starts_a_root(spans: llamonitor.InMemoryBackend) -> None:
    """monitoring_trace with another id inside a span starts a new trace in the same session."""

    @monitor_llm("outer")
    def outer() -> None:
        with monitoring_trace("background-job"):
            leaf_sync()

    outer()
    got = by_name(spans)
    assert got["leaf"]["trace_id"] == "background-job"
    assert got["leaf"]["parent_span_id"] is None
    assert got["leaf"]["session_id"] == got["outer"]["session_id"]


def test_scopes_are_restored_on_exit() -> None:
    """After the with blocks the ids of the enclosing scope are current again."""
    with monitoring_session("outer"):
        with monitoring_session("inner"), monitoring_trace("t"):
            assert (current_session_id(), current_trace_id()) == ("inner", "t")
        assert (current_session_id(), current_trace_id()) == ("outer", None)
    assert (current_session_id(), current_trace_id()) == (None, None)


# -- current_span ------------------------------------------------------------------


def test_current_span_is_the_decorated_call_and_takes_attributes(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """current_span() inside a call is its span; attributes set on it join custom_attributes."""
    seen: list[Any] = []

    @monitor_llm("answer", custom_attributes={"model": "gpt-4"})
    def answer() -> str:
        span = current_span()
        seen.append(span)
        assert span is not None
        span.set_attribute("cache_hit", True)
        span.set_attributes({"retries": 2, "model": "gpt-4o"})
        return "ok"

    assert current_span() is None
    answer()
    assert current_span() is None
    (row,) = rows(spans)
    assert seen[0].span_id == row["span_id"]
    assert json.loads(row["custom_attributes"]) == {
        "model": "gpt-4o",
        "cache_hit": True,
        "retries": 2,
    }


def test_current_span_is_restored_after_a_call_that_raises(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """A decorated call that raises leaves the caller's span current."""

    @monitor_llm("bad")
    def bad() -> None:
        raise RuntimeError("x")

    with SpanContext() as outer:
        try:
            bad()
        except RuntimeError:
            pass
        assert current_span() is outer
    (row,) = rows(spans)
    assert row["parent_span_id"] == outer.span_id
