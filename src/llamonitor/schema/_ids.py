"""How an id is shortened for display (the CLI, the console exporter).

llamonitor's 32-hex session and trace ids begin with the time (see
``llamonitor._handoff.refresh_id_time``): the traces of the same minute share
their first 8 characters. Their random end tells them apart, so a 32-hex id is
shown by its last characters (``llamonitor trace`` takes a prefix or a
suffix); any other id (a span id, an id of the application's own) by its first.
"""

from __future__ import annotations

import re

_HEX32 = re.compile(r"[0-9a-f]{32}")


def short_id(value: str, chars: int = 8) -> str:
    """``value`` shortened to ``chars`` characters for display."""
    if len(value) == 32 and _HEX32.fullmatch(value):
        return value[-chars:]
    return value[:chars]
