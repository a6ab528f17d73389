"""Korean-aware sentence boundaries with Kiwi (kiwipiepy); one analyser per process."""

from __future__ import annotations

from functools import cache

from ingest.text_windows import windows

KIWI_WINDOW = 4096  # characters given to Kiwi at a time: its cost grows faster than the length


@cache
def kiwi():
    from kiwipiepy import Kiwi

    return Kiwi()


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``. Kiwi only picks the boundaries: each sentence runs from one
    boundary to the next, so every character of ``text`` lands in exactly one sentence.

    Long text goes to Kiwi in windows of at most :data:`KIWI_WINDOW` characters (cut at a line
    break or a space where there is one), so the work is linear in the length; a window's end
    is a boundary too."""
    if not text.strip():
        return []
    starts: set[int] = set()
    for start, end in windows(text, KIWI_WINDOW):
        starts.add(start)
        if text[start:end].strip():
            starts.update(start + s.start for s in kiwi().split_into_sents(text[start:end]))
    bounds = [*sorted(starts), len(text)]
    pieces = (text[a:b].strip() for a, b in zip(bounds, bounds[1:]))
    return [p for p in pieces if p]
