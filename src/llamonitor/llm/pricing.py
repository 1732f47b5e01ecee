"""What an LLM call cost: prices from ``genai-prices``, user overrides, no guesses.

Prices come from the `genai-prices <https://pypi.org/project/genai-prices/>`_
package, which ships its price data (nothing is downloaded at run time), and
from ``MonitorConfig.model_prices`` for private or fine-tuned models, which
win. A model whose price is unknown gets no cost -- the ``cost_usd`` column
stays null -- and one warning naming the model, never a guessed number.

Token conventions are OpenTelemetry's: ``input_tokens`` includes the cached
ones (``cache_read_tokens`` read from the provider's cache, billed at the
cache-read price; ``cache_write_tokens`` written to it, billed at the
cache-write price); ``output_tokens`` includes reasoning tokens.

Looking a model up costs about 100 µs in ``genai-prices``, so each
``(provider, model)`` is resolved once per process into per-token rates, and
the worker prices a batch with float arithmetic. Tiered prices (a different
rate past some context size) are priced row by row with the package's own
calculation.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

logger = logging.getLogger("llamonitor.pricing")

_M = 1_000_000


class Cost(NamedTuple):
    """USD cost of one call and where its price came from."""

    input_usd: float
    output_usd: float
    total_usd: float
    source: str  # "genai-prices" or "override"


@dataclass(frozen=True)
class Rates:
    """Per-token USD rates of one model, or the package's price for tiered models."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    source: str
    model_price: Any = None  # a genai_prices ModelPrice when the price is tiered

    def cost(
        self, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
    ) -> Cost:
        if self.model_price is not None:
            return _exact(self.model_price, input_tokens, output_tokens, cache_read, cache_write)
        uncached = max(0, input_tokens - cache_read - cache_write)
        cin = uncached * self.input + cache_read * self.cache_read + cache_write * self.cache_write
        cout = output_tokens * self.output
        return Cost(cin, cout, cin + cout, self.source)


_lock = threading.Lock()
_cache: dict[tuple[str | None, str], Rates | None] = {}
_warned: set[str] = set()


def reset() -> None:
    """Forget resolved prices (the overrides changed)."""
    with _lock:
        _cache.clear()


# Our provider column -> genai-prices provider id, where they differ.
_PROVIDER_IDS = {"gemini": "google", "vertex_ai": "google-vertex", "bedrock": "aws-bedrock"}


def _usage(i: int, o: int, cr: int, cw: int) -> Any:
    from genai_prices import Usage

    kw = {"input_tokens": i, "output_tokens": o}
    if cr:
        kw["cache_read_tokens"] = cr
    if cw:
        kw["cache_write_tokens"] = cw
    return Usage(**kw)


def _exact(model_price: Any, i: int, o: int, cr: int, cw: int) -> Cost:
    out = model_price.calc_price(_usage(i, o, cr, cw))
    cin, cout = float(out["input_price"]), float(out["output_price"])
    return Cost(cin, cout, float(out["total_price"]), "genai-prices")


def _from_package(model: str, provider: str | None) -> Rates | None:
    from genai_prices import calc_price
    from genai_prices.types import TieredPrices

    pid = _PROVIDER_IDS.get(provider, provider) if provider else None
    result = None
    for attempt in (pid, None) if pid else (None,):
        try:
            result = calc_price(_usage(_M, 0, 0, 0), model_ref=model, provider_id=attempt)
            break
        except LookupError:
            continue
    if result is None:
        return None
    mp = result.model_price
    if any(isinstance(v, TieredPrices) for v in vars(mp).values()):
        return Rates(0.0, 0.0, 0.0, 0.0, "genai-prices", mp)

    def rate(i: int, o: int, cr: int, cw: int, key: str) -> float:
        prices: Any = mp.calc_price(_usage(i, o, cr, cw))
        value: Decimal = prices[key]
        return float(value) / _M

    return Rates(
        input=rate(_M, 0, 0, 0, "input_price"),
        output=rate(0, _M, 0, 0, "output_price"),
        cache_read=rate(_M, 0, _M, 0, "input_price"),
        cache_write=rate(_M, 0, 0, _M, "input_price"),
        source="genai-prices",
    )


