"""The text metrics of a whole batch at once, on the worker thread.

Characters, words (exactly ``len(text.split())``), UTF-8 bytes and lines of
every text of a batch. Text by text in Python that is four scans at 1-2 ns a
byte (``str.count`` and ``bytes.translate`` are byte loops); here the texts of
a batch are joined, encoded, and counted by a few numpy passes per
``CHUNK_BYTES`` (SIMD, with the GIL released), about 6x less CPU for 1 KB texts.

Words: a word starts at a byte that is not whitespace after one that is, or at
the start of a text. In UTF-8 every byte of a non-ASCII character is a word
byte, except in the 19 non-ASCII whitespace characters ``str.split()`` knows
(U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F,
U+3000), found by their lead bytes. An ASCII control character that is not
whitespace (0-8, 14-27) sends its text to the exact path
(``_records.measure_text``), as does a text longer than a chunk.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from llamonitor._records import measure_text

CHUNK_BYTES = 512 * 1024
"""Text measured per numpy pass: its temporaries (a byte per byte of text)
stay in the CPU's cache, and the fixed cost of a pass is shared by many texts."""

_scratch = threading.local()


def _buffers(n: int) -> tuple[Any, Any, Any]:
    """Three boolean arrays of ``n`` for a chunk's passes, kept per thread: fresh
    ones of a few hundred KiB cost page faults on every batch (the allocator gives
    such blocks back to the system when they are freed), 5x the passes themselves."""
    held = getattr(_scratch, "buffers", None)
    if held is None or len(held[0]) < n:
        size = max(n, CHUNK_BYTES)
        held = _scratch.buffers = tuple(np.empty(size, np.bool_) for _ in range(3))
    return held[0][:n], held[1][:n], held[2][:n]


_SPACE = 32  # in ASCII, a byte > 32 is a word byte
_LOW = 28  # of the bytes < 28 only 9-13 are whitespace; the others are odd


def measure_texts(texts: list[str]) -> tuple[Any, Any, Any, Any]:
    """Characters, words, UTF-8 bytes and lines (int64 numpy arrays) of ``texts``."""
    n = len(texts)
    chars = np.fromiter(map(len, texts), np.int64, n)
    words = np.zeros(n, np.int64)
    sizes = chars.copy()  # the UTF-8 size of ASCII; chunks with others set theirs
    ends = np.cumsum(chars)
    long: list[int] = []  # measured alone: they hold no bytes of the batch's
    lows: list[Any] = []  # positions (in the bytes of the batch) of bytes < 28
    values: list[Any] = []  # and those bytes
    base = 0  # bytes of the batch before this chunk
    has_empty = not chars.all()
    i = 0
    while i < n:
        if chars[i] > CHUNK_BYTES:
            long.append(i)
            i += 1
            continue
        j = int(np.searchsorted(ends, ends[i] - chars[i] + CHUNK_BYTES, "right"))
        part = texts[i:j]
        joined = "".join(part)
        ascii = joined.isascii()  # O(1): the join is ASCII only if every text is
        if ascii:
            data = joined.encode("ascii")
            lens = chars[i:j]
        else:
            encoded = [t.encode("utf-8", "surrogatepass") for t in part]
            data = b"".join(encoded)
            lens = sizes[i:j] = np.fromiter(map(len, encoded), np.int64, j - i)
        # Kept until the next chunk's are made: freed at once, blocks this size go
        # back to the system, and the next ones cost a page fault every 4 KiB.
        _scratch.held = (joined, data)
        if data:
            d = np.frombuffer(data, np.uint8)
            heads = np.cumsum(lens) - lens
            rows: Any = slice(i, j)
            if has_empty:
                full = lens > 0
                heads, rows = heads[full], np.flatnonzero(full) + i
            word, starts, below = _buffers(len(d))
            words[rows] = _word_counts(d, heads, ascii, word, starts)
            np.less(d, _LOW, out=below)
            low = np.flatnonzero(below)
            values.append(d[low])
            low += base
            lows.append(low)
            base += len(d)
        i = j
    held = sizes.copy()
    held[long] = 0
    byte_ends = np.cumsum(held)  # where each text ends in the bytes of the batch
    low = np.concatenate(lows) if lows else np.zeros(0, np.int64)
    value = np.concatenate(values) if values else np.zeros(0, np.uint8)
    lines = _lines(byte_ends, held, low[value == 10])
    odd = (value < 9) | (value > 13)
    exact = long
    if odd.any():  # texts holding an ASCII control that is not whitespace
        exact = sorted({*long, *np.searchsorted(byte_ends, low[odd], "right").tolist()})
    for k in exact:
        m = measure_text(texts[k])
        words[k], sizes[k], lines[k] = m.word_count, m.byte_size, m.line_count
    return chars, words, sizes, lines


def _word_counts(d: Any, heads: Any, ascii: bool, word: Any, starts: Any) -> Any:
    """Words of the texts starting at ``heads`` (byte offsets, strictly
    increasing) of the UTF-8 bytes ``d``; ``word`` and ``starts``: scratch
    arrays of its length."""
    np.greater(d, _SPACE, out=word)
    if not ascii:
        _unicode_spaces(d, word)
    starts[0] = word[0]
    np.greater(word[1:], word[:-1], out=starts[1:])
    starts[heads] = word[heads]  # a text's first byte starts a word whatever came before
    return np.add.reduceat(starts.view(np.uint8), heads, dtype=np.int32)


def _unicode_spaces(d: Any, word: Any) -> None:
    """Clear ``word`` at the bytes of the Unicode whitespace characters."""
    lead = np.flatnonzero((d - np.uint8(0xC2)) <= 0x21)  # C2-E3, with wrap-around
    if not len(lead):
        return
    last = len(d) - 1
    b0 = d[lead]
    b1 = d[np.minimum(lead + 1, last)]
    b2 = d[np.minimum(lead + 2, last)]
    two = (b0 == 0xC2) & ((b1 == 0x85) | (b1 == 0xA0))
    e2 = (b0 == 0xE2) & (
        ((b1 == 0x80) & ((b2 <= 0x8A) | (b2 == 0xA8) | (b2 == 0xA9) | (b2 == 0xAF)))
        | ((b1 == 0x81) & (b2 == 0x9F))
    )
    three = e2 | ((b0 == 0xE1) & (b1 == 0x9A) & (b2 == 0x80))
    three |= (b0 == 0xE3) & (b1 == 0x80) & (b2 == 0x80)
    for at, width in ((lead[two], 2), (lead[three], 3)):
        for k in range(width):
            word[at + k] = False


def _lines(ends: Any, sizes: Any, newlines: Any) -> Any:
    """Lines of the texts ending at ``ends`` (of ``sizes`` bytes) in the bytes of
    the batch, whose newlines are at ``newlines``: one per newline, plus one
    for a last line without its newline."""
    bounds = np.zeros(len(ends) + 1, np.int64)
    bounds[1:] = ends
    lines = np.diff(np.searchsorted(newlines, bounds))
    last = ends - 1
    at = np.searchsorted(newlines, last)
    ends_with_newline = np.zeros(len(ends), np.bool_)
    inside = at < len(newlines)
    ends_with_newline[inside] = newlines[at[inside]] == last[inside]
    return lines + ((sizes > 0) & ~ends_with_newline)
