#!/usr/bin/env python
"""Where the per-call time of ``@monitor_llm(measure_text=True)`` goes, and
what the worker costs per event.

Usage::

    python benchmarks/profile_hotpath.py [--json out.json] [--cprofile]

Unlike ``bench.py`` this script reaches into llamonitor's internals (the
pieces of the hot path are timed one by one), so it may need touching up when
they change; each measurement is guarded and reports "n/a" if its target has
moved.

Part 1 -- hot path: ns per operation for each step of ``_wrap_async``/
``_wrap_sync`` (timed in isolation: a tight loop over the step, minus the
same loop doing nothing; medians of 5 repetitions), against the measured
added time of a decorated call.

Part 2 -- generators: the fixed and the per-item cost of ``_wrap_gen`` /
``_wrap_async_gen`` (1, 20 and 100 items).

Part 3 -- worker: ``records_to_table`` per batch size (with a cProfile
breakdown), the Parquet write (``write_table_atomic``, fsync included), and
the rate the worker alone converts + writes a prefilled queue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import TEXT_1K, make_text

import llamonitor
from llamonitor import MonitorConfig, StorageConfig, initialize_monitoring, monitor_llm

REPS = 5
clock = time.perf_counter_ns


_between: list[Callable[[], None]] = []


def per_op(
    body: Callable[[int], None], n: int, empty: Callable[[int], None] | None = None
) -> float:
    """ns per iteration of ``body(n)`` minus ``empty(n)``, median of REPS."""
    out = []
    for _ in range(REPS):
        for hook in _between:
            hook()
        gc.collect()
        t = clock()
        body(n)
        a = clock() - t
        b = 0
        if empty is not None:
            t = clock()
            empty(n)
            b = clock() - t
        out.append((a - b) / n)
    return statistics.median(out)


def _loop_empty(n: int) -> None:
    for _ in range(n):
        pass


def parked_config(out: Path, **kw: Any) -> MonitorConfig:
    return MonitorConfig(
        storage=StorageConfig(
            backend="parquet", output_dir=out, batch_size=10_000_000, flush_interval_seconds=3600.0
        ),
        max_queue_size=10_000_000,
        max_queue_bytes=16 * 1024**3,
        shutdown_timeout_seconds=300.0,
        **kw,
    )


# --------------------------------------------------------------------------------------
# Part 1: hot path
# --------------------------------------------------------------------------------------


def hot_path(n: int) -> dict[str, Any]:
    from llamonitor._internal import CURRENT
    from llamonitor.instrument import _context, _decorator
    from llamonitor.transport import writer as _writer

    res: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="llamonitor-prof-"))
    try:
        initialize_monitoring(parked_config(tmp))
        pipe = _writer.ACTIVE
        deco = monitor_llm(
            operation_name="generate", measure_text=True, custom_attributes={"model": "gpt-4"}
        )

        def bare_sync() -> str:
            return TEXT_1K

        async def bare_async() -> str:
            return TEXT_1K

        mon_sync = deco(bare_sync)
        mon_async = deco(bare_async)
        spec = mon_sync.__llamonitor_spec__

        def drain() -> None:
            # profiling only: drop what the steps queued (the parked worker would
            # spend seconds converting it); keeps the queue short between steps
            with pipe._lock:
                pipe._q.clear()
                pipe._bytes = 0

        _between[:] = [drain]

        def step(
            name: str,
            body: Callable[[int], None],
            empty: Callable[[int], None] | None = _loop_empty,
        ) -> None:
            try:
                res[name] = per_op(body, n, empty)
            except Exception as exc:  # the internals moved
                res[name] = f"n/a ({exc!r})"
            drain()

        # -- whole calls
        def b_bare_sync(k: int) -> None:
            for _ in range(k):
                bare_sync()

        def b_mon_sync(k: int) -> None:
            for _ in range(k):
                mon_sync()

        loop = asyncio.new_event_loop()

        async def a_loop(f: Any, k: int) -> None:
            for _ in range(k):
                await f()

        # NB: in these whole-call steps the parked queue grows to n records during the
        # loop, so they include the garbage collector's cost at that depth (see the
        # "queue depth" rows of the replicas part for the same effect in isolation).
        step("sync call, bare", b_bare_sync, _loop_empty)
        step("sync call, monitored", b_mon_sync, _loop_empty)
        step(
            "async call, bare",
            lambda k: loop.run_until_complete(a_loop(bare_async, k)),
            _loop_empty,
        )
        step(
            "async call, monitored",
            lambda k: loop.run_until_complete(a_loop(mon_async, k)),
            _loop_empty,
        )

        # -- the pieces, in the order the wrapper runs them
        get = CURRENT.get
        active = _writer

        def b_reads(k: int) -> None:
            for _ in range(k):
                pipe_ = active.ACTIVE
                parent = get()
                if pipe_ is None or parent is None:
                    pass

        step("read ACTIVE + CURRENT.get()", b_reads)

        SpanContext = _context.SpanContext
        new = SpanContext.__new__
        init = _context._init_span

        def b_span_root(k: int) -> None:
            for _ in range(k):
                s = new(SpanContext)
                init(s, None, None, None)

        step("new SpanContext + _init_span (root: 2 hex ids + sampled + 64-bit id)", b_span_root)

        parent_span = new(SpanContext)
        init(parent_span, None, None, None)

        def b_span_child(k: int) -> None:
            for _ in range(k):
                s = new(SpanContext)
                init(s, parent_span, None, None)

        step("new SpanContext + _init_span (child of a span)", b_span_child)

        new_id = _context.new_id128
        getbits = _context._getrandbits

        def b_id128(k: int) -> None:
            for _ in range(k):
                new_id()

        def b_bits128(k: int) -> None:
            for _ in range(k):
                getbits(128)

        step("  of which new_id128()", b_id128)
        step("  of which getrandbits(128) alone (an int, formatted later)", b_bits128)

        def b_tobytes(k: int) -> None:
            for _ in range(k):
                getbits(128).to_bytes(16, "big").hex()

        step("  alt: getrandbits(128).to_bytes(16).hex()", b_tobytes)
        pool: list[str] = []

        def id_from_pool() -> str:
            # ids formatted 256 at a time from one big random int, then sliced
            if not pool:
                h = f"{getbits(128 * 256):08192x}"
                pool.extend([h[i : i + 32] for i in range(0, 8192, 32)])
            return pool.pop()

        def b_pool(k: int) -> None:
            for _ in range(k):
                id_from_pool()

        step("  alt: 32-hex id from a pool refilled 256 at a time", b_pool)

        cset, creset = CURRENT.set, CURRENT.reset

        def b_ctx(k: int) -> None:
            for _ in range(k):
                tok = cset(parent_span)
                creset(tok)

        step("CURRENT.set + CURRENT.reset", b_ctx)

        def b_clock(k: int) -> None:
            for _ in range(k):
                clock()
                clock()

        step("2 x perf_counter_ns()", b_clock)

        def b_tryexcept(k: int) -> None:
            for _ in range(k):
                try:
                    pass
                except BaseException:
                    raise
                try:
                    pass
                except Exception:
                    pass

        step("2 x try/except (3.11: zero-cost)", b_tryexcept)

        tft = _decorator._text_for_queue

        def b_tfq(k: int) -> None:
            for _ in range(k):
                tft(spec, TEXT_1K)

        step("_text_for_queue(str 1 KB)", b_tfq)
        d = {"text": TEXT_1K}

        def b_tfq_dict(k: int) -> None:
            for _ in range(k):
                tft(spec, d)

        step("_text_for_queue(dict) (extract_text)", b_tfq_dict)

        span = new(SpanContext)
        init(span, None, None, None)
        rec = (spec, span, 1, 2, None, TEXT_1K, None)
        submit = pipe.submit

        def b_submit(k: int) -> None:
            for _ in range(k):
                submit(rec)

        step("Pipeline.submit(record) (whole)", b_submit)

        getpid = os.getpid

        def b_getpid(k: int) -> None:
            for _ in range(k):
                getpid()

        step("  of which os.getpid()", b_getpid)
        lock = threading.Lock()

        def b_lock(k: int) -> None:
            acq, rel = lock.acquire, lock.release
            for _ in range(k):
                acq()
                rel()

        step("  of which lock.acquire()+release()", b_lock)
        dq: deque[Any] = deque()

        def b_append(k: int) -> None:
            app = dq.append
            for _ in range(k):
                app(rec)

        step("  of which deque.append (+ growth)", b_append)
        dq.clear()

        finish = _decorator._finish

        def b_finish(k: int) -> None:
            for _ in range(k):
                finish(pipe, spec, span, 1, 2, TEXT_1K, (), {})

        step("_finish(...) (text_for_queue + tuple + submit)", b_finish)

        def b_tuple(k: int) -> None:
            t0 = 1
            for _ in range(k):
                _rec = (spec, span, t0, t0, None, TEXT_1K, None)

        step("build the 7-tuple record", b_tuple)

        def noop(*a: Any, **kw: Any) -> None:
            return None

        def b_call(k: int) -> None:
            for _ in range(k):
                noop(1, 2, 3, 4, 5, 6, 7, 8)

        step("one Python call with 8 args (each extra call level)", b_call)

        def fwd_inner() -> str:
            return TEXT_1K

        def fwd(*args: Any, **kwargs: Any) -> str:
            return fwd_inner(*args, **kwargs)

        def b_fwd(k: int) -> None:
            for _ in range(k):
                fwd()

        def b_direct(k: int) -> None:
            for _ in range(k):
                fwd_inner()

        step("*args/**kwargs forwarding wrapper layer", b_fwd, b_direct)

        loop.close()
    finally:
        _between.clear()
        with contextlib.suppress(Exception):
            llamonitor.shutdown_monitoring(300.0)
        shutil.rmtree(tmp, ignore_errors=True)
    res["_added sync (monitored - bare)"] = _sub(res, "sync call, monitored", "sync call, bare")
    res["_added async (monitored - bare)"] = _sub(res, "async call, monitored", "async call, bare")
    return res


def _sub(res: dict[str, Any], a: str, b: str) -> Any:
    x, y = res.get(a), res.get(b)
    return x - y if isinstance(x, float) and isinstance(y, float) else "n/a"


# --------------------------------------------------------------------------------------
# Part 1b / 2b: what the suggested changes would save (replicas, interleaved)
# --------------------------------------------------------------------------------------
#
# Each replica is the library's sync wrapper rebuilt from its own primitives with
# one more suggested change than the previous one. They submit into the real
# (parked) pipeline; the queue is cleared directly between runs (the int ids of
# some replicas are not meant for the worker). Variants run interleaved in
# rounds, in a rotating order; the figure is the median of per-round
# (variant - bare) differences.


def _interleaved(
    variants: dict[str, Callable[[int], None]], n: int, rounds: int, between: Callable[[], None]
) -> dict[str, float]:
    names = list(variants)
    per: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            between()
            gc.collect()
            t = clock()
            variants[k](n)
            per[k].append((clock() - t) / n)
    bare = per[names[0]]
    out = {f"{names[0]} (absolute)": statistics.median(bare)}
    for k in names[1:]:
        out[k] = statistics.median([a - b for a, b in zip(per[k], bare, strict=True)])
    return out


def waterfall(n: int, rounds: int) -> dict[str, Any]:
    import itertools

    from llamonitor._internal import CURRENT, SUPPRESSED
    from llamonitor._records import KEEP_TEXT_CHARS, RECORD_BASE_BYTES, measure_text
    from llamonitor.instrument import _context, _decorator
    from llamonitor.transport import writer as _writer

    tmp = Path(tempfile.mkdtemp(prefix="llamonitor-prof-"))
    res: dict[str, Any] = {}
    try:
        initialize_monitoring(parked_config(tmp))
        pipe = _writer.ACTIVE
        deco = monitor_llm(
            operation_name="generate", measure_text=True, custom_attributes={"model": "gpt-4"}
        )

        def bare() -> str:
            return TEXT_1K

        real = deco(bare)
        spec = real.__llamonitor_spec__
        SpanContext = _context.SpanContext
        new = SpanContext.__new__
        init_span = _context._init_span
        getbits = _context._getrandbits
        sampled = _context._sampled
        get, cset, creset = CURRENT.get, CURRENT.set, CURRENT.reset
        finish = _decorator._finish
        text_for_queue = _decorator._text_for_queue
        w = _writer

        def init_int(span: Any, parent: Any) -> None:
            # ids kept as ints (formatted on the worker / in the properties)
            if parent is None or parent is SUPPRESSED:
                span.session_id = getbits(128)
                span.trace_id = getbits(128)
                span._parent = None
                span.sampled = sampled()
            else:
                span.session_id = parent.session_id
                span.trace_id = parent.trace_id
                span._parent = parent._sid
                span.sampled = parent.sampled
            span._sid = getbits(64)
            span._attrs = None

        forked = [False]  # would be flipped by os.register_at_fork(after_in_child=...)

        def submit_nopid(p: Any, record: tuple[Any, ...]) -> bool:
            if forked[0]:
                p._restart_after_fork()
            text = record[5]
            nbytes = RECORD_BASE_BYTES + len(text) if text.__class__ is str else RECORD_BASE_BYTES
            lock = p._lock
            lock.acquire()
            try:
                p.received += 1
                if p._stopping:
                    p.dropped["shutdown"] += 1
                    return False
                q = p._q
                if len(q) >= p._maxsize or p._bytes + nbytes > p._maxbytes:
                    if not p._make_room(nbytes):
                        p.dropped["queue_full"] += 1
                        return False
                    q = p._q
                q.append(record)
                p._bytes += nbytes
                n_ = len(q)
            finally:
                lock.release()
            if n_ == p._batch_size:
                p._wake.set()
            if not p._worker_alive:
                p._restart_worker()
            return True

        def make(level: int) -> Callable[[], Any]:
            fn = bare

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                pipe_ = w.ACTIVE
                parent = get()
                if pipe_ is None or parent is SUPPRESSED:
                    return fn(*args, **kwargs)
                try:
                    span = new(SpanContext)
                    if level >= 1:
                        init_int(span, parent)
                    else:
                        init_span(span, parent, None, None)
                    token = cset(span)
                except Exception:
                    return fn(*args, **kwargs)
                t0 = clock()
                try:
                    result = fn(*args, **kwargs)
                except BaseException:
                    creset(token)
                    raise
                t1 = clock()
                creset(token)
                try:
                    if level <= 1:
                        finish(pipe_, spec, span, t0, t1, result, args, kwargs)
                    elif level == 2:
                        if not span.sampled:
                            pipe_.count_sampled_out()
                        else:
                            submit_nopid(
                                pipe_,
                                (spec, span, t0, t1, None, text_for_queue(spec, result), None),
                            )
                    else:
                        # level 3: _finish/_text_for_queue/submit inlined for the common
                        # case (str result, no extractor/collectors); level 4: no lock
                        if (
                            result.__class__ is str
                            and spec.extractor is None
                            and not spec.collectors
                        ):
                            text: Any = result
                            if len(text) > KEEP_TEXT_CHARS:
                                text = measure_text(text)
                        else:
                            text = text_for_queue(spec, result)
                        rec = (spec, span, t0, t1, None, text, None)
                        nbytes = (
                            RECORD_BASE_BYTES + len(text)
                            if text.__class__ is str
                            else RECORD_BASE_BYTES
                        )
                        if level == 3:
                            lock = pipe_._lock
                            lock.acquire()
                            pipe_.received += 1
                            q = pipe_._q
                            if (
                                len(q) < pipe_._maxsize
                                and pipe_._bytes + nbytes <= pipe_._maxbytes
                                and not pipe_._stopping
                            ):
                                q.append(rec)
                                pipe_._bytes += nbytes
                                k = len(q)
                            else:
                                k = -1  # the slow path (policy) would run here
                            lock.release()
                        else:
                            next(received)  # itertools.count: atomic under the GIL
                            q = pipe_._q
                            if len(q) < pipe_._maxsize:
                                q.append(rec)  # deque.append: atomic under the GIL
                            k = len(q)
                        if k == pipe_._batch_size:
                            pipe_._wake.set()
                except Exception:
                    pass
                return result

            return wrapper

        received = itertools.count()
        variants_fns = {
            "bare sync fn": bare,
            "llamonitor (as is)": real,
            "replica of as-is (sanity check)": make(0),
            "+ ids as ints (no hex formatting on the hot path)": make(1),
            "+ no os.getpid() per submit (at-fork flag)": make(2),
            "+ _finish/_text_for_queue/submit inlined": make(3),
            "+ no lock (deque.append + itertools.count)": make(4),
        }

        def runner(f: Callable[[], Any]) -> Callable[[int], None]:
            def run(k: int) -> None:
                for _ in range(k):
                    f()

            return run

        def drain() -> None:
            with pipe._lock:
                pipe._q.clear()
                pipe._bytes = 0

        out = _interleaved({k: runner(f) for k, f in variants_fns.items()}, n, rounds, drain)
        res.update({f"sync: {k}": v for k, v in out.items()})

        # -- the same at queue depth: 100k calls without draining (the worker lagging,
        # or a large max_queue_size). Every queued record holds GC-tracked objects
        # (the tuple, the SpanContext, the Spec) that each collection walks.
        specs_index = {id(spec): 0}

        def make_flat() -> Callable[[], Any]:
            fn = bare
            app_lock = pipe._lock

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                pipe_ = w.ACTIVE
                parent = get()
                if pipe_ is None or parent is SUPPRESSED:
                    return fn(*args, **kwargs)
                span = new(SpanContext)
                init_int(span, parent)
                token = cset(span)
                t0 = clock()
                try:
                    result = fn(*args, **kwargs)
                finally:
                    t1 = clock()
                    creset(token)
                text = result if result.__class__ is str else text_for_queue(spec, result)
                # a record of atoms only: ints/strs/None, untracked by the GC after
                # its first collection (the spec by index, the span by its ids)
                rec = (
                    0,
                    span.session_id,
                    span.trace_id,
                    span._sid,
                    span._parent,
                    t0,
                    t1,
                    None,
                    text,
                )
                app_lock.acquire()
                pipe_.received += 1
                pipe_._q.append(rec)
                app_lock.release()
                return result

            return wrapper

        del specs_index
        deep = {
            "bare sync fn": bare,
            "llamonitor (as is)": real,
            "replica, all changes above": make(4),
            "replica, + records of atoms only (no Spec/SpanContext refs)": make_flat(),
        }
        out = _interleaved(
            {k: runner(f) for k, f in deep.items()}, 100_000, max(3, rounds // 2), drain
        )
        res.update({f"queue depth 100k: {k}": v for k, v in out.items()})
        gc.disable()
        out = _interleaved(
            {k: runner(f) for k, f in deep.items()}, 100_000, max(3, rounds // 2), drain
        )
        gc.enable()
        res.update({f"queue depth 100k, gc disabled: {k}": v for k, v in out.items()})

        # -- generators, 20 items
        chunks = [TEXT_1K[i * 52 : (i + 1) * 52] for i in range(19)] + [TEXT_1K[19 * 52 :]]

        def gen() -> Any:
            yield from chunks

        real_gen = deco(gen)

        def end_stream(
            pipe_: Any, span: Any, t0: int, first: int, items: int, parts: list[str]
        ) -> None:
            t1 = clock()
            extra: dict[str, Any] = {"stream_item_count": items}
            if items:
                extra["time_to_first_token_ms"] = (first - t0) / 1e6
            text: Any = "".join(parts) if parts else None
            if text is not None and len(text) > KEEP_TEXT_CHARS:
                text = measure_text(text)
            pipe_.submit((spec, span, t0, t1, None, text, extra))

        def make_gen(mode: str) -> Callable[[], Any]:
            import contextvars

            fn = gen

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                pipe_ = w.ACTIVE
                parent = get()
                if pipe_ is None or parent is SUPPRESSED:
                    return (yield from fn(*args, **kwargs))
                span = new(SpanContext)
                init_span(span, parent, None, None)
                t0 = clock()
                first = 0
                items = 0
                parts: list[str] = []
                append = parts.append
                try:
                    if mode == "ctx.run":
                        ctx = contextvars.copy_context()
                        ctx.run(cset, span)
                        g = ctx.run(fn, *args, **kwargs)
                        run = ctx.run
                        send = g.send
                        value = None
                        while True:
                            try:
                                item = run(send, value)
                            except StopIteration as stop:
                                return stop.value
                            if not items:
                                first = clock()
                            items += 1
                            if item.__class__ is str:
                                append(item)
                            value = yield item
                    elif mode == "no per-item context":
                        token = cset(span)
                        try:
                            g = fn(*args, **kwargs)
                        finally:
                            creset(token)
                        for item in g:
                            if not items:
                                first = clock()
                            items += 1
                            if item.__class__ is str:
                                append(item)
                            yield item
                    else:  # "inline": set/reset per item as now, no _Stream.item call
                        token = cset(span)
                        try:
                            g = fn(*args, **kwargs)
                        finally:
                            creset(token)
                        send = g.send
                        value = None
                        while True:
                            token = cset(span)
                            try:
                                item = send(value)
                            except StopIteration as stop:
                                return stop.value
                            finally:
                                creset(token)
                            if not items:
                                first = clock()
                            items += 1
                            if item.__class__ is str:
                                append(item)
                            value = yield item
                finally:
                    end_stream(pipe_, span, t0, first, items, parts)

            return wrapper

        def grunner(f: Callable[[], Any]) -> Callable[[int], None]:
            def run(k: int) -> None:
                for _ in range(k):
                    for _x in f():
                        pass

            return run

        gvariants = {
            "bare sync gen (20 items)": gen,
            "llamonitor (as is)": real_gen,
            "replica: item handling inlined (no _Stream.item call)": make_gen("inline"),
            "replica: inlined + Context.run(send) per item": make_gen("ctx.run"),
            "replica: no per-item context switch (OTel-like; changes semantics)": make_gen(
                "no per-item context"
            ),
        }
        out = _interleaved(
            {k: grunner(f) for k, f in gvariants.items()}, max(500, n // 8), rounds, drain
        )
        res.update({f"gen20: {k}": v for k, v in out.items()})
    finally:
        with contextlib.suppress(Exception):
            llamonitor.shutdown_monitoring(5.0)
        shutil.rmtree(tmp, ignore_errors=True)
    return res


# --------------------------------------------------------------------------------------
# Part 2: generators
# --------------------------------------------------------------------------------------


def generators(n: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="llamonitor-prof-"))
    try:
        initialize_monitoring(parked_config(tmp))
        deco = monitor_llm(
            operation_name="generate", measure_text=True, custom_attributes={"model": "gpt-4"}
        )
        loop = asyncio.new_event_loop()
        for items in (1, 20, 100):
            chunks = [TEXT_1K[: max(1, 1024 // items)]] * items

            def gen(_c: list[str] = chunks) -> Any:
                yield from _c

            async def agen(_c: list[str] = chunks) -> Any:
                for c in _c:
                    yield c

            mgen, magen = deco(gen), deco(agen)
            k = max(200, n // items)

            def run_gen(f: Any, k: int = k) -> float:
                t = clock()
                for _ in range(k):
                    for _x in f():
                        pass
                return (clock() - t) / k

            async def _arun(f: Any, k: int) -> None:
                for _ in range(k):
                    async for _x in f():
                        pass

            def run_agen(f: Any, k: int = k) -> float:
                t = clock()
                loop.run_until_complete(_arun(f, k))
                return (clock() - t) / k

            for label, runner, bare, mon in (
                ("sync gen", run_gen, gen, mgen),
                ("async gen", run_agen, agen, magen),
            ):
                b, m = [], []
                for _ in range(REPS):
                    llamonitor.flush(300.0)
                    gc.collect()
                    b.append(runner(bare))
                    llamonitor.flush(300.0)
                    gc.collect()
                    m.append(runner(mon))
                res[f"{label}, {items} items: added ns/stream"] = statistics.median(
                    [x - y for x, y in zip(m, b, strict=True)]
                )
        for label in ("sync gen", "async gen"):
            a1 = res[f"{label}, 1 items: added ns/stream"]
            a100 = res[f"{label}, 100 items: added ns/stream"]
            per_item = (a100 - a1) / 99
            res[f"{label}: per-item ns (fit 1..100)"] = per_item
            res[f"{label}: fixed ns (fit)"] = a1 - per_item
        loop.close()
    finally:
        with contextlib.suppress(Exception):
            llamonitor.shutdown_monitoring(300.0)
        shutil.rmtree(tmp, ignore_errors=True)
    return res


# --------------------------------------------------------------------------------------
# Part 3: the worker
# --------------------------------------------------------------------------------------


def worker(n_events: int, do_cprofile: bool) -> dict[str, Any]:
    from llamonitor.transport import writer as _writer
    from llamonitor.transport._convert import records_to_table

    res: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="llamonitor-prof-"))
    try:
        initialize_monitoring(parked_config(tmp / "a"))
        pipe = _writer.ACTIVE

        @monitor_llm(
            operation_name="generate", measure_text=True, custom_attributes={"model": "gpt-4"}
        )
        def answer() -> str:
            return TEXT_1K

        for _ in range(n_events):
            answer()
        records = list(pipe._q)  # references only; the worker still owns the queue
        pid = os.getpid()
        llamonitor.flush(300.0)

        # records_to_table per batch size
        for bs in (100, 1_000, 10_000, 100_000):
            if bs > len(records):
                continue
            times = []
            for _ in range(3):
                gc.collect()
                t = clock()
                for i in range(0, len(records) - bs + 1, bs):
                    records_to_table(records[i : i + bs], pid)
                done = (len(records) // bs) * bs
                times.append((clock() - t) / done)
            res[f"records_to_table, batch {bs:,}: ns/event"] = statistics.median(times)

        # stream records (20 chunks): their extra dict (item count, time to first
        # token) sends every row through the merged-attributes + json.dumps path
        @monitor_llm(
            operation_name="generate", measure_text=True, custom_attributes={"model": "gpt-4"}
        )
        def stream() -> Any:
            for i in range(20):
                yield TEXT_1K[i * 52 : (i + 1) * 52] if i < 19 else TEXT_1K[19 * 52 :]

        with pipe._lock:
            pipe._q.clear()
            pipe._bytes = 0
        for _ in range(10_000):
            for _x in stream():
                pass
        srecs = list(pipe._q)
        times = []
        for _ in range(3):
            gc.collect()
            t = clock()
            records_to_table(srecs, pid)
            times.append((clock() - t) / len(srecs))
        res["records_to_table, stream records, batch 10,000: ns/event"] = statistics.median(times)
        if do_cprofile:
            prof = cProfile.Profile()
            prof.enable()
            records_to_table(srecs, pid)
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(8)
            res["_cprofile records_to_table(10k stream records)"] = s.getvalue()
        llamonitor.flush(300.0)

        # measure_text alone (it runs on the worker for short text)
        from llamonitor._records import measure_text

        def b_mt(k: int) -> None:
            for _ in range(k):
                measure_text(TEXT_1K)

        res["  of which measure_text(1 KB): ns/event"] = per_op(b_mt, 100_000, _loop_empty)

        def b_split(k: int) -> None:
            for _ in range(k):
                len(TEXT_1K.split())

        res["    of which len(s.split()) (1 KB, ~140 words)"] = per_op(
            b_split, 100_000, _loop_empty
        )

        # An allocation-free word count for ASCII text (same result as str.split():
        # ASCII whitespace incl. \x1c-\x1f), falling back to split otherwise.
        table = bytearray(b"x" * 256)
        for c in b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f ":
            table[c] = 0x20
        tbl = bytes(table)

        def ascii_words(s: str) -> int:
            if not s.isascii():
                return len(s.split())
            b = s.encode("ascii").translate(tbl)
            return b.count(b" x") + (b[:1] == b"x")

        samples = [TEXT_1K, " a  b ", "a\x1cb", "\n\n", "", "x", " x", "x ", make_text(5000)]
        assert all(ascii_words(t) == len(t.split()) for t in samples)

        def b_ascii(k: int) -> None:
            for _ in range(k):
                ascii_words(TEXT_1K)

        res["    alt: ASCII word count via bytes.translate + count (same result)"] = per_op(
            b_ascii, 100_000, _loop_empty
        )
        for size in (16 * 1024, 256 * 1024, 1024 * 1024):
            big = make_text(size)
            t = clock()
            for _ in range(20):
                measure_text(big)
            res[f"measure_text({size // 1024} KB) on the caller when > KEEP_TEXT_CHARS: us"] = (
                (clock() - t) / 20 / 1000
            )

        if do_cprofile:
            prof = cProfile.Profile()
            batch = records[:10_000]
            prof.enable()
            for _ in range(5):
                records_to_table(batch, pid)
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(14)
            res["_cprofile records_to_table(10k) x5"] = s.getvalue()

        # The Parquet write, fsync included
        table, _ = records_to_table(records[:10_000], pid)
        try:
            from llamonitor.storage.parquet import write_table_atomic
        except ImportError:
            write_table_atomic = None  # type: ignore[assignment]
        import pyarrow.parquet as pq

        wdir = tmp / "w"
        wdir.mkdir()
        for comp in ("snappy", "zstd", "none"):
            ts = []
            for i in range(5):
                t = clock()
                if write_table_atomic is not None:
                    write_table_atomic(table, wdir / f"{comp}{i}.parquet", comp)
                else:
                    pq.write_table(table, wdir / f"{comp}{i}.parquet", compression=comp)
                ts.append((clock() - t) / table.num_rows)
            size = (wdir / f"{comp}0.parquet").stat().st_size
            res[f"parquet write 10k rows ({comp}, atomic+fsync): ns/event"] = statistics.median(ts)
            res[f"parquet file 10k rows ({comp}): bytes/event"] = size / table.num_rows
        for rows in (100, 1_000):
            ts = []
            small = table.slice(0, rows)
            for i in range(10):
                t = clock()
                if write_table_atomic is not None:
                    write_table_atomic(small, wdir / f"s{rows}_{i}.parquet", "snappy")
                else:
                    pq.write_table(small, wdir / f"s{rows}_{i}.parquet")
                ts.append((clock() - t) / rows)
            res[f"parquet write {rows:,} rows (snappy, atomic+fsync): ns/event"] = (
                statistics.median(ts)
            )
        ts = []
        fd_path = wdir / "fsync-probe"
        for _ in range(10):
            with open(fd_path, "wb") as f:
                f.write(b"x" * 100_000)
                f.flush()
                t = clock()
                os.fsync(f.fileno())
                ts.append(clock() - t)
        res["one fsync of 100 KB: us"] = statistics.median(ts) / 1000
        llamonitor.shutdown_monitoring(300.0)

        # The worker alone: a prefilled queue, then flush (convert + write)
        for label, sub, batches in (
            ("worker alone, one batch of N", "b", 1),
            ("worker alone, batches of 1,000", "c", 1000),
        ):
            initialize_monitoring(parked_config(tmp / sub))
            pipe = _writer.ACTIVE
            for _ in range(n_events):
                answer()
            gc.collect()
            if batches == 1:
                t = clock()
                ok = llamonitor.flush(600.0)
                dt = clock() - t
            else:
                # release the queue in slices of 1,000 (what the worker sees when it
                # keeps up with a producer at default settings)
                held = pipe._q
                with pipe._lock:
                    pipe._q = deque()
                    pipe._bytes = 0
                t = clock()
                while held:
                    part = [held.popleft() for _ in range(min(batches, len(held)))]
                    pipe._process(deque(part))
                ok = llamonitor.flush(600.0)
                dt = clock() - t
            h = llamonitor.get_writer().health_check()
            llamonitor.shutdown_monitoring(300.0)
            res[f"{label}: events/s"] = n_events / (dt / 1e9)
            res[f"{label}: written"] = h.get("events_written")
            res[f"{label}: flush ok"] = bool(ok)
    finally:
        with contextlib.suppress(Exception):
            llamonitor.shutdown_monitoring(300.0)
        shutil.rmtree(tmp, ignore_errors=True)
    return res


# --------------------------------------------------------------------------------------
# Part 4: memory held while the worker waits on a full sink
# --------------------------------------------------------------------------------------


def batch_memory() -> dict[str, Any]:
    """Bytes a queued 4 KB record holds (text + span + ids + tuple)."""
    import tracemalloc

    from llamonitor.transport import writer as _writer

    tmp = Path(tempfile.mkdtemp(prefix="llamonitor-prof-"))
    res: dict[str, Any] = {}
    text4k = make_text(4096)
    try:
        initialize_monitoring(parked_config(tmp))

        @monitor_llm(
            operation_name="generate", measure_text=True, custom_attributes={"model": "gpt-4"}
        )
        def answer(i: int) -> str:
            return text4k[:-12] + f"{i:012d}"

        tracemalloc.start()
        a = tracemalloc.get_traced_memory()[0]
        for i in range(10_000):
            answer(i)
        b = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        res["bytes held per queued 4 KB record"] = (b - a) / 10_000
        res["bytes held per queued record, without text"] = (b - a) / 10_000 - (4096 + 49)
        res["queue_size"] = _writer.ACTIVE.stats()["queue_size"] if _writer.ACTIVE else None
    finally:
        with contextlib.suppress(Exception):
            llamonitor.shutdown_monitoring(300.0)
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def show(title: str, res: dict[str, Any]) -> None:
    print(f"\n== {title}")
    for k, v in res.items():
        if k.startswith("_cprofile"):
            continue
        if isinstance(v, float):
            print(f"  {k:<78} {v:>12,.1f}")
        else:
            print(f"  {k:<78} {v!s:>12}")
    for k, v in res.items():
        if k.startswith("_cprofile"):
            print(f"\n-- {k[1:]}\n{v}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--json")
    p.add_argument("--cprofile", action="store_true", help="cProfile breakdown of records_to_table")
    p.add_argument("--n", type=int, default=100_000, help="iterations per hot-path step")
    p.add_argument("--events", type=int, default=100_000, help="events for the worker part")
    args = p.parse_args()
    out: dict[str, Any] = {}
    for name, fn in (
        ("hot path (ns per op)", lambda: hot_path(args.n)),
        (
            "suggested changes, replicas (added ns per call, interleaved)",
            lambda: waterfall(40_000, 7),
        ),
        ("generators (ns)", lambda: generators(40_000)),
        ("worker", lambda: worker(args.events, args.cprofile)),
        ("queued record size", batch_memory),
    ):
        t = time.perf_counter()
        try:
            out[name] = fn()
        except Exception as exc:
            import traceback

            traceback.print_exc()
            out[name] = {"error": repr(exc)}
        show(f"{name}  ({time.perf_counter() - t:.1f} s)", out[name])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
