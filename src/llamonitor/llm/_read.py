"""Defensive reads of SDK response objects and dicts, shared by the usage modules.

The SDKs build responses without validation, so every value read is
type-checked (``_int``, ``_str``); a dict of a response's shape reads like the
SDK object (``_View``).
"""

from __future__ import annotations

from typing import Any

from llamonitor.instrument._extract import _attr as _attr

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
