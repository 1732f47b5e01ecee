"""The SQL stores (PostgreSQL, MySQL/MariaDB, SQLite) against the real servers:
every column round-trips, replays never duplicate, old tables migrate, bad rows
are isolated, passwords never show, and every query and CLI command reads each
db."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyarrow as pa
import pytest
from click.testing import CliRunner, Result
from pydantic import SecretStr

import llamonitor
from _helpers import T0, span_row
from llamonitor import MonitorConfig, StorageConfig, monitor_llm, monitoring_session
from llamonitor.cli import cli
from llamonitor.schema._columns import COLUMNS_V1, SCHEMA, SCHEMA_VERSION
from llamonitor.schema.config import ConfigurationError
from llamonitor.storage import (
    RowsRejected,
    StoreError,
    _sql,
    _sql_ddl,
    _sql_query,
    _sql_write,
    create_backend,
)
from llamonitor.storage import sqlite as sqlite_store
from llamonitor.storage._duckdb import Filters

if TYPE_CHECKING:
    from _servers import Store

pytest_plugins = ["_servers"]  # the db, pg_db, mysql_db and server_db fixtures

UTC = timezone.utc
SECRET = "S3cr3t-Pa55word"


def table_of(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def batch(n: int, start: int = 0, **values: Any) -> pa.Table:
    return table_of([span_row(i, **values) for i in range(start, start + n)])


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["event_id"]: r for r in rows}


def as_read(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as ``events()`` returns them: ``error`` a bool (stored TRUE or NULL)."""
    return [{**r, "error": bool(r["error"])} for r in rows]


