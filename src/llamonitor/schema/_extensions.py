"""Metric groups: the seed's "Schema Evolution" extension point, and the
columns it adds to the one schema at run time.

A metric group is a pydantic model (``AudioMetrics``) under a prefix
(``audio``). Each of its fields becomes a nullable column ``<prefix>_<field>``
typed from the annotation (``int`` -> int64, ``float`` -> float64, ``str`` ->
string, ``bool`` -> bool; anything else -> the value as JSON text). A group is
registered by :func:`register_metrics`, and automatically when a
``MetricEvent`` subclass declares a ``<prefix>_metrics`` field of a model type
or a collector returns one under ``<prefix>_metrics``.

The built-in groups map onto the base columns: ``text`` (``TextMetrics``:
``text_char_count``..., and its token counts onto ``input_tokens``...) and
``image`` (``ImageMetrics``); their ``custom_metrics`` dicts are the JSON
columns ``text_custom_metrics`` / ``image_custom_metrics`` (the original
system's names).

A batch carries the extension columns some row of it has a value in, after the
base columns (:func:`batch_schema`); its schema metadata lists them
(``llamonitor.extensions``), so a reader knows them. Parquet readers union
files by name (older files read them as nulls); SQL stores add a missing
column with ``ALTER TABLE ... ADD COLUMN`` when a batch brings it.
"""

from __future__ import annotations

import json
import re
import threading
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from llamonitor._records import safe_repr
from llamonitor.schema._columns import INT64_MAX, INT64_MIN, SCHEMA

EXTENSIONS_KEY = b"llamonitor.extensions"
"""Schema metadata key: JSON ``{column: type}`` of a batch's or file's extension
columns (``int64``, ``float64``, ``string``, ``bool`` or ``json``)."""

_PREFIX = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_MAX_COLUMN = 63  # PostgreSQL's identifier limit: every SQL store can name the column
_BASE = {f.name: f for f in SCHEMA}
_KINDS: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "json": pa.string(),
}


@dataclass(frozen=True)
class MetricGroup:
    """A registered metric group: its model and where each field is stored.

    Attributes:
        prefix: ``audio`` for ``audio_metrics``.
        model: the pydantic model.
        columns: model field -> column.
        kinds: model field -> ``int64`` | ``float64`` | ``string`` | ``bool`` | ``json``.
    """

    prefix: str
    model: type[BaseModel]
    columns: Mapping[str, str]
    kinds: Mapping[str, str]


_lock = threading.Lock()
_groups: dict[str, MetricGroup] = {}
_fields: dict[str, pa.Field] = {}  # extension column -> its field, in registration order
_kinds: dict[str, str] = {}  # extension column -> its kind
_schemas: dict[frozenset[str], pa.Schema] = {}


