"""Headings by the markers Korean official and business documents use.

Government style runs Ⅰ. → □ → ○ → - ; numbered style runs 1. → 가. → 1) → 가); statutes use
제1장 / 제1절. A short line that starts with one of these and does not read as a sentence is
taken as a heading of the matching depth.
"""

from __future__ import annotations

import re

_MAX_HEADING_CHARS = 60
_PATTERNS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"^[ⅠⅡⅢⅣⅤⅥⅦⅧⅨⅩ]+\s*[.]"), 0),
    (re.compile(r"^제\s*\d+\s*[편장]\b"), 0),
    (re.compile(r"^제\s*\d+\s*[절관]\b"), 1),
    (re.compile(r"^[□■◆◇]"), 1),
    (re.compile(r"^\d{1,2}\.\s"), 1),
    (re.compile(r"^[○●]"), 2),
    (re.compile(r"^[가나다라마바사아자차카타파하]\.\s"), 2),
)
_SENTENCE_END = re.compile(r"(다|요|음|함|됨|임)\s*[.!?]$|[.!?]$")


def reads_as_sentence(text: str) -> bool:
    """Too long for a heading, or ends like a sentence (…다. …요?)."""
    line = text.strip()
    return len(line) > _MAX_HEADING_CHARS or "\n" in line or bool(_SENTENCE_END.search(line))


def heading_depth(text: str) -> int | None:
    """Depth (0 outermost) when ``text`` looks like a marked heading, else None."""
    line = text.strip()
    if not line or reads_as_sentence(line):
        return None
    for pattern, depth in _PATTERNS:
        if pattern.match(line):
            return depth
    return None
