"""Defensive reads of SDK response objects and dicts, shared by the usage modules.

The SDKs build responses without validation, so every value read is
type-checked (``_int``, ``_str``); a dict of a response's shape reads like the
SDK object (``_View``); a user object's computed attributes are not read
(``_attr``).
"""

from __future__ import annotations

import types
from collections import namedtuple
from typing import Any

Facts = dict[str, Any]


def _int(value: Any) -> int | None:
    if value.__class__ is int:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return None


def _str(value: Any) -> str | None:
    if value.__class__ is str:
        return value
    return str.__str__(value) if isinstance(value, str) else None


def _put(out: Facts, key: str, value: Any) -> None:
    if value is not None:
        out[key] = value


class _View:
    """Attribute access to a dict (missing keys read as ``None``), so one code
    path reads SDK objects and plain dicts of the same shape."""

    __slots__ = ("_llamonitor_d",)

    def __init__(self, d: dict[str, Any]) -> None:
        self._llamonitor_d = d

    def __getattr__(self, name: str) -> Any:
        return _view(self._llamonitor_d.get(name))


def _view(value: Any) -> Any:
    if isinstance(value, dict):
        return _View(value)
    if isinstance(value, list):
        return [_view(v) for v in value]
    return value


# Computed attributes (properties, descriptors) may do anything: the ``text`` of
# a streaming HTTP response reads, and so consumes, the body. They are read
# only on the LLM SDKs' own response classes, whose properties are pure.
_SDK_PACKAGES = frozenset({"openai", "anthropic"})
_Pair: Any = namedtuple("_Pair", "a")
_PLAIN_DESCRIPTORS = (types.MemberDescriptorType, type(_Pair.a))
_computed: dict[tuple[type, str], bool] = {}
_MAX_CACHED = 4096


def _is_computed(cls: type, name: str) -> bool:
    key = (cls, name)
    known = _computed.get(key)
    if known is not None:
        return known
    computed = False
    for klass in cls.__mro__:
        found = klass.__dict__.get(name, _computed)  # _computed: a "missing" marker
        if found is not _computed:
            computed = hasattr(type(found), "__get__") and not isinstance(found, _PLAIN_DESCRIPTORS)
            break
    if computed and cls.__module__.partition(".")[0] in _SDK_PACKAGES:
        computed = False
    if len(_computed) < _MAX_CACHED:
        _computed[key] = computed
    return computed


def _attr(obj: Any, name: str) -> Any:
    """``obj.name`` if it is plain data, else ``None``; one that raises holds no text."""
    try:
        if _is_computed(type(obj), name):
            return None
        return getattr(obj, name, None)
    except Exception:
        return None
