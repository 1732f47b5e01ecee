"""The pure helpers shared by the hot path and the worker."""

from __future__ import annotations

import json
import math
import random

import pytest

from llamonitor._records import error_facts, measure_text, safe_json

ALPHABET = " \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u2003\u3000ab\u00e9\u65e5."


def _definition(s: str) -> tuple[int, int, int, int]:
    lines = 0 if not s else s.count("\n") + (not s.endswith("\n"))
    return len(s), len(s.split()), len(s.encode("utf-8", "surrogatepass")), lines


def test_measure_text_matches_its_definition_on_random_text() -> None:
    """Chars, str.split() words, UTF-8 bytes and lines, for every kind of whitespace."""
    rng = random.Random(7)
    for _ in range(5000):
        s = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 60)))
        assert tuple(measure_text(s)) == _definition(s), repr(s)


@pytest.mark.parametrize("piece", ["ab cd\x1c", "word ", "x", "é ü\n", " "])
def test_measure_text_is_exact_across_its_1_mib_slices(piece: str) -> None:
    """A text longer than a slice counts words cut by a slice boundary once."""
    s = piece * (3_000_000 // len(piece))
    assert tuple(measure_text(s)) == _definition(s)


def test_safe_json_keeps_what_json_cannot_hold_as_repr() -> None:
    """NaN, sets, objects and cycles become strings; the result is strict JSON."""
    cyclic: list[object] = []
    cyclic.append(cyclic)
    out = safe_json({"nan": math.nan, "set": {1}, "cycle": cyclic, (1, 2): "tuple key"})
    assert out is not None
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["nan"] == "nan"
    assert data["set"] == "{1}"
    assert data["(1, 2)"] == "tuple key"
    assert safe_json({}) is None


def test_error_facts_never_raises() -> None:
    """An exception whose __str__ raises still yields a type and a message."""

    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    name, message = error_facts(Nasty())
    assert name.endswith("Nasty")
    assert "Nasty" in message
    assert error_facts(ValueError("x" * 5000)) == ("ValueError", "x" * 2000)
