"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package lists where each public name lives; the name's module is imported
at the name's first use, and so is a subpackage the first time it is reached
as an attribute (``import llamonitor; llamonitor.storage.parquet``). So
``import llamonitor`` and every ``llamonitor.<sub>`` import cost only what is
used: the decorator needs neither DuckDB nor the storage engines, and
``llamonitor --help`` none of it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def exports(
    package: str, names: Mapping[str, str], namespace: dict[str, Any], public: list[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: the package's ``__name__``.
        names: public name -> the module that defines it.
        namespace: the package's ``globals()`` (a loaded name is cached there).
        public: the package's ``__all__``.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            if name.startswith("__"):
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            try:  # a subpackage or module not imported yet
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # the next lookup is a plain module attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__
