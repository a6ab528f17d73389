"""Korean-aware sentence boundaries and morphemes with Kiwi (kiwipiepy); one analyser per process.

One Kiwi analysis of a text serves both users of it: the chunker's sentence boundaries and the
keyword channel's morphemes (:func:`analyse`), instead of one pass to split and another over
every chunk to tokenize.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from bisect import bisect_left
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

from ingest.text_windows import windows

KIWI_WINDOW = 4096  # characters given to Kiwi at a time: its cost grows faster than the length


@cache
def kiwi():
    from kiwipiepy import Kiwi  # lazy: Kiwi (~480 MB), where text is analysed

    # One worker: a parser process analyses one text at a time, and Kiwi's default thread pool
    # only adds hand-offs (measured: same CPU time, more wall time on a busy machine).
    analyser = Kiwi(num_workers=1)
    # Kiwi loads its language model on the first analysis (~1.5 s): do it here, once per process,
    # so that forked parser processes inherit it and no document or query pays it.
    analyser.analyze("준비 문장입니다.")
    return analyser


def release_kiwi() -> None:
    """Drop this process's analyser and hand its memory back to the system (~480 MB).

    For a process that has forked its parsers and analyses no text itself (a CLI batch ingest):
    the forked parsers keep their copy. Freeing the analyser alone returns little: most of its
    model sits in the heap of the mimalloc that kiwipiepy links, the rest in glibc's, and both
    keep freed pages until told to return them (measured: 524 MB RSS with Kiwi, 382 after
    freeing, 282 after glibc's trim, 35 after mimalloc's collect). A later :func:`kiwi` loads
    it again."""
    if not kiwi.cache_info().currsize:
        return
    kiwi.cache_clear()
    gc.collect()  # the analyser goes with its last reference, not at some later collection
    libc = ctypes.util.find_library("c")
    if libc is not None:
        getattr(ctypes.CDLL(libc), "malloc_trim", lambda _pad: 0)(0)
    import _kiwipiepy  # lazy: Kiwi (~480 MB), where text is analysed

    collect = getattr(ctypes.CDLL(_kiwipiepy.__file__), "mi_collect", None)  # absent in a build without mimalloc
    if collect is not None:
        collect(ctypes.c_bool(True))


class Morph(NamedTuple):
    """One morpheme: its surface form, its Sejong tag and where it starts in the analysed text."""

    form: str
    tag: str
    start: int


@dataclass(frozen=True)
class Analysis:
    """A text's sentences (``(start, end)`` spans, stripped, covering every non-space character
    once) and its morphemes, in order."""

    sentences: list[tuple[int, int]]
    morphs: list[Morph]

    def morphs_in(self, start: int, end: int) -> list[Morph]:
        """The morphemes that start inside ``[start, end)``."""
        starts = self._starts()
        return self.morphs[bisect_left(starts, start):bisect_left(starts, end)]

    def _starts(self) -> list[int]:
        cached = self.__dict__.get("_starts_cache")
        if cached is None:
            cached = [m.start for m in self.morphs]
            object.__setattr__(self, "_starts_cache", cached)
        return cached


def analyse(text: str) -> Analysis:
    """Sentences and morphemes of ``text`` from one Kiwi pass. Kiwi only picks the boundaries:
    each sentence runs from one boundary to the next, so every character of ``text`` lands in
    exactly one sentence.

    Long text goes to Kiwi in windows of at most :data:`KIWI_WINDOW` characters (cut at a line
    break or a space where there is one), so the work is linear in the length; a window's end
    is a boundary too."""
    if not text.strip():
        return Analysis([], [])
    starts: set[int] = set()
    morphs: list[Morph] = []
    for start, end in windows(text, KIWI_WINDOW):
        starts.add(start)
        if text[start:end].strip():
            for sentence in kiwi().split_into_sents(text[start:end], return_tokens=True):
                starts.add(start + sentence.start)
                morphs.extend(Morph(t.form, t.tag, start + t.start) for t in sentence.tokens)
    morphs.sort(key=lambda m: m.start)  # sentences come in order; sub-sentences could interleave
    bounds = [*sorted(starts), len(text)]
    spans = []
    for a, b in zip(bounds, bounds[1:]):
        piece = text[a:b]
        stripped = piece.strip()
        if stripped:
            first = a + (len(piece) - len(piece.lstrip()))
            spans.append((first, first + len(stripped)))
    return Analysis(spans, morphs)
