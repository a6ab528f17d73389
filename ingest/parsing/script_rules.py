"""Classify paragraphs without English NLP when they are not English.

unstructured decides whether a paragraph is narrative text or a title with English heuristics
that run spaCy (sentence splitting, part-of-speech tags looking for an English verb) on every
paragraph. On Korean text that costs seconds per document and answers at random: the English
tagger finds a "verb" in some Korean sentences and not in others. For a paragraph whose letters
are not mostly Latin, korag answers the same two questions with rules that need no model:

* narrative: it reads as a sentence (ends like one — …다. …요? —, holds a sentence end inside,
  or is longer than a heading);
* title: a short line (at most 12 words, mostly letters, no trailing comma, no URL or e-mail
  address) that does not read as a sentence and carries no Korean heading marker — a marked
  line (제1장, □, 가. …) is left to :func:`ingest.parsing.korean_headings.heading_depth`, which
  also gives it its depth.

Latin-script paragraphs keep unstructured's own functions, unchanged, except inside a mostly
Korean text or PDF page (:func:`korean_document`), where they follow korag's rules too.
:func:`install` puts the script-aware functions into every unstructured partitioner korag uses
(the package is pinned).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache

from ingest.parsing.korean_headings import heading_depth, reads_as_sentence

_TITLE_MAX_WORDS = 12  # unstructured's own limit
_MIN_ALPHA = 0.5  # share of letters among non-space characters, as unstructured requires
_LINK = re.compile(r"://|www\.|\S@\S")  # a URL or an e-mail address: a reference, not a heading
_KOREAN_DOCUMENT: ContextVar[bool] = ContextVar("korag_korean_document", default=False)
_SENTENCE_INSIDE = re.compile(r"[가-힣A-Za-z][.!?]\s+\S")  # "…있다. 쿠팡이…": two sentences, no title
# (module, function) pairs: every place unstructured classifies text with spaCy behind it
_TARGETS: tuple[tuple[str, str], ...] = (
    ("unstructured.partition.text", "is_possible_narrative_text"),
    ("unstructured.partition.text", "is_possible_title"),
    ("unstructured.partition.html.parser", "is_possible_narrative_text"),
    ("unstructured.partition.docx", "is_possible_narrative_text"),
    ("unstructured.partition.pptx", "is_possible_narrative_text"),
    ("unstructured.partition.pptx", "is_possible_title"),
    ("unstructured.partition.xlsx", "is_possible_narrative_text"),
    ("unstructured.partition.xlsx", "is_possible_title"),
)


_LATIN = re.compile(r"[A-Za-z]")
_HANGUL = re.compile("[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")  # syllables and jamo


def _letters(text: str) -> tuple[int, int]:
    """(Latin letters, Hangul characters) in ``text``."""
    return len(_LATIN.findall(text)), len(_HANGUL.findall(text))


def needs_english_nlp(text: str) -> bool:
    """True when Latin letters outnumber Hangul in ``text``: only then do unstructured's English
    heuristics (and spaCy) have anything to say."""
    latin, hangul = _letters(text)
    return latin > hangul


def mostly_hangul(text: str) -> bool:
    """True when ``text`` (a whole document or page) has Hangul and no more Latin letters than it."""
    latin, hangul = _letters(text)
    return hangul > 0 and latin <= hangul


@contextmanager
def korean_document(text: str) -> Iterator[None]:
    """Inside, when ``text`` (the whole document or page) is mostly Hangul, every paragraph of it
    is classified by korag's rules, its Latin-script lines too: a brand name, a citation or an
    English phrase in a Korean document is not worth an English tagger (it cost ~5 ms of spaCy
    per AutoRAG passage, a third of the parse). Outside, or for a mostly Latin document, each
    paragraph goes by its own script as before."""
    token = _KOREAN_DOCUMENT.set(mostly_hangul(text))
    try:
        yield
    finally:
        _KOREAN_DOCUMENT.reset(token)


def _mostly_letters(text: str) -> bool:
    chars = [c for c in text if not c.isspace()]
    return bool(chars) and sum(c.isalpha() for c in chars) / len(chars) >= _MIN_ALPHA


def _sentence_like(text: str) -> bool:
    return reads_as_sentence(text) or _SENTENCE_INSIDE.search(text) is not None


def is_narrative(text: str) -> bool:
    """Narrative text by script-independent rules: it reads as a sentence, or holds one."""
    text = text.strip()
    return bool(text) and not text.isnumeric() and _sentence_like(text)


def is_title(text: str) -> bool:
    """A short unmarked line that does not read as a sentence."""
    text = text.strip()
    return (
        bool(text)
        and not text.isnumeric()
        and not text.endswith(",")
        and len(text.split(" ")) <= _TITLE_MAX_WORDS
        and _mostly_letters(text)
        and not _sentence_like(text)
        and _LINK.search(text) is None
        and heading_depth(text) is None
    )


def _script_aware(english: Callable[..., bool], rule: Callable[[str], bool]) -> Callable[..., bool]:
    def classify(text: str, *args, **kwargs) -> bool:
        english_text = not _KOREAN_DOCUMENT.get() and needs_english_nlp(text)
        return english(text, *args, **kwargs) if english_text else rule(text)

    classify.korag_english = english  # type: ignore[attr-defined]
    return classify


_RULES = {"is_possible_narrative_text": is_narrative, "is_possible_title": is_title}


def _modules() -> Iterator[tuple[object, str]]:
    for module_name, name in _TARGETS:
        module = importlib.import_module(module_name)
        if not callable(getattr(module, name, None)):  # unstructured is pinned; fail loudly if it moved
            raise RuntimeError(f"{module_name}.{name} not found: korag's script-aware classifier needs "
                               "the unstructured version pinned in pyproject.toml")
        yield module, name


@cache
def install() -> None:
    """Idempotent: unstructured's partitioners classify non-Latin paragraphs without spaCy."""
    for module, name in _modules():
        current = getattr(module, name)
        if not hasattr(current, "korag_english"):
            setattr(module, name, _script_aware(current, _RULES[name]))


@contextmanager
def english_rules_everywhere() -> Iterator[None]:
    """unstructured's own English rules for every paragraph while inside (benchmarks and tests
    compare the two); the script-aware rules again afterwards."""
    install()
    patched = [(module, name, getattr(module, name)) for module, name in _modules()]
    for module, name, classify in patched:
        setattr(module, name, classify.korag_english)
    try:
        yield
    finally:
        for module, name, classify in patched:
            setattr(module, name, classify)
