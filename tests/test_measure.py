"""The worker's batch text metrics: exactly the per-text definition, for every
kind of text (ASCII, Unicode whitespace and its near misses, controls, empty,
longer than a chunk), however the batch is cut into chunks."""

from __future__ import annotations

import random

import pytest

from llamonitor.transport import _measure

WHITESPACE = " \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + (
    "".join(chr(c) for c in range(0x2000, 0x200B))
)
# Share lead bytes (and second bytes) with the whitespace above, but are words.
NEAR_MISSES = "\xa1\xa9\u1681\u200b\u2010\u201c\u2026\u2030\u205e\u2060\u3001\u3002\u180e"
WORDS = "abcXYZ.\u00e9\u65e5\U0001f600\ud800"  # \ud800: a lone surrogate
CONTROLS = "\x00\x01\x08\x0e\x1b\x7f"
ALPHABETS = [
    WHITESPACE + WORDS,
    WHITESPACE + NEAR_MISSES + WORDS,
    " \n\tab.",
    " \n" + CONTROLS + "ab",
    "ab",
]


def _measured(texts: list[str]) -> list[tuple[int, ...]]:
    chars, words, sizes, lines = (column.tolist() for column in _measure.measure_texts(texts))
    return list(zip(chars, words, sizes, lines, strict=True))


def _definition(s: str) -> tuple[int, int, int, int]:
    lines = 0 if not s else s.count("\n") + (not s.endswith("\n"))
    return len(s), len(s.split()), len(s.encode("utf-8", "surrogatepass")), lines


@pytest.mark.parametrize("chunk", [1, 5, 64, 4096, _measure.CHUNK_BYTES])
def test_batch_metrics_equal_the_definition_of_each_text(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chars, len(text.split()) words, UTF-8 bytes (surrogatepass) and lines, text by text."""
    monkeypatch.setattr(_measure, "CHUNK_BYTES", chunk)
    rng = random.Random(chunk)
    for _ in range(150):
        texts = []
        for _ in range(rng.randint(1, 30)):
            alphabet = rng.choice(ALPHABETS)
            size = rng.choice([0, 1, 2, 3, 7, 40, 300])
            texts.append("".join(rng.choice(alphabet) for _ in range(size)))
        assert _measured(texts) == [_definition(t) for t in texts], texts


def test_a_batch_of_one_kind_of_text_matches_too() -> None:
    """All ASCII, all empty, all Unicode, one text longer than a chunk."""
    long = "word \u3000" * (_measure.CHUNK_BYTES // 3)
    for texts in (["a b\n"] * 1000, [""] * 10, ["\u3000x\u2003y\u00a0"] * 50, [long, "x", long]):
        assert _measured(texts) == [_definition(t) for t in texts]
