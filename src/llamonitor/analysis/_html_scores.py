"""The scores section of the HTML report (``render_html``), from ``Report.scores``."""

from __future__ import annotations

from typing import Any

from llamonitor.analysis import _svg as svg
from llamonitor.analysis._format import label as key_label
from llamonitor.analysis._format import pct

MAX_TREND_CHARTS = 6


def _mean(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _labels(labels: list[dict[str, Any]]) -> str:
    return ", ".join(f"{x['label']} {pct(x['share'])}" for x in labels[:4])


def scores_html(scores: dict[str, Any], table: Any, card: Any, kpi: Any) -> str:
    """The ``<section id="scores">`` ("" without scores); ``table``/``card``/``kpi``
    are the page's own builders (every text goes through their escaping)."""
    if not scores:
        return ""
    names = table(
        ["score", "count", "numeric", "mean", "median", "min", "max", "labels"],
        [(g["name"], f"{g['count']:,}", f"{g['numeric']:,}", _mean(g["mean"]),
          _mean(g["median"]), _mean(g["min"]), _mean(g["max"]), _labels(g["labels"]))
         for g in scores["names"]],
        text=(0, 7), wrap=(7,),
    )
    cards = [card("score distributions", names, wide=True)]
    for dim, groups in scores["by"].items():
        title = dim.replace("_", " ")
        cards.append(card(f"scores by {title}", table(
            ["score", title, "count", "mean", "labels"],
            [(g["name"], key_label(g["key"]), f"{g['count']:,}", _mean(g["mean"]),
              _labels(g["labels"])) for g in groups],
            text=(0, 1, 4), wrap=(4,),
        )))
    trend = scores["trend"]
    series: dict[str, list[dict[str, Any]]] = {}
    for p in trend["points"]:
        if p["mean"] is not None:
            series.setdefault(p["name"], []).append(p)
    for name, points in list(series.items())[:MAX_TREND_CHARTS]:
        if len(points) > 1:
            chart = svg.lines([p["start"] for p in points],
                              [(name, [float(p["mean"]) for p in points])],
                              label=f"mean {name}", fmt=_mean)
            cards.append(card(f"mean {name} per {trend['bucket']}", chart))
    unmatched = f"{scores['unmatched']:,}"
    return str(
        '<section id="scores"><h2>Scores</h2><div class="kpis">'
        + kpi(f"{scores['scores']:,}", "scores") + kpi(f"{len(scores['names']):,}", "score names")
        + kpi(unmatched, "on spans outside the scope")
        + '</div><div class="grid" style="margin-top:16px">' + "".join(cards)
        + "</div></section>"
    )
