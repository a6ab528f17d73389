"""Bounded windows over long text, so no analyser (Kiwi, a tokenizer) is handed one enormous
string: their cost per call grows faster than the length, and their memory with it."""

from __future__ import annotations

from collections.abc import Iterator


def windows(text: str, size: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` spans that cover ``text`` end to end, in order, each at most ``size``
    characters. A span ends after the last line break, else the last whitespace, in its second
    half; only a second half without whitespace is cut mid-word. Linear in ``len(text)``."""
    if size < 2:
        raise ValueError("size must be >= 2")
    start, n = 0, len(text)
    while start < n:
        end = min(start + size, n)
        if end < n:
            floor = start + size // 2
            cut = text.rfind("\n", floor, end)
            if cut < 0:
                cut = text.rfind(" ", floor, end)
            if cut < 0:
                cut = next((i for i in range(end - 1, floor - 1, -1) if text[i].isspace()), -1)
            if cut >= 0:
                end = cut + 1
        yield start, end
        start = end