def run(*args: Any, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def every_column_rows() -> list[dict[str, Any]]:
    """Rows setting every column (by its type in SCHEMA), and one with every
    nullable column None."""
    text = "naïve 漢字 🙂 'single' \"double\" back\\slash %_ \n\ttab \x1a end"
    ints = (2**63 - 1, -(2**63), 12345)
    floats = (0.1, 1e300, -2.5e-300)
    rows = []
    for i in range(3):
        row = span_row(i)
        for f in SCHEMA:
            if f.name in ("event_id", "timestamp"):
                continue
            if pa.types.is_string(f.type):
                row[f.name] = f"{f.name}-{i} {text}"
            elif pa.types.is_int64(f.type):
                row[f.name] = ints[i]
            elif pa.types.is_float64(f.type):
                row[f.name] = floats[i]
            elif pa.types.is_boolean(f.type):
                row[f.name] = True if i % 2 else None  # error: TRUE or NULL
        attrs = {"model": "gpt-4", "nested": {"k": [1, 2.5, None, "ü🙂"]}, "i": i}
        row["custom_attributes"] = json.dumps(attrs, ensure_ascii=False)
        rows.append(row)
    rows[0]["timestamp"] = datetime(2024, 5, 1, 12, 34, 56, 789012, tzinfo=UTC)
    rows[1]["timestamp"] = datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    rows[2]["timestamp"] = datetime(2100, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    rows.append(span_row(3))  # every nullable column None
    return rows


def initialize_error(db: Store, **settings: Any) -> BaseException:
    async def go() -> None:
        backend = db.backend(**settings)
        try:
            await backend.initialize()
        finally:
            await backend.close()

    with pytest.raises(Exception) as info:
        asyncio.run(go())
    return info.value


# -- writing -----------------------------------------------------------------------


def test_every_column_round_trips(db: Store) -> None:
    """Every column type, None, unicode, microsecond timestamps and JSON read back
    exactly as written, with the schema's Arrow types."""
    written = table_of(every_column_rows())
    db.write(written)
    with db.query() as q:
        got = by_id(q.events(limit=None))
        arrow = q.run("SELECT * FROM {rel} ORDER BY event_id")
    assert got == by_id(as_read(written.to_pylist()))
    assert arrow is not None
    assert [f.type for f in arrow.schema] == [f.type for f in SCHEMA]
    assert json.loads(got["e000000"]["custom_attributes"])["nested"]["k"][3] == "ü🙂"


def test_replayed_batch_is_not_duplicated(db: Store) -> None:
    """Writing a batch again (a retry after a lost acknowledgement) adds no rows."""

    async def go() -> None:
        backend = db.backend()
        await backend.initialize()
        try:
            await backend.write_table(batch(50))
            await backend.write_table(batch(50))
            await backend.write_table(batch(50, start=25))  # half old, half new
        finally:
            await backend.close()

    asyncio.run(go())
    assert db.count() == 75
    with db.query() as q:
        assert q.count() == 75


BAD_ROWS: dict[str, list[tuple[dict[str, Any], str]]] = {
    "postgres": [({"session_id": "nul\x00byte"}, "0x00"), ({"operation_name": None}, "not-null")],
    "mysql": [({"session_id": "x" * 300}, "Data too long"), ({"duration_ms": float("nan")}, "NaN")],
    "sqlite": [({"operation_name": None}, "NOT NULL"), ({"process_id": None}, "NOT NULL")],
}


@pytest.mark.parametrize("split", [False, True], ids=["one-part", "two-parts"])
def test_bad_rows_are_isolated_and_the_rest_written(
    db: Store, split: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows the database refuses for their content are raised in RowsRejected with
    the database's error, after the other 99 rows are written (also when the batch
    goes as concurrent parts); a replay of the batch rejects them again and
    duplicates nothing."""
    if split:
        monkeypatch.setattr(_sql_write, "MIN_PART_ROWS", 10)  # 101 rows: two parts
    rows = [span_row(i) for i in range(101)]
    for position, (values, _) in zip((37, 64), BAD_ROWS[db.kind], strict=True):
        rows[position].update(values)
    table = table_of(rows)

    async def go() -> list[RowsRejected]:
        backend = db.backend()
        await backend.initialize()
        raised = []
        try:
            for _ in range(2):
                with pytest.raises(RowsRejected) as info:
                    await backend.write_table(table)
                raised.append(info.value)
        finally:
            await backend.close()
        return raised

    for rejected in asyncio.run(go()):
        assert rejected.rejected.column("event_id").to_pylist() == ["e000037", "e000064"]
        assert rejected.rejected.schema == SCHEMA
        assert len(rejected.errors) == 2
        for error, (_, expected) in zip(rejected.errors, BAD_ROWS[db.kind], strict=True):
            assert expected in error
    assert db.count() == 99


def test_dropped_table_is_recreated_on_the_next_attempt(db: Store) -> None:
    """A write to a table dropped under the backend fails as a retryable StoreError,
    and the next attempt creates the table again and writes."""

    async def go() -> None:
        backend = db.backend()
        await backend.initialize()
        try:
            await backend.write_table(batch(5))
            await asyncio.to_thread(db.execute, f"DROP TABLE {db.quote(db.table)}")
            with pytest.raises(StoreError):
                await backend.write_table(batch(5, start=5))
            await backend.write_table(batch(5, start=5))
        finally:
            await backend.close()

    asyncio.run(go())
    assert db.count() == 5
    with db.query() as q:
        assert {r["event_id"] for r in q.events()} == {f"e{i:06d}" for i in range(5, 10)}


def test_connection_killed_by_the_server_is_retried_without_duplicates(
    pg_db: Store,
) -> None:
    """Connections the server terminates make at most a retryable StoreError; the
    retried batch lands once."""
    app = f"llamonitor-test-{pg_db.table}"
    backend = pg_db.backend(options={"server_settings": {"application_name": app}})

    async def go() -> list[StoreError]:
        await backend.initialize()
        errors: list[StoreError] = []
        try:
            await backend.write_table(batch(10))
            await asyncio.to_thread(
                pg_db.execute,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1",
                (app,),
            )
            for _ in range(3):
                try:
                    await backend.write_table(batch(10, start=5))
                    break
                except StoreError as exc:
                    errors.append(exc)
        finally:
            await backend.close()
        return errors

    errors = asyncio.run(go())
    assert len(errors) < 3
    assert pg_db.count() == 15


# -- the table definition and its migration ---------------------------------------


def before_v3(names: tuple[str, ...] | list[str]) -> list[pa.Field]:
    """The fields ``names`` as a table before schema version 3 had them
    (``error`` and ``duration_ms`` NOT NULL)."""
    return [
        f.with_nullable(False) if f.name in _sql_ddl.RELAXED_IN_V3 else f
        for f in SCHEMA
        if f.name in names
    ]


def test_version_1_table_is_migrated_in_place(db: Store) -> None:
    """A table of schema version 1 gets the new columns on initialize; its rows stay
    intact (new columns null, error FALSE now NULL) and new rows land beside them."""
    db.create_table(before_v3(COLUMNS_V1))
    old = [
        span_row(
            i, session_id="old", text_char_count=i, custom_attributes='{"v": 1}', error=i == 3
        )
        for i in range(5)
    ]
    db.insert_rows(old, COLUMNS_V1)
    with db.query() as q:  # readable before any writer migrated it
        assert q.count() == 5
        assert q.overview()["errors"] == 1
    db.write(batch(3, start=100, model="gpt-4o", input_tokens=7))
    assert set(SCHEMA.names) <= set(db.columns())
    assert db.schema_version() == SCHEMA_VERSION
    with db.query() as q:
        rows = by_id(q.events(limit=None))
    assert len(rows) == 8
    for row in old:
        got = rows[row["event_id"]]
        row["error"] = bool(row["error"])
        assert {c: got[c] for c in COLUMNS_V1} == {c: row[c] for c in COLUMNS_V1}
        assert got["model"] is None
    assert rows["e000100"]["model"] == "gpt-4o"
    assert rows["e000100"]["input_tokens"] == 7
    failed = db.execute(f"SELECT event_id FROM {db.quote(db.table)} WHERE error IS NOT NULL")
    assert failed == [("e000003",)]


def test_fresh_table_has_the_indexes_and_version(db: Store) -> None:
    """A new table gets the four indexes and its schema version recorded."""
    db.write(batch(1))
    assert db.schema_version() == SCHEMA_VERSION
    assert list(db.columns()) == list(SCHEMA.names)
    if db.kind == "postgres":
        names = [
            r[0]
            for r in db.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = $1", (db.table,)
            )
        ]
    elif db.kind == "mysql":
        names = [
            r[0]
            for r in db.execute(
                "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                (db.table,),
            )
        ]
    else:
        names = [r[1] for r in db.execute(f"PRAGMA index_list({db.table})")]
    for suffix, _ in _sql_ddl.INDEXES:
        assert f"{db.table}_{suffix}" in names


def test_incompatible_column_type_is_a_clear_error(db: Store) -> None:
    """A table whose column has a type that cannot hold the values is refused,
    naming the table setting and the column."""
    fields = [
        pa.field(f.name, pa.string()) if f.name == "duration_ms" else f
        for f in SCHEMA
        if f.name in COLUMNS_V1
    ]
    db.create_table(fields)
    error = initialize_error(db)
    assert isinstance(error, ConfigurationError)
    assert error.setting == "storage.table_name"
    assert "duration_ms" in str(error)


def test_newer_schema_version_is_refused(db: Store) -> None:
    """A table migrated by a newer llamonitor is not written by this one."""
    db.write(batch(1))
    db.execute(
        f"UPDATE {_sql_ddl.META_TABLE} SET schema_version = 99 WHERE table_name = {db.mark(1)}",
        (db.table,),
    )
    error = initialize_error(db)
    assert isinstance(error, ConfigurationError)
    assert "newer" in str(error) and "99" in str(error)


def test_foreign_table_is_refused(db: Store) -> None:
    """A table of that name that is not a span table is left alone, with a clear error."""
    db.execute(f"CREATE TABLE {db.quote(db.table)} (id INTEGER PRIMARY KEY)")
    error = initialize_error(db)
    assert isinstance(error, ConfigurationError)
    assert "not a llamonitor span table" in str(error)


def test_monthly_partitions_are_created_on_demand(pg_db: Store) -> None:
    """With options={"partition": "monthly"}, rows of two months land in their month's
    partition, a replay duplicates nothing, and every row reads back."""
    edge = datetime(2024, 5, 31, 23, 59, 59, 999999, tzinfo=UTC)
    rows = [span_row(i, timestamp=edge + timedelta(microseconds=i)) for i in range(6)]
    options = {"partition": "monthly"}
    pg_db.write(table_of(rows), options=options)
    pg_db.write(table_of(rows), options=options)
    counts = dict(
        pg_db.execute(f'SELECT tableoid::regclass::text, count(*) FROM "{pg_db.table}" GROUP BY 1')
    )
    assert counts == {f"{pg_db.table}_p2024_05": 1, f"{pg_db.table}_p2024_06": 5}
    kind = pg_db.execute("SELECT relkind::text FROM pg_class WHERE relname = $1", (pg_db.table,))
    assert kind == [("p",)]
    with pg_db.query() as q:
        assert by_id(q.events(limit=None)) == by_id(as_read(rows))
        assert q.count() == 6


def test_schema_name_is_created_and_used(server_db: Store) -> None:
    """schema_name (a PostgreSQL schema, a MySQL database) is created if missing and
    holds the table; the CLI reads it as --table schema.table."""
    schema = f"llm_{server_db.table}"
    try:
        server_db.write(batch(3), schema_name=schema)
        with server_db.query(schema_name=schema) as q:
            assert q.count() == 3
        at = ("--dsn", server_db.dsn, "--table", f"{schema}.{server_db.table}")
        result = run("events", *at, "--json")
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)) == 3
    finally:
        if server_db.kind == "postgres":
            server_db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        else:
            server_db.execute(f"DROP DATABASE IF EXISTS `{schema}`")


def test_mysql_statements_stay_under_the_packet_limit(
    mysql_db: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch larger than one statement goes as several in one transaction; a row
    too large for any statement is rejected, the others written."""
    from llamonitor.storage import mysql

    monkeypatch.setattr(mysql, "MAX_STATEMENT_BYTES", 1)  # clamped to the 64 KiB floor
    rows = [span_row(i, error_message="e" * 300) for i in range(1000)]  # ~0.6 MB of SQL
    rows[500]["error_message"] = "x" * 100_000
    with pytest.raises(RowsRejected) as info:
        mysql_db.write(table_of(rows))
    assert info.value.rejected.column("event_id").to_pylist() == ["e000500"]
    assert "max_allowed_packet" in info.value.errors[0]
    assert mysql_db.count() == 999


def test_sqlite_file_is_in_wal_mode_at_a_relative_path(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///relative/path.db is relative to the working directory (created),
    and the file is in WAL mode."""
    monkeypatch.chdir(tmp_path)
    config = StorageConfig(backend="sqlite", connection_string="sqlite:///data/spans.db")

    async def go() -> None:
        backend = create_backend(config)
        await backend.initialize()
        await backend.write_table(batch(2))
        await backend.close()

    asyncio.run(go())
    path = tmp_path / "data" / "spans.db"
    assert path.is_file()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()
    with sqlite_store.query(config) as q:
        assert q.count() == 2


def test_sqlalchemy_style_scheme_is_accepted(pg_db: Store) -> None:
    """postgresql+asyncpg://... (a SQLAlchemy URL) selects and reaches PostgreSQL."""
    dsn = pg_db.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    config = MonitorConfig.for_production(dsn, table_name=pg_db.table)
    assert config.storage.backend == "postgres"
    pg_db.with_dsn(dsn).write(batch(1))
    assert pg_db.count() == 1


# -- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "setting", "text"),
    [
        ({"backend": "postgres"}, "storage.connection_string", "needs a connection string"),
        (
            {"backend": "postgres", "connection_string": "mysql://u@h/db"},
            "storage.connection_string",
            "not a postgres connection string",
        ),
        (
            {"backend": "mysql", "connection_string": "mysql://u:pw@h"},
            "storage.connection_string",
            "names no database",
        ),
        (
            {"backend": "sqlite", "connection_string": "sqlite:///:memory:"},
            "storage.connection_string",
            "in-memory",
        ),
        (
            {"backend": "postgres", "connection_string": "postgresql://h/db", "table_name": "a;b"},
            "storage.table_name",
            "not a usable name",
        ),
        (
            {
                "backend": "postgres",
                "connection_string": "postgresql://h/db",
                "options": {"partition": "weekly"},
            },
            "storage.options",
            "monthly",
        ),
        (
            {"backend": "mysql", "connection_string": "mysql://h/db", "options": {"sslmode": 1}},
            "storage.options",
            "unknown option",
        ),
    ],
)
def test_bad_configuration_names_the_setting(
    settings: dict[str, Any], setting: str, text: str
) -> None:
    """A missing or invalid connection string, name or option fails at creation,
    naming the setting."""
    with pytest.raises(ConfigurationError) as info:
        create_backend(StorageConfig(**settings))
    assert info.value.setting == setting
    assert text in str(info.value)


@pytest.mark.parametrize(
    ("backend", "driver", "dsn"),
    [("postgres", "asyncpg", "postgresql://h/db"), ("mysql", "aiomysql", "mysql://h/db")],
)
def test_missing_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, backend: str, driver: str, dsn: str
) -> None:
    """Without the driver, initialize_monitoring says which extra to install."""
    monkeypatch.setitem(sys.modules, driver, None)  # import fails as if not installed
    with pytest.raises(ConfigurationError) as info:
        llamonitor.initialize_monitoring(MonitorConfig.for_production(dsn))
    assert info.value.setting == "storage.backend"
    assert f"pip install 'llamonitor[{backend}]'" in str(info.value)


def test_environment_selects_the_store(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """LLMOPS_BACKEND / LLMOPS_CONNECTION_STRING / LLMOPS_TABLE_NAME configure the db."""
    dsn = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("LLMOPS_BACKEND", "sqlite")
    monkeypatch.setenv("LLMOPS_CONNECTION_STRING", dsn)
    monkeypatch.setenv("LLMOPS_TABLE_NAME", "env_spans")
    config = MonitorConfig.from_env()
    assert config.storage.backend == "sqlite"

    @monitor_llm("env_call")
    def call() -> str:
        return "ok"

    llamonitor.initialize_monitoring(config)
    call()
    assert llamonitor.shutdown_monitoring(10)
    with sqlite_store.query(config.storage) as q:
        assert [r["operation_name"] for r in q.events()] == ["env_call"]


# -- secrets -------------------------------------------------------------------------


def test_mask_dsn_hides_every_form_of_password() -> None:
    """The password of the URL and of a password= parameter are masked."""
    assert mask("postgresql://u:pw%40x@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask("mysql://u@h/db?password=pw&x=1") == "mysql://u@h/db?password=***&x=1"
    assert mask("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"
    # Unescaped "/" or "@" in a password: everything up to the host is masked.
    assert mask("postgresql://u:pa/ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask("postgresql://u:p@ss@h/db") == "postgresql://u:***@h/db"


def test_mask_dsn_hides_secret_parameters_of_every_connection_string_form() -> None:
    """sslpassword=, token=, ODBC Pwd=, libpq keywords and Oracle user/password@host."""
    assert (
        mask("postgresql://u@h/db?sslpassword=s3&sslmode=require")
        == "postgresql://u@h/db?sslpassword=***&sslmode=require"
    )
    assert mask("mysql://root@h/db?access_token=t0k") == "mysql://root@h/db?access_token=***"
    odbc = "Driver={X};Server=db;Uid=app;Pwd={se;cr};"
    assert mask(odbc) == "Driver={X};Server=db;Uid=app;Pwd=***;"
    assert mask("host=db user=app password=hunter2") == "host=db user=app password=***"
    assert mask("scott/tiger@db:1521/orcl") == "scott/***@db:1521/orcl"


def mask(dsn: str) -> str:
    return _sql.mask_dsn(dsn)


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("host=db password='my secret pw' dbname=x", "host=db password=*** dbname=x"),
        ("password='it''s' host=x", "password=*** host=x"),
        (r"password='a\' b' host=x", "password=*** host=x"),
        ("password = 'a b' host=x", "password = *** host=x"),
        ("host=x password='no end quote", "host=x password=***"),
        ('Server=db;Password="x;y ""z""";Uid=u', "Server=db;Password=***;Uid=u"),
        ("postgresql://u@h/db?password='p w'&x=1", "postgresql://u@h/db?password=***&x=1"),
        (
            "host=db application_name='a password=b' password=c",
            "host=db application_name='a password=b' password=***",
        ),
    ],
)
def test_mask_dsn_hides_the_whole_quoted_value(dsn: str, masked: str) -> None:
    """A quoted value (libpq keyword/value, with ``\\'`` or ``''`` inside, or an
    ODBC/ADO double-quoted one) is masked whole: no piece of it is left."""
    assert mask(dsn) == masked


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://u:pa ss@w/rd@host:5432/db", "postgresql://u:***@host:5432/db"),
        ("mysql://root:a b c@h/db", "mysql://root:***@h/db"),
        ("postgresql://u: lead@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:x @y/z @h:1/db?sslmode=require", "postgresql://u:***@h:1/db?sslmode=require"),
    ],
)
def test_mask_dsn_masks_a_url_password_with_spaces_up_to_the_last_at(
    dsn: str, masked: str
) -> None:
    """An unescaped space, '@' or '/' in a URL's password: everything up to the
    last '@' is masked."""
    assert mask(dsn) == masked


def test_a_bad_port_message_shows_no_piece_of_the_password() -> None:
    """A password with an unescaped '/' is not taken for the host:port (its
    first part was shown as the "port")."""
    dsn = "postgresql://u:hunter2/xyz@h:5432x/db"
    with pytest.raises(ConfigurationError) as info:
        create_backend(StorageConfig(backend="postgres", connection_string=SecretStr(dsn)))
    assert "hunter2" not in str(info.value)
    assert "xyz" not in str(info.value)
    assert "'5432x'" in str(info.value)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("host=db password='my secret pw' dbname=x", "my secret pw"),
        ("host=db password='it''s mine' dbname=x", "it's mine"),
        (r"host=db password='a\' b\\c' dbname=x", r"a' b\c"),
        ("Server=db;Pwd={x;y}}z};Uid=u", "x;y}z"),
        ("postgresql://u@h/db?sslpassword='p w'", "p w"),
        ("postgresql://u:pa ss@w/rd@host:5432/db", "pa ss@w/rd"),
    ],
)
def test_secrets_scrub_quoted_and_url_passwords_from_messages(dsn: str, shown: str) -> None:
    """A driver message quoting the password as the server saw it (unquoted,
    unescaped) is scrubbed."""
    message = f'FATAL: password "{shown}" refused for {dsn}'
    scrubbed = _sql.Secrets(dsn).scrub(message)
    assert shown not in scrubbed
    assert "***" in scrubbed
    assert scrubbed.startswith('FATAL: password "***" refused for ')