def warn_unknown(model: str, provider: str | None) -> None:
    """Log, once per model, that its price is unknown."""
    with _lock:
        if model in _warned:
            return
        _warned.add(model)
    logger.warning(
        "llamonitor: no price known for model %r%s; its cost_usd is left empty. "
        "Add it to MonitorConfig.model_prices to price it.",
        model,
        f" (provider {provider!r})" if provider else "",
    )


def rates(model: str, provider: str | None = None) -> Rates | None:
    """The per-token rates of ``model`` (user override first), or ``None``."""
    key = (provider, model)
    try:
        return _cache[key]
    except KeyError:
        pass
    from llamonitor.llm._settings import SETTINGS

    override = SETTINGS.model_prices.get(model)
    if override is not None:
        cached = override.cached_input_per_million
        found: Rates | None = Rates(
            input=override.input_per_million / _M,
            output=override.output_per_million / _M,
            cache_read=(override.input_per_million if cached is None else cached) / _M,
            cache_write=override.input_per_million / _M,
            source="override",
        )
    else:
        try:
            found = _from_package(model, provider)
        except Exception as exc:  # a price-data problem must not stop the worker
            logger.warning("llamonitor: pricing %r failed: %r; cost left empty", model, exc)
            found = None
    with _lock:
        _cache[key] = found
    return found


def cost(
    model: str,
    input_tokens: int | None,
    output_tokens: int | None,
    *,
    provider: str | None = None,
    cache_read_tokens: int | None = None,
    cache_write_tokens: int | None = None,
) -> Cost | None:
    """USD cost of one call, or ``None`` when the model's price is unknown
    (warned once) or no token count is known. A missing count of one side is
    taken as 0."""
    if input_tokens is None and output_tokens is None:
        return None
    r = rates(model, provider)
    if r is None:
        warn_unknown(model, provider)
        return None
    return r.cost(
        input_tokens or 0, output_tokens or 0, cache_read_tokens or 0, cache_write_tokens or 0
    )


_COST_COLUMNS = ("input_cost_usd", "output_cost_usd", "cost_usd", "cost_source")


def fill_costs(cols: dict[str, Any], n: int, column: Any) -> None:
    """Price the rows of a batch being converted (worker thread).

    ``cols`` maps column names to lists; ``column(cols, name, n)`` returns a
    mutable list for a column. Rows that already carry a ``cost_usd`` (set by
    the user) keep it.
    """
    if cols.get("response_model") is None and cols.get("model") is None:
        return
    model_col = cols.get("model") or [None] * n
    response_col = cols.get("response_model") or [None] * n
    ins = cols.get("input_tokens") or [None] * n
    outs = cols.get("output_tokens") or [None] * n
    provider_col = cols.get("provider") or [None] * n
    reads = cols.get("cache_read_tokens") or [None] * n
    writes = cols.get("cache_write_tokens") or [None] * n
    have = cols.get("cost_usd")
    for i in range(n):
        if (ins[i] is None and outs[i] is None) or not (response_col[i] or model_col[i]):
            continue
        if have is not None and have[i] is not None:
            if cols.get("cost_source") is None or cols["cost_source"][i] is None:
                column(cols, "cost_source", n)[i] = "user"
            continue
        # The response's (dated) model name first, then the one asked for.
        found = None
        for model in (response_col[i], model_col[i]):
            if model and found is None:
                found = rates(model, provider_col[i])
        if found is None:
            warn_unknown(response_col[i] or model_col[i], provider_col[i])
            continue
        c = found.cost(ins[i] or 0, outs[i] or 0, reads[i] or 0, writes[i] or 0)
        if c is not None:
            for name, value in zip(_COST_COLUMNS, c, strict=True):
                column(cols, name, n)[i] = value


