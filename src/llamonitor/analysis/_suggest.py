"""Suggestions: what to change, the figures behind it, and what it would save.

Four kinds, each computed from the recorded spans only:

``cheaper_model``
    Calls of a model whose output was short (at most
    :data:`~llamonitor.analysis._sql.SHORT_OUTPUT_TOKENS` tokens) priced
    again, with the same token counts, on each cheaper model of the same
    provider in :data:`CHEAPER_MODELS` (most capable first); the first that
    costs at least :data:`MIN_SWAP_SAVING` less is suggested. Saving: the
    calls' recorded cost minus their cost on that model. Prices come from
    ``llamonitor.llm.pricing`` (``genai-prices`` data, offline, and your
    ``model_prices`` overrides); a candidate with tiered prices is skipped.
    Where both models have scores of the same name (at least
    :data:`MIN_SCORE_SAMPLES` numeric ones each, see docs/scores.md), they are
    compared: a candidate whose mean is lower by more than
    :data:`SCORE_TOLERANCE` is not suggested, and one within it is suggested
    as "same score" (or "better score"), with the figures.
``cache``
    Successful calls whose prompt (``prompt_hash``) had already been sent to
    the same model within the scope. Saving: the cost and the time of those
    repeats (each prompt's first call is kept).
``errors``
    An operation failing at least :data:`ERROR_RATE_THRESHOLD` of the time
    (and at least :data:`MIN_ERRORS` times). Saving: the cost and the time of
    its failed spans.
``bottleneck``
    An operation holding at least :data:`BOTTLENECK_SHARE` of the critical
    path, whose time there beyond its median duration
    (:attr:`Bottleneck.excess_ms`) is at least :data:`BOTTLENECK_MIN_EXCESS`
    of it. Saving: that excess, an upper bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llamonitor.analysis._format import ms as _ms
from llamonitor.analysis._format import pct as _pct
from llamonitor.analysis._format import usd as _usd
from llamonitor.analysis._models import (
    Bottleneck,
    ErrorPattern,
    LatencyGroup,
    OperationErrors,
    RetryStats,
    Suggestion,
)
from llamonitor.analysis._sql import SHORT_OUTPUT_TOKENS

_OPENAI = ("gpt-4.1-mini", "gpt-4o-mini", "gpt-4.1-nano")
_GOOGLE = ("gemini-2.5-flash", "gemini-2.0-flash", "gemini-2.5-flash-lite")

CHEAPER_MODELS: dict[str, tuple[str, ...]] = {
    "openai": _OPENAI,
    "azure": _OPENAI,
    "anthropic": ("claude-haiku-4-5", "claude-3-5-haiku-latest"),
    "google": _GOOGLE,
    "gemini": _GOOGLE,
    "vertex_ai": _GOOGLE,
    "mistral": ("mistral-small-latest",),
}
"""Cheaper models to try per provider, most capable first (edit to taste)."""

MIN_SWAP_SAVING = 0.3
"""A cheaper model is suggested if it costs at least this fraction less."""

MIN_CALLS = 2
"""Fewer short calls (or repeated prompts) than this make no suggestion."""

MIN_SCORE_SAMPLES = 10
"""Numeric scores of one name each model needs before their means are compared."""

SCORE_TOLERANCE = 0.05
"""Two means differ when they are further apart than this times the larger of 1
and the current model's mean's size (0.05 on a 0-1 scale, 0.2 around 4 of 5)."""

ModelScores = dict[str, dict[str, tuple[int, float]]]
"""model -> score name -> (numeric scores, mean)."""


ERROR_RATE_THRESHOLD = 0.1
MIN_ERRORS = 2
BOTTLENECK_SHARE = 0.2
BOTTLENECK_MIN_EXCESS = 0.05
"""A bottleneck is suggested if its excess is at least this fraction of its critical time."""


Prices = dict[tuple[str, "str | None"], Any]
"""Candidate (model, provider) -> ``llamonitor.llm.pricing.Rates`` or ``None``."""


def _candidate_cost(rates: Any, row: dict[str, Any]) -> float | None:
    if rates is None or rates.model_price is not None:  # unknown, or tiered: not linear
        return None
    cost = rates.cost(
        int(row["short_input_tokens"] or 0),
        int(row["short_output_tokens"] or 0),
        int(row["short_cache_read_tokens"] or 0),
        int(row["short_cache_write_tokens"] or 0),
    )
    return float(cost.total_usd)


def _candidates(row: dict[str, Any]) -> tuple[str, ...]:
    """The cheaper models to price the short calls of a per-model row on (none if
    it has too few of them)."""
    model, provider = row["model"], row["provider"]
    if not model or not provider or int(row["short_calls"] or 0) < MIN_CALLS:
        return ()
    if float(row["short_cost_usd"] or 0.0) <= 0:
        return ()
    return tuple(c for c in CHEAPER_MODELS.get(str(provider).lower(), ()) if c != model)


def prepare_cheaper_models(model_rows: Sequence[dict[str, Any]]) -> Prices:
    """The prices :func:`cheaper_models` needs (see :mod:`._prices`: loading the
    price data takes longer than a report's statements; this runs beside them)."""
    from llamonitor.analysis import _prices

    return _prices.resolve([(c, row["provider"]) for row in model_rows for c in _candidates(row)])


def compare_scores(
    current: dict[str, tuple[int, float]], candidate: dict[str, tuple[int, float]]
) -> tuple[str, list[dict[str, Any]]] | None:
    """How ``candidate``'s scores compare with ``current``'s (score name ->
    (numeric scores, mean)): ``("worse" | "same" | "better", the figures of
    each name both have enough of)``, or ``None`` when no name is comparable."""
    compared = []
    for name in sorted(set(current) & set(candidate)):
        (n_cur, m_cur), (n_cand, m_cand) = current[name], candidate[name]
        if n_cur < MIN_SCORE_SAMPLES or n_cand < MIN_SCORE_SAMPLES:
            continue
        tolerance = SCORE_TOLERANCE * max(1.0, abs(m_cur))
        diff = m_cand - m_cur
        verdict = "worse" if diff < -tolerance else ("better" if diff > tolerance else "same")
        compared.append({
            "name": name, "verdict": verdict, "current_mean": m_cur, "candidate_mean": m_cand,
            "current_scores": n_cur, "candidate_scores": n_cand, "difference": diff,
            "tolerance": tolerance,
        })
    if not compared:
        return None
    verdicts = {c["verdict"] for c in compared}
    overall = "worse" if "worse" in verdicts else ("same" if "same" in verdicts else "better")
    return overall, compared


def _score_text(model: str, candidate: str, compared: list[dict[str, Any]]) -> str:
    parts = [
        f"{c['name']} {c['candidate_mean']:.3g} on {candidate} ({c['candidate_scores']:,} "
        f"scores) vs {c['current_mean']:.3g} on {model} ({c['current_scores']:,})"
        for c in compared
    ]
    return "Their scores agree within the tolerance: " + "; ".join(parts) + "."


def cheaper_models(
    model_rows: Sequence[dict[str, Any]],
    prices: Prices | None = None,
    scores: ModelScores | None = None,
) -> list[Suggestion]:
    """``cheaper_model`` suggestions from the profile's per-model rows
    (``prices``: from :func:`prepare_cheaper_models`, made here if not given;
    ``scores``: each model's scores, compared where both models have them)."""
    if prices is None:
        prices = prepare_cheaper_models(model_rows)
    scores = scores or {}
    out: list[Suggestion] = []
    for row in model_rows:
        model, provider = row["model"], row["provider"]
        current = float(row["short_cost_usd"] or 0.0)
        calls = int(row["short_calls"] or 0)
        for candidate in _candidates(row):
            cost = _candidate_cost(prices.get((candidate, provider)), row)
            if cost is None or current - cost < MIN_SWAP_SAVING * current:
                continue
            judged = compare_scores(scores.get(str(model), {}), scores.get(candidate, {}))
            if judged is not None and judged[0] == "worse":
                continue  # cheaper, but its answers score lower: not a swap to suggest
            all_calls = int(row["llm_calls"] or 0)
            out_tokens = int(row["short_output_tokens"] or 0)
            saving = current - cost
            title = f"Use {candidate} instead of {model} for short answers"
            check = "Check its answers are good enough first."
            extra: dict[str, Any] = {}
            if judged is not None:
                title += f": {judged[0]} score, {_pct(saving / current)} cheaper"
                check = _score_text(str(model), candidate, judged[1])
                extra = {"score_verdict": judged[0], "scores": judged[1]}
            out.append(
                Suggestion(
                    kind="cheaper_model",
                    title=title,
                    detail=(
                        f"{calls:,} of {all_calls:,} {model} calls "
                        f"({_pct(calls / all_calls if all_calls else 1.0)}) produced at most "
                        f"{SHORT_OUTPUT_TOKENS} output tokens ({out_tokens / calls:,.0f} on "
                        f"average). The same tokens on {candidate} cost {_usd(cost)} "
                        f"instead of {_usd(current)}: {_usd(saving)} less "
                        f"({_pct(saving / current)}). {check}"
                    ),
                    saving_usd=saving,
                    figures={
                        "model": model,
                        "provider": provider,
                        "candidate": candidate,
                        "short_calls": calls,
                        "calls": all_calls,
                        "short_output_max_tokens": SHORT_OUTPUT_TOKENS,
                        "input_tokens": int(row["short_input_tokens"] or 0),
                        "output_tokens": out_tokens,
                        "current_cost_usd": current,
                        "candidate_cost_usd": cost,
                        **extra,
                    },
                )
            )
            break
    return out


def cache(rows: Sequence[dict[str, Any]]) -> list[Suggestion]:
    """The ``cache`` suggestion from the repeated-prompt rows (at most one)."""
    if not rows:
        return []
    first = rows[0]
    repeats = int(first["repeats"])
    if repeats < MIN_CALLS - 1 or repeats <= 0:
        return []
    usd, ms = float(first["total_usd"] or 0.0), float(first["total_ms"] or 0.0)
    prompts = int(first["prompts"])
    top = [
        {
            "prompt_hash": r["prompt_hash"],
            "model": r["model"],
            "calls": int(r["n"]),
            "saving_usd": float(r["saving_usd"] or 0.0),
            "saving_ms": float(r["saving_ms"] or 0.0),
        }
        for r in rows
    ]
    return [
        Suggestion(
            kind="cache",
            title=f"Cache answers: {repeats:,} calls repeated an identical earlier prompt",
            detail=(
                f"{prompts:,} prompt(s) were sent more than once to the same model and "
                f"succeeded each time; answering the {repeats:,} repeats from a cache would "
                f"have saved {_usd(usd)} and {_ms(ms)} of calls. The most repeated: "
                + ", ".join(f"{t['prompt_hash'][:10]}… ({t['calls']} calls)" for t in top[:3])
                + "."
            ),
            saving_usd=usd,
            saving_ms=ms,
            figures={"repeated_calls": repeats, "prompts": prompts, "top": top},
        )
    ]


def errors(
    operations: Sequence[OperationErrors],
    failed: dict[str, tuple[float | None, float]],
    patterns: Sequence[ErrorPattern],
    retries: dict[str, RetryStats],
) -> list[Suggestion]:
    """``errors`` suggestions; ``failed`` maps an operation to (cost, ms) of its failures."""
    out: list[Suggestion] = []
    for o in operations:
        if o.errors < MIN_ERRORS or o.error_rate < ERROR_RATE_THRESHOLD:
            continue
        top_type = next(iter(o.error_types), "error")
        pattern = next((p for p in patterns if o.operation in p.operations), None)
        cost, ms = failed.get(o.operation, (None, 0.0))
        retry = retries.get(o.operation)
        detail = (
            f"{o.errors:,} of {o.spans:,} {o.operation} spans failed "
            f"({_pct(o.error_rate)}), mostly {top_type}"
            + (f' (most common message: "{pattern.pattern}")' if pattern else "")
            + f". The failed calls took {_ms(ms)}"
            + (f" and cost {_usd(cost)}" if cost else "")
            + (
                f"; {retry.after_error:,} retries followed a failure"
                if retry and retry.after_error
                else ""
            )
            + "."
        )
        out.append(
            Suggestion(
                kind="errors",
                title=f"Fix failures of {o.operation}: {_pct(o.error_rate)} of calls fail",
                detail=detail,
                saving_usd=cost if cost else None,
                saving_ms=ms,
                figures={
                    "operation": o.operation,
                    "spans": o.spans,
                    "errors": o.errors,
                    "error_rate": o.error_rate,
                    "error_types": dict(o.error_types),
                    "top_pattern": pattern.pattern if pattern else None,
                    "retries_after_error": retry.after_error if retry else 0,
                    "failed_cost_usd": cost,
                    "failed_ms": ms,
                },
            )
        )
    return out


def bottlenecks(
    items: Sequence[Bottleneck], latency: dict[str, LatencyGroup]
) -> list[Suggestion]:
    """``bottleneck`` suggestions from the critical-path figures."""
    out: list[Suggestion] = []
    for b in items:
        if b.share < BOTTLENECK_SHARE or b.excess_ms < BOTTLENECK_MIN_EXCESS * b.critical_ms:
            continue
        lat = latency.get(b.operation)
        spread = f" (p50 {_ms(lat.p50_ms)}, p95 {_ms(lat.p95_ms)})" if lat else ""
        out.append(
            Suggestion(
                kind="bottleneck",
                title=f"Speed up {b.operation}: {_pct(b.share)} of the critical path",
                detail=(
                    f"{b.operation} held {_ms(b.critical_ms)} of the traces' critical paths "
                    f"({_pct(b.share)}, {b.spans_on_path:,} spans). Bringing its calls slower "
                    f"than the median{spread} down to the median would shorten the traces by "
                    f"up to {_ms(b.excess_ms)}; so would running it in parallel with other "
                    "work, streaming, or a faster model."
                ),
                saving_ms=b.excess_ms,
                figures={
                    "operation": b.operation,
                    "share": b.share,
                    "critical_ms": b.critical_ms,
                    "spans_on_path": b.spans_on_path,
                    "p50_ms": lat.p50_ms if lat else None,
                    "p95_ms": lat.p95_ms if lat else None,
                    "excess_ms": b.excess_ms,
                },
            )
        )
    return out


def ranked(suggestions: list[Suggestion]) -> list[Suggestion]:
    """Largest saving first: dollars, then milliseconds."""
    return sorted(suggestions, key=lambda s: (-(s.saving_usd or 0.0), -(s.saving_ms or 0.0)))
