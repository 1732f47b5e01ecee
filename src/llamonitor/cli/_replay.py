"""``llamonitor spool replay``'s work: write a spool's records to the store, in
two passes, marking each done (imported when the command runs)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import click

from llamonitor.cli import _render as render
from llamonitor.cli._spool import _who, render_json
from llamonitor.schema.config import ConfigurationError
from llamonitor.storage.base import RowsRejected, create_backend
from llamonitor.transport import spool as _spool
from llamonitor.transport.spool import is_transient


def _storage(directory: Path, backend: str | None, dsn: str | None, table: str | None) -> Any:
    """The store to replay into: options first, then ``LLMOPS_*`` variables."""
    from llamonitor.schema.config import MonitorConfig, StorageConfig

    settings: dict[str, Any] = {"output_dir": directory}
    if dsn is not None:
        settings["connection_string"] = dsn
        if backend is None:
            backend = MonitorConfig.for_production(dsn).storage.backend
    if backend is not None:
        settings["backend"] = backend
    if table is not None:
        settings["table_name"] = table
    return StorageConfig(**settings)


def _call(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> Any:

    result = fn(*args)
    return loop.run_until_complete(result) if inspect.isawaitable(result) else result


def replay_spool(
    root: Path,
    directory: Path,
    backend: str | None,
    dsn: str | None,
    table: str | None,
    sink: str | None,
    rejected: bool,
    as_json: bool,
) -> None:
    """Replay the spool under ``root`` (see ``llamonitor spool replay --help``)."""
    err = render.console(stderr=True)
    try:
        storage = _storage(directory, backend, dsn, table)
        store = create_backend(storage)
    except (ConfigurationError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    target = root / (sink or _spool.sink_dir_name(storage))
    if not target.is_dir():
        others = ", ".join(p.name for p in _spool.sink_dirs(root))
        msg = f"Nothing spooled for {_who(_spool.sink_identity(storage))} in {target}."
        if others:
            msg += f" Other spools there: {others} (pick one with --sink)."
        if as_json:
            render_json({"sink_dir": str(target), "records": 0, "events_written": 0})
        else:
            click.echo(msg)
        return
    before = _spool.inspect(target)
    total = before.events + (len(before.rejected_rows) if rejected else 0)
    loop = asyncio.new_event_loop()
    result: dict[str, Any] = {
        "sink_dir": str(target),
        "store": _who(_spool.sink_identity(storage)),
        "records": 0,
        "events_written": 0,
        "rejected": 0,
        "set_aside": 0,
        "corrupt_records": 0,
        "segments_in_use": 0,
    }
    try:
        try:
            _call(loop, store.initialize)
        except Exception as exc:
            kind = "unreachable" if is_transient(exc) else "not usable"
            raise click.ClickException(
                f"the store is {kind}: {type(exc).__name__}: {exc}; the spool is left as it is "
                f"({before.events:,} events in {target})"
            ) from exc
        try:
            with render.progress("replaying", "events", err, as_json) as bar:
                task = bar.add_task("replay", total=total)
                _Replay(loop, store, target, rejected, result, partial(bar.advance, task)).run()
        except OSError as exc:
            raise click.ClickException(
                f"cannot update the spool {target}: {exc}; what was not marked done there "
                "is left to replay again"
            ) from exc
        finally:
            try:
                _call(loop, store.close)
            except Exception:
                pass
    finally:
        loop.close()
    after = _spool.inspect(target)
    result["events_left"] = after.events
    result["rejected_rows_left"] = len(after.rejected_rows)
    if as_json:
        render_json(result)
        return
    line = (
        f"wrote {result['events_written']:,} events ({result['records']:,} records) "
        f"from {target} to {result['store']}"
    )
    if result["rejected"]:
        line += f"; {result['rejected']:,} rows rejected by the store (see `spool status`)"
    if result["set_aside"]:
        line += (
            f"; {result['set_aside']:,} events the store keeps refusing were set aside with "
            "the rejected rows (see `spool status`)"
        )
    if result["corrupt_records"]:
        line += f"; skipped {result['corrupt_records']} corrupt record(s)"
    if result["segments_in_use"]:
        line += f"; {result['segments_in_use']} segment(s) in use by a running process left to it"
    click.echo(line)



class _Replay:
    """One ``spool replay`` run over a sink directory: two passes, the second
    for the records the store refused in the first (see ``replay``)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        store: Any,
        target: Path,
        rejected: bool,
        result: dict[str, Any],
        advance: Callable[[int], Any],
    ) -> None:
        self.loop = loop
        self.store = store
        self.target = target
        self.kinds = (_spool.BATCH, _spool.REJECTED) if rejected else (_spool.BATCH,)
        self.result = result
        self.advance = advance
        self.spool = _spool.Spool(target, max_bytes=2**62, rejected_max_bytes=2**62)
        self.refused: dict[tuple[str, int], str] = {}  # passed by, with the store's error
        self.wrote = False  # the store took some write in this run

    def run(self) -> None:
        try:
            self._pass(second=False)
            if self.refused:
                if not self.wrote:
                    first = next(iter(self.refused.values()))
                    raise click.ClickException(
                        f"the store refused every record ({first}); nothing was written and "
                        f"the spool is left as it is ({self.target})"
                    )
                self._pass(second=True)
        finally:
            self.spool.close()
            self.result["corrupt_records"] = self.spool.corrupt_records

    def _pass(self, second: bool) -> None:
        cursor = self.spool.cursor(self.kinds)
        try:
            while (record := cursor.next()) is not None:
                if self._write(record, cursor, second):
                    self.advance(record.rows)
        finally:
            cursor.close()
            self.result["segments_in_use"] = max(
                self.result["segments_in_use"], cursor.skipped_locked
            )

    def _write(self, record: _spool.Record, cursor: _spool.Cursor, second: bool) -> bool:
        """Write one record; False if it was passed by (left in the spool)."""
        result = self.result
        refused = 0
        try:
            _call(self.loop, self.store.write_table, record.table)
        except RowsRejected as rej:
            refused = rej.rejected.num_rows
            self._keep_rejected(rej.rejected, list(rej.errors))
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if is_transient(exc):
                raise click.ClickException(
                    f"the store failed: {error}; wrote {result['events_written']:,} events "
                    f"before, the rest is left in the spool ({self.target})"
                ) from exc
            if not second or record.key not in self.refused:
                self.refused[record.key] = error
                return False
            # Refused again, while the store took other records: its content.
            self._keep_rejected(record.table, [error] * record.rows)
            cursor.done(record)
            result["set_aside"] += record.rows
            return True
        self.wrote = True
        cursor.done(record)
        result["records"] += 1
        result["events_written"] += record.rows - refused
        result["rejected"] += refused
        return True

    def _keep_rejected(self, rows: Any, errors: list[str]) -> None:
        try:
            self.spool.append(rows, _spool.REJECTED, errors, ours=False)
        except OSError as exc:
            raise click.ClickException(
                f"cannot keep {rows.num_rows:,} rejected rows in the spool {self.target}: "
                f"{exc}; their record is left there (replaying it again writes its other "
                "rows again)"
            ) from exc