def _kind(annotation: Any) -> str:
    """The column kind of a field annotation (``Optional``/``Annotated`` unwrapped)."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union or origin is types.UnionType:
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return "json"
            annotation = args[0]
        else:
            break
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int64"
    if annotation is float:
        return "float64"
    if annotation is str:
        return "string"
    return "json"


def _arrow_kind(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t):
        return "float64"
    return "string"


def register_metrics(
    prefix: str, model: type[BaseModel], *, columns: Mapping[str, str] | None = None
) -> MetricGroup:
    """Register a metric group: its fields become columns ``<prefix>_<field>``.

    Registering the same group again is a no-op; a new version of the model
    may add fields, but a column keeps its type. A column that is a base
    column (``cost`` + ``usd`` -> ``cost_usd``) fills it when the types agree.

    Args:
        prefix: lower-case letters, digits and ``_`` (``audio``); the event
            field is ``<prefix>_metrics``.
        model: a pydantic model class.
        columns: for the built-in groups only: model field -> column.

    Returns:
        The registered :class:`MetricGroup`.

    Raises:
        ValueError: a bad prefix, a column name over 63 characters, a column
            whose type differs from the base column or from an earlier
            registration, or a built-in prefix (``text``, ``image``).
        TypeError: ``model`` is not a pydantic model class.
    """
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"register_metrics({prefix!r}, ...): {model!r} is not a pydantic model")
    if not _PREFIX.match(prefix or ""):
        raise ValueError(
            f"metric group prefix {prefix!r}: use lower-case letters, digits and '_' "
            "(starting with a letter), like 'audio'"
        )
    with _lock:
        known = _groups.get(prefix)
        if known is not None and known.model is model:
            return known
        if known is not None and columns is None and prefix in BUILTIN_PREFIXES:
            raise ValueError(
                f"metric group {prefix!r} is built in ({known.model.__name__}); "
                "choose another prefix"
            )
        kinds = {name: _kind(info.annotation) for name, info in model.model_fields.items()}
        mapping = dict(columns) if columns else {n: f"{prefix}_{n}" for n in kinds}
        new_fields: dict[str, pa.Field] = {}
        for name, kind in kinds.items():
            column = mapping[name]
            if len(column) > _MAX_COLUMN:
                raise ValueError(
                    f"metric column {column!r} is longer than {_MAX_COLUMN} characters"
                )
            base = _BASE.get(column)
            if base is not None:
                if _arrow_kind(base.type) != kind:
                    raise ValueError(
                        f"{model.__name__}.{name} ({kind}) would fill the column {column!r}, "
                        f"which holds {base.type}: rename the field or the prefix"
                    )
                continue
            earlier = _kinds.get(column)
            if earlier is not None and earlier != kind:
                raise ValueError(
                    f"{model.__name__}.{name} ({kind}): the column {column!r} is already "
                    f"registered as {earlier}"
                )
            new_fields[column] = pa.field(column, _KINDS[kind], nullable=True)
            _kinds[column] = kind
        group = MetricGroup(prefix, model, mapping, kinds)
        _groups[prefix] = group
        for column, f in new_fields.items():
            _fields.setdefault(column, f)
        _schemas.clear()
        return group


BUILTIN_PREFIXES = ("text", "image")


def group(prefix: str) -> MetricGroup | None:
    """The registered group of ``prefix``, if any."""
    return _groups.get(prefix)


def groups() -> list[MetricGroup]:
    """Every registered group (the built-in ones first)."""
    return list(_groups.values())


def extension_fields() -> dict[str, pa.Field]:
    """Every registered extension column (not a base column) -> its field."""
    return dict(_fields)


def is_json(column: str) -> bool:
    """Is ``column`` an extension column holding JSON text?"""
    return _kinds.get(column) == "json"


def group_of(key: str, value: Any) -> MetricGroup | None:
    """The group a ``<prefix>_metrics`` key names, registering the value's model
    if it is a pydantic model of a new prefix; ``None`` if ``key`` names none."""
    if not key.endswith("_metrics") or len(key) <= 8:
        return None
    prefix = key[:-8]
    known = _groups.get(prefix)
    if known is not None:
        return known
    if isinstance(value, BaseModel) and _PREFIX.match(prefix):
        return register_metrics(prefix, type(value))
    return None


def _fits(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int64":
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (INT64_MIN <= value <= INT64_MAX)
        )
    if kind == "float64":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def json_text(value: Any) -> str | None:
    """``value`` as JSON text (a model as its JSON dump); ``None`` for
    ``None`` and an empty dict or list. What JSON cannot hold is its repr."""
    if value is None or (isinstance(value, (dict, list)) and not value):
        return None
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        return json.dumps(value, default=safe_repr, ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return json.dumps(safe_repr(value))


def flatten(g: MetricGroup, value: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The column values of one group value (a model or a dict).

    Returns:
        ``(columns, leftovers)``: column -> value for the non-null fields, and
        the values that do not fit their column (kept by the caller in
        ``custom_attributes`` under the column's name).
    """
    if isinstance(value, BaseModel):
        items = {n: getattr(value, n, None) for n in g.kinds}
    elif isinstance(value, Mapping):
        items = {n: value.get(n) for n in g.kinds}
    else:
        return {}, {f"{g.prefix}_metrics": value}
    out: dict[str, Any] = {}
    leftovers: dict[str, Any] = {}
    for name, v in items.items():
        if v is None:
            continue
        column = g.columns[name]
        kind = g.kinds[name]
        if kind == "json":
            text = json_text(v)
            if text is not None:
                out[column] = text
        elif _fits(kind, v):
            out[column] = float(v) if kind == "float64" else v
        else:
            leftovers[column] = v
    return out, leftovers