def price_arrays(cols: dict[str, Any], n: int) -> dict[str, Any] | None:
    """The cost columns of a batch as Arrow arrays, priced per distinct
    (response model, model, provider) with column arithmetic: what
    :func:`fill_costs` gives row by row, to the bit (the same operations in
    the same order), for a receiver's table.

    ``cols`` maps column names to lists of ``n`` values (left unchanged).
    Returns ``{column: pa.Array}`` for ``input_cost_usd``, ``output_cost_usd``,
    ``cost_usd`` and ``cost_source``, or ``None`` when :func:`fill_costs` must
    price it (a tiered price: row by row).
    """
    from itertools import repeat

    import pyarrow as pa
    import pyarrow.compute as pc

    model_col = cols.get("model")
    response_col = cols.get("response_model")
    provider_col = cols.get("provider")
    keys = list(zip(
        repeat(None, n) if response_col is None else response_col,
        repeat(None, n) if model_col is None else model_col,
        repeat(None, n) if provider_col is None else provider_col, strict=True,
    ))
    groups = list(dict.fromkeys(keys))
    found: list[Rates | None] = []
    for response, model, provider in groups:
        r = None
        for name in (response, model):
            if name and r is None:
                r = rates(name, provider)
        if r is not None and r.model_price is not None:
            return None
        found.append(r)
    one = len(groups) == 1  # the usual request: one model; scalars, no per-row lookup
    rows = pa.array([0] * n if one else list(map(
        {k: i for i, k in enumerate(groups)}.__getitem__, keys)), pa.int32())

    def per_group(values: list[Any], kind: Any) -> Any:
        """Each row's group's value: a scalar for one group, else an array."""
        return pa.scalar(values[0], kind) if one else pc.take(pa.array(values, kind), rows)

    def rate(field: str) -> Any:
        return per_group([None if r is None else getattr(r, field) for r in found], pa.float64())

    def ints(name: str) -> Any:
        col = cols.get(name)
        return pa.nulls(n, pa.int64()) if col is None else pa.array(col, pa.int64())

    ins, outs = ints("input_tokens"), ints("output_tokens")
    named = per_group([bool(g[0] or g[1]) for g in groups], pa.bool_())
    due = pc.and_(pc.or_(pc.is_valid(ins), pc.is_valid(outs)), named)  # tokens and a model
    user = None  # rows that carry their own cost: kept, cost_source "user"
    if cols.get("cost_usd") is not None:
        user = pc.and_(due, pc.is_valid(pa.array(cols["cost_usd"], pa.float64())))
        due = pc.and_(due, pc.invert(user))
    priced = pc.and_(due, pc.is_valid(rate("input")))
    if None in found:  # each unknown model due a price: warned once, as row by row
        for g in pc.unique(pc.filter(rows, due)).to_pylist():
            response, model, provider = groups[g]
            if found[g] is None:
                warn_unknown(response or model, provider)

    zero = pa.scalar(0, pa.int64())
    uncached = i = pc.fill_null(ins, zero)
    cin = pc.multiply(i, rate("input"))
    if cols.get("cache_read_tokens") is not None or cols.get("cache_write_tokens") is not None:
        cr = pc.fill_null(ints("cache_read_tokens"), zero)
        cw = pc.fill_null(ints("cache_write_tokens"), zero)
        uncached = pc.max_element_wise(pc.subtract_checked(pc.subtract_checked(i, cr), cw), zero)
        cin = pc.add(pc.add(pc.multiply(uncached, rate("input")),
                            pc.multiply(cr, rate("cache_read"))),
                     pc.multiply(cw, rate("cache_write")))
    # (without cache counts: x + 0 * rate + 0 * rate is x, as row by row)
    cout = pc.multiply(pc.fill_null(outs, zero), rate("output"))
    sources = per_group([None if r is None else r.source for r in found], pa.string())

    def kept(name: str, kind: Any) -> Any:
        col = cols.get(name)
        return pa.scalar(None, kind) if col is None else pa.array(col, kind)

    source = kept("cost_source", pa.string())
    if user is not None:
        source = pc.if_else(pc.and_(user, pc.is_null(source)), pa.scalar("user", pa.string()),
                            source)
    out = {
        "input_cost_usd": pc.if_else(priced, cin, kept("input_cost_usd", pa.float64())),
        "output_cost_usd": pc.if_else(priced, cout, kept("output_cost_usd", pa.float64())),
        "cost_usd": pc.if_else(priced, pc.add(cin, cout), kept("cost_usd", pa.float64())),
        "cost_source": pc.if_else(priced, sources, source),
    }
    return {k: v if isinstance(v, pa.Array) else pa.repeat(v, n) for k, v in out.items()}