@pytest.mark.parametrize(
    "dsn", [f"postgresql://llm:{SECRET}@127.0.0.1:1/test", f"mysql://llm:{SECRET}@127.0.0.1:1/test"]
)
def test_password_never_shown_when_the_server_is_unreachable(
    dsn: str, caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    """An unreachable server is a transient StoreError; it, the backend's repr, the
    transport's logs and health report (the sink starts in outage mode) and the CLI
    show the connection string masked, never the password."""
    caplog.set_level(logging.DEBUG)
    config = StorageConfig(backend=_sql.backend_for(dsn), connection_string=SecretStr(dsn))
    backend = create_backend(config)
    with pytest.raises(StoreError) as info:
        asyncio.run(backend.initialize())
    assert "llm:***@127.0.0.1:1" in str(info.value)
    assert info.value.llamonitor_transient
    writer = llamonitor.initialize_monitoring(MonitorConfig(storage=config, spool_dir=tmp_path))
    health = json.dumps(writer.health_check(), default=str)
    assert "***" in health
    assert llamonitor.shutdown_monitoring(10)
    result = run("events", "--dsn", dsn)
    assert result.exit_code == 1
    assert "***" in result.output
    shown = [str(info.value), repr(info.value), repr(backend), repr(config), health]
    for text in [*shown, result.output, caplog.text]:
        assert SECRET not in text


def test_driver_messages_are_scrubbed(server_db: Store) -> None:
    """A driver message that quotes the secret (here the user name equals the
    password) is scrubbed before it leaves the backend."""
    parts = urlsplit(server_db.dsn)
    dsn = f"{parts.scheme}://{SECRET}:{SECRET}@{parts.hostname}:{parts.port}{parts.path}"
    error = initialize_error(server_db.with_dsn(dsn))
    assert isinstance(error, StoreError)
    assert SECRET not in str(error)
    assert "***" in str(error)
    assert not error.llamonitor_transient  # a refused login is not an outage


# -- the query side and the CLI ------------------------------------------------------


def conversation_rows() -> list[dict[str, Any]]:
    """Two sessions of three traces, each agent -> tool.search -> llm.answer; the
    third tool call of each session failed."""
    rows: list[dict[str, Any]] = []
    for session in ("alpha", "beta"):
        for k in range(3):
            trace = f"{session}-trace-{k}".ljust(32, "0")
            parent = None
            for op, kind in (
                ("agent", "agent_workflow"),
                ("tool.search", "tool"),
                ("llm.answer", "llm_call"),
            ):
                i = len(rows)
                rows.append(
                    span_row(
                        i,
                        session_id=session,
                        trace_id=trace,
                        span_id=f"{i:016x}",
                        parent_span_id=parent,
                        operation_name=op,
                        operation_type=kind,
                        duration_ms=float(10 + i),
                        error=op == "tool.search" and k == 2,
                    )
                )
                parent = f"{i:016x}"
    return rows


def test_filters_are_pushed_into_the_store(db: Store) -> None:
    """The source fetches only the rows the query's filters select (the store's own
    WHERE), in chunks."""
    rows = conversation_rows()
    db.write(table_of(rows))
    cases = [
        (Filters(session_id="alpha"), lambda r: r["session_id"] == "alpha"),
        (Filters(session_id=("alpha", "beta")), lambda r: True),
        (Filters(trace_id=rows[3]["trace_id"]), lambda r: r["trace_id"] == rows[3]["trace_id"]),
        (Filters(operation="tool.*"), lambda r: r["operation_name"] == "tool.search"),
        (Filters(operation="llm.answe?"), lambda r: r["operation_name"] == "llm.answer"),
        (
            Filters(since=T0 + timedelta(seconds=4), until=(T0 + timedelta(seconds=9))),
            lambda r: 4 <= int(r["event_id"][1:]) < 9,
        ),
        (Filters(since=(T0 + timedelta(seconds=17)).replace(tzinfo=None)), lambda r: r is rows[17]),
    ]
    with db.query() as q:
        for filters, keep in cases:
            reader = q._source(filters)
            assert isinstance(reader, pa.RecordBatchReader)
            got = reader.read_all()
            assert got.schema == SCHEMA
            expected = {r["event_id"] for r in rows if keep(r)}
            assert set(got.column("event_id").to_pylist()) == expected, filters


def test_cli_reads_the_store(db: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """events (filters, globs, times), trace (by prefix) and stats work through
    --dsn/--table, rows streamed in several chunks."""
    monkeypatch.setattr(_sql_query, "CHUNK_ROWS", 5)
    db.write(table_of(conversation_rows()))
    at = ("--dsn", db.dsn, "--table", db.table)

    result = run("events", *at, "--session", "alpha", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(r["session_id"] for r in json.loads(result.stdout)) == ["alpha"] * 9

    result = run("events", *at, "--operation", "tool.*", "--limit", "100", "--json")
    assert {r["operation_name"] for r in json.loads(result.stdout)} == {"tool.search"}
    assert len(json.loads(result.stdout)) == 6

    since = (T0 + timedelta(seconds=9)).isoformat()
    result = run("events", *at, "--since", since, "--json")
    assert len(json.loads(result.stdout)) == 9

    result = run("trace", "beta-trace-1", *at, "--json")
    assert result.exit_code == 0, result.output
    tree = json.loads(result.stdout)
    assert tree["trace_id"] == "beta-trace-1".ljust(32, "0")
    assert tree["span_count"] == 3

    result = run("stats", *at, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    groups = {g["operation_name"]: g for g in stats["groups"]}
    assert {op: g["count"] for op, g in groups.items()} == {
        "agent": 6,
        "tool.search": 6,
        "llm.answer": 6,
    }
    assert groups["tool.search"]["errors"] == 2
    assert stats["total"]["count"] == 18

    result = run("stats", *at)  # the tables, with the overview line
    assert result.exit_code == 0, result.output
    assert "18 spans" in result.output

    env = {"LLMOPS_CONNECTION_STRING": db.dsn, "LLMOPS_TABLE_NAME": db.table}
    result = run("events", "--limit", "100", "--json", env=env)
    assert len(json.loads(result.stdout)) == 18


def test_cli_on_a_store_without_the_table(db: Store) -> None:
    """A database without the span table is an empty store (exit 0); a missing
    trace names the store with its password masked; a missing SQLite file is
    no store (exit 1)."""
    if db.kind == "sqlite":
        result = run("events", "--dsn", db.dsn)
        assert result.exit_code == 1
        assert "no store at" in result.output
        db.execute("SELECT 1")  # creates the file, without the table
    result = run("events", "--dsn", db.dsn, "--table", db.table)
    assert result.exit_code == 0, result.output
    assert "No spans recorded in" in result.output
    result = run("trace", "abc", "--dsn", db.dsn, "--table", db.table)
    assert result.exit_code == 1
    assert "not found in" in result.output


def test_end_to_end_from_decorated_calls(db: Store) -> None:
    """initialize_monitoring(MonitorConfig.for_production(dsn)), decorated calls and a
    flush put the spans, linked parent to child, in the db."""

    @monitor_llm("answer", measure_text=True, custom_attributes={"model": "gpt-4"})
    def answer(q: str) -> str:
        return f"an answer to {q}"

    @monitor_llm("agent", operation_type="agent_workflow")
    def agent(q: str) -> str:
        return answer(q)

    writer = llamonitor.initialize_monitoring(
        MonitorConfig.for_production(db.dsn, table_name=db.table)
    )
    with monitoring_session("e2e"):
        for q in ("one", "two"):
            agent(q)
    assert llamonitor.flush(30)
    assert writer.health_check()["events_written"] == 4
    assert llamonitor.shutdown_monitoring(10)
    with db.query() as q:
        rows = q.events(session_id="e2e", limit=None)
        trace = q.trace(rows[0]["trace_id"])
    assert len(rows) == 4
    spans = {r["operation_name"]: r for r in trace}
    assert spans["answer"]["parent_span_id"] == spans["agent"]["span_id"]
    assert spans["answer"]["text_char_count"] == len("an answer to one")
    assert json.loads(spans["answer"]["custom_attributes"])["model"] == "gpt-4"


def test_a_user_name_holding_an_at_sign_keeps_the_password_masked() -> None:
    """Azure's ``user@server`` names: the password after them is masked everywhere,
    and an "@" in the query string is not taken for the end of the password."""
    from llamonitor.storage._sql import _check_ports, mask_dsn

    dsn = "postgresql://admin@srv:Secret99@host.example:5432/db"
    assert mask_dsn(dsn) == "postgresql://admin@srv:***@host.example:5432/db"
    with pytest.raises(llamonitor.ConfigurationError) as err:
        _check_ports(dsn.replace("5432", "99999"))
    assert "Secret99" not in str(err.value) and "99999" in str(err.value)
    _check_ports("postgresql://u:pw123@host:5432/db?application_name=svc@worker:x")