def unflatten(g: MetricGroup, row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The group's field values in a stored row (JSON decoded), or ``None``
    if the row has none of them."""
    values: dict[str, Any] = {}
    for name, column in g.columns.items():
        v = row.get(column)
        if v is None:
            continue
        if g.kinds[name] == "json" and isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError:
                pass
        values[name] = v
    return values or None


def batch_schema(extra: Iterable[str] = ()) -> pa.Schema:
    """The base schema followed by the registered extension columns ``extra``
    (in registration order), with those listed in the metadata.

    Raises:
        KeyError: a name that is not a registered extension column.
    """
    key = frozenset(extra)
    if not key:
        return SCHEMA
    found = _schemas.get(key)
    if found is None:
        missing = key - _fields.keys()
        if missing:
            raise KeyError(f"not registered extension columns: {sorted(missing)}")
        fields = [f for name, f in _fields.items() if name in key]
        found = _with_extensions(fields)
        _schemas[key] = found
    return found


def _with_extensions(fields: Sequence[pa.Field]) -> pa.Schema:
    listed = {f.name: _kinds.get(f.name) or _arrow_kind(f.type) for f in fields}
    meta = {**(SCHEMA.metadata or {}), EXTENSIONS_KEY: json.dumps(listed).encode()}
    return pa.schema([*SCHEMA, *fields], metadata=meta)


def extensions_of(schema: pa.Schema) -> dict[str, str]:
    """The extension columns a batch or file carries: column -> kind."""
    return {
        f.name: _kinds.get(f.name) or _arrow_kind(f.type)
        for f in schema
        if f.name not in _BASE and not pa.types.is_null(f.type)
    }


def rows_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """An Arrow table of stored rows (``MetricEvent.to_row()``): the base
    columns and the registered extension columns some row has a value in."""
    present = {k for r in rows for k, v in r.items() if v is not None and k in _fields}
    schema = batch_schema(present)
    return pa.Table.from_pylist(list(rows), schema=schema)


_NULL_BOOL = pa.scalar(None, pa.bool_())


def failed_or_null(error: pa.ChunkedArray | pa.Array) -> Any:
    """The ``error`` column as schema version 3 stores it: TRUE or NULL."""
    if error.null_count == len(error) or not pc.any(pc.invert(error)).as_py():
        return error  # already TRUE / NULL only
    return pc.if_else(error, True, _NULL_BOOL)


def conform(table: pa.Table) -> pa.Table:
    """``table`` as stores write it: every base column in schema order (cast,
    missing ones null), then its extension columns (registered ones cast to
    their type; null-typed ones left out), and ``error`` TRUE or NULL.

    Raises:
        pyarrow.ArrowInvalid: a column cannot be cast to its type.
    """
    n = table.num_rows
    names = table.column_names
    extra = [
        table.schema.field(name)
        for name in names
        if name not in _BASE and not pa.types.is_null(table.schema.field(name).type)
    ]
    if table.schema.equals(SCHEMA, check_metadata=False) and "error" in names:
        error = table.column("error")
        fixed = failed_or_null(error)
        if fixed is error:
            return table.replace_schema_metadata(SCHEMA.metadata)
        return table.set_column(table.schema.get_field_index("error"), "error", fixed)
    have = set(names)
    arrays = []
    for f in SCHEMA:
        if f.name in have:
            col = table.column(f.name)
            arrays.append(col if col.type == f.type else col.cast(f.type))
        else:
            arrays.append(pa.nulls(n, f.type))
    fields = []
    for f in extra:
        registered = _fields.get(f.name)
        col = table.column(f.name)
        if registered is not None and col.type != registered.type:
            col = col.cast(registered.type)
        fields.append(registered or f.with_nullable(True))
        arrays.append(col)
    i = SCHEMA.get_field_index("error")
    arrays[i] = failed_or_null(arrays[i])
    schema = _with_extensions(fields) if fields else SCHEMA
    return pa.Table.from_arrays(arrays, schema=schema)
