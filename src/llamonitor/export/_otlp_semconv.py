"""Which GenAI semantic conventions the OTLP exporter speaks."""

from __future__ import annotations

import os
from collections.abc import Mapping

SEMCONV_LATEST = "latest"
SEMCONV_V1_36 = "v1.36"
SEMCONV_BOTH = "both"
SEMCONV_MODES = (SEMCONV_LATEST, SEMCONV_V1_36, SEMCONV_BOTH)
"""``latest``: the current GenAI conventions; ``v1.36``: the names of v1.36.0
(``gen_ai.system``, content as ``gen_ai.user.message`` / ``gen_ai.choice``
span events) for receivers that need them; ``both``: each fact under both names."""

OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
LATEST_OPT_IN = "gen_ai_latest_experimental"


def semconv_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The conventions ``OTEL_SEMCONV_STABILITY_OPT_IN`` asks for.

    ``gen_ai_latest_experimental`` in its list: the latest. The variable set
    without it: v1.36 (an application that uses the opt-in and leaves GenAI
    out gets the older names, as the OpenTelemetry GenAI instrumentations
    give it). Unset: the latest (llamonitor has no older output to keep).
    """
    env = os.environ if environ is None else environ
    raw = env.get(OPT_IN_ENV)
    if raw is None or not raw.strip():
        return SEMCONV_LATEST
    values = {v.strip() for v in raw.split(",")}
    return SEMCONV_LATEST if LATEST_OPT_IN in values else SEMCONV_V1_36
