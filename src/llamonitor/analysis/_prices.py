"""The prices of the cheaper models a report suggests, remembered on disk.

The ``cheaper_model`` suggestion prices calls again on a few candidate
models (``_suggest.CHEAPER_MODELS``). Their rates come from the
``genai-prices`` data, whose import and loading take longer than most of a
report's statements. So a candidate's per-token rates, once resolved, are
kept in a small JSON file of the user's cache directory, one per installed
``genai-prices`` data module (an update's data is read afresh); a later report reads
them from there and never imports the package.

The file is only a memo of the package's bundled data: it is not used when
``genai-prices`` is already imported in the process (its prices may have been
updated at run time), nor for a model priced by ``MonitorConfig.model_prices``
(those come first, as everywhere). It is written atomically; if it cannot be
read or written, the prices are resolved as if it did not exist.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
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


def cache_file() -> Path | None:
    """The memo for the installed ``genai-prices`` data (``None``: not installed)."""
    version = _data_version()
    if version is None:
        return None
    root = os.environ.get(CACHE_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(base) / "llamonitor")
    return Path(root) / f"candidate-prices-{version}.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".candidate-prices-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: resolve again next time


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
        kept = memo.get(_key(model, provider)) if _usable(model) else None
        if isinstance(kept, dict):
            out[(model, provider)] = pricing.Rates(
                float(kept["input"]), float(kept["output"]), float(kept["cache_read"]),
                float(kept["cache_write"]), str(kept["source"]),
            )
            continue
        if kept == _UNKNOWN:
            out[(model, provider)] = None
            continue
        if kept == _TIERED:  # only its being tiered matters here: not priced linearly
            out[(model, provider)] = pricing.Rates(0.0, 0.0, 0.0, 0.0, "genai-prices", _TIERED)
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
