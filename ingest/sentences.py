"""Korean-aware sentence boundaries with Kiwi (kiwipiepy); one analyser per process."""

from __future__ import annotations

from functools import cache


@cache
def kiwi():
    from kiwipiepy import Kiwi

    return Kiwi()


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``. Kiwi only picks the boundaries: each sentence runs from one
    boundary to the next, so every character of ``text`` lands in exactly one sentence."""
    if not text.strip():
        return []
    starts = sorted({0, *(s.start for s in kiwi().split_into_sents(text))})
    bounds = [*starts, len(text)]
    pieces = (text[a:b].strip() for a, b in zip(bounds, bounds[1:]))
    return [p for p in pieces if p]
