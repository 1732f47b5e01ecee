"""The prices of the cheaper models a report suggests, remembered on disk.

The ``cheaper_model`` suggestion prices calls again on a few candidate
models (``_suggest.CHEAPER_MODELS``). Their rates come from the
``genai-prices`` data, whose import and loading take longer than most of a
report's statements. So a candidate's per-token rates, once resolved, can be
kept in a small JSON file, one per installed ``genai-prices`` data module (an
update's data is read afresh); a later report reads them from there and never
imports the package.

Where, and when: in ``$LLMOPS_CACHE_DIR`` whenever that is set (library use
included); otherwise only while the ``llamonitor`` command line runs a report
(:func:`remembered`), in ``$XDG_CACHE_HOME/llamonitor`` or
``~/.cache/llamonitor``. An ``analyze()`` called in an application's own
process without ``LLMOPS_CACHE_DIR`` neither reads nor writes a file: it
resolves the prices each time. Without a home directory (``Path.home()``
fails) there is no memo either.

The file is only a memo of the package's bundled data: it is not used when
``genai-prices`` is already imported in the process (its prices may have been
updated at run time), nor for a model priced by ``MonitorConfig.model_prices``
(those come first, as everywhere). It is written atomically (a temporary
``.candidate-prices-*`` file beside it, removed if the write fails); if it
cannot be read or written, the prices are resolved as if it did not exist,
and an entry of the wrong shape (hand-edited, another version's) is ignored
and resolved again, never used.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llamonitor.llm import pricing

CACHE_ENV = "LLMOPS_CACHE_DIR"
"""Where the file goes instead of ``$XDG_CACHE_HOME/llamonitor`` (or ``~/.cache/llamonitor``)."""

_UNKNOWN = "unknown"  # no price known
_TIERED = "tiered"  # priced per call by the package itself


def _data_version() -> str | None:
    """Which ``genai-prices`` data is installed: the size and time of its data
    module (found without importing the package, and without reading every
    installed distribution's metadata, which takes longer)."""
    try:
        spec = importlib.util.find_spec("genai_prices")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        st = (Path(next(iter(spec.submodule_search_locations))) / "data.py").stat()
    except OSError:
        return None
    return f"{st.st_size}-{st.st_mtime_ns}"


_CLI = False  # set by the command line while it runs a report (see remembered())


@contextmanager
def remembered() -> Iterator[None]:
    """Use the memo in the default cache directory for what runs inside (the
    command line's report: a process of llamonitor's own, not an application's)."""
    global _CLI
    before, _CLI = _CLI, True
    try:
        yield
    finally:
        _CLI = before


def cache_file() -> Path | None:
    """The memo for the installed ``genai-prices`` data (``None``: not installed,
    no memo outside the command line without ``LLMOPS_CACHE_DIR``, or no home)."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        if not _CLI:
            return None
        base = os.environ.get("XDG_CACHE_HOME")
        if not base:
            try:
                base = str(Path.home() / ".cache")
            except (RuntimeError, KeyError, ImportError, OSError):
                return None  # no home directory: no memo
        root = str(Path(base) / "llamonitor")
    version = _data_version()
    if version is None:
        return None
    return Path(root) / f"candidate-prices-{version}.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".candidate-prices-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, sort_keys=True)
        os.replace(tmp, path)
        tmp = None
    except (OSError, ValueError, TypeError):
        pass  # a read-only home: resolve again next time
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


_RATES = ("input", "output", "cache_read", "cache_write")


def _rate(value: object) -> float | None:
    """A per-token rate as the memo keeps it: a finite number >= 0 (not a bool,
    not a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _kept(entry: object) -> tuple[bool, Any]:
    """``(True, rates or None)`` for a well-formed memo entry, ``(False, None)``
    for anything else (to resolve again)."""
    if entry == _UNKNOWN:
        return True, None
    if entry == _TIERED:  # only its being tiered matters here: not priced linearly
        return True, pricing.Rates(0.0, 0.0, 0.0, 0.0, "genai-prices", _TIERED)
    if not isinstance(entry, dict) or entry.get("source") != "genai-prices":
        return False, None  # the memo keeps the package's prices only
    values: list[float] = []
    for name in _RATES:
        rate = _rate(entry.get(name))
        if rate is None:
            return False, None
        values.append(rate)
    return True, pricing.Rates(values[0], values[1], values[2], values[3], "genai-prices")


def _key(model: str, provider: str | None) -> str:
    return f"{provider or ''}|{model}"


def _usable(model: str) -> bool:
    from llamonitor.llm._settings import SETTINGS

    return "genai_prices" not in sys.modules and model not in SETTINGS.model_prices


def resolve(candidates: list[tuple[str, str | None]]) -> dict[tuple[str, str | None], Any]:
    """The rates (``pricing.Rates`` or ``None``) of each ``(model, provider)``,
    from the memo where it has them, else from ``llamonitor.llm.pricing``
    (and then remembered). A tiered price comes back with a placeholder
    ``model_price``: its calls are not priced again."""
    path = cache_file()
    memo = _read(path) if path is not None else {}
    out: dict[tuple[str, str | None], Any] = {}
    added = False
    for model, provider in candidates:
        if _usable(model):
            ok, kept = _kept(memo.get(_key(model, provider)))
            if ok:
                out[(model, provider)] = kept
                continue
        rates = pricing.rates(model, provider)
        out[(model, provider)] = rates
        if rates is None or rates.source != "override":
            memo[_key(model, provider)] = (
                _UNKNOWN if rates is None
                else _TIERED if rates.model_price is not None
                else {"input": rates.input, "output": rates.output,
                      "cache_read": rates.cache_read, "cache_write": rates.cache_write,
                      "source": rates.source}
            )
            added = True
    if added and path is not None:
        _write(path, memo)
    return out
