"""Rules for what callers name: which metadata keys a caller may set, how sources and tenants are
spelled, which values a store can hold. Pure functions over text and numbers (korag's ground: this
module imports nothing of korag and no store client); the filters built from them live in
:mod:`korag.storage.filters`.

Every key a caller can store must be filterable: Qdrant reads ``.`` and ``[]`` in a payload key
as a path into nested objects, so such keys could be stored but never matched, and are refused.
Fields korag writes itself are refused too, so ``--meta page_number=999`` cannot fake a citation.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

# Every field korag writes into a chunk's metadata (or reads back for its own bookkeeping).
RESERVED_FIELDS = frozenset({
    "doc_id", "source", "filename", "chunk_index", "parent_index", "overlap_chars", "chunk_count", "token_count",
    "page_number", "section", "content_hash", "embedding_model", "element_types", "tenant", "ingest_seq", "request", "ocr", "ocr_confidence",
})
# The rules on names as regular-expression classes, written once for the checks below and for
# the JSON Schemas of the HTTP API (ECMA-262 and Python's re read them alike: classes spelled out,
# since JSON Schema's \s is not Python's).
BLANK = "\\t-\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"  # what str.strip() takes
NESTING_CHARS = '.\\[\\]"'  # read by Qdrant as a path into nested fields: never a stored key
UNFILTERABLE_CHARS = NESTING_CHARS + "\\\\"  # and a backslash: Qdrant Edge reads no path with one, quoted or not
# What source_problem refuses, as a class (lone surrogates aside: JSON Schema cannot name them).
NOT_IN_SOURCE = "\\x00-\\x1f\\x7f-\\x9f\\u061c\\u200e\\u200f\\u2028-\\u202e\\u2066-\\u2069"
_NESTING = re.compile(f"[{NESTING_CHARS}]")
UNFILTERABLE = re.compile(f"[{UNFILTERABLE_CHARS}]")


def not_blank_without(chars: str) -> str:
    """A pattern for a name that is not blank and holds none of the class ``chars``."""
    return f"^[^{chars}]*[^{chars}{BLANK}][^{chars}]*$"
PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")  # what Qdrant reads unquoted in a JSON path
INT64 = (-(2**63), 2**63 - 1)


def check_key(key: str) -> None:
    """Refuse a metadata key that could be stored but never filtered, or that korag owns."""
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"metadata key {key!r} is empty; give a name, e.g. --meta team=legal")
    bad = _NESTING.search(key)
    if bad is not None:
        raise ValueError(
            f"metadata key {key!r} contains {bad.group()!r}: Qdrant reads '.', '[', ']' and '\"' in a key as a "
            "path into nested fields, so it could never be filtered; use e.g. '_' instead"
        )
    if key in RESERVED_FIELDS:
        raise ValueError(
            f"metadata key {key!r} is written by korag itself and cannot be set; reserved: "
            + ", ".join(sorted(RESERVED_FIELDS))
        )


def check_meta(pairs: Iterable[tuple[str, Any]]) -> None:
    for key, _ in pairs:
        check_key(key)


def check_tenant(tenant: str | None) -> None:
    if tenant is not None and not tenant.strip():
        raise ValueError(f"tenant {tenant!r} is empty; give a name, or leave --tenant out")


def normalize_source(source: str) -> str:
    """NFC (macOS file names are NFD), and ``dir/..`` segments collapsed lexically, so one file
    reached two ways is one document. Everything else stays as the caller spelled it."""
    source = unicodedata.normalize("NFC", source)
    parts = source.split("/")
    out: list[str] = []
    for part in parts:
        if part == ".." and out and out[-1] not in ("..", "", "."):
            out.pop()
        elif part == ".." and out == [""]:  # "/.." is "/"
            continue
        else:
            out.append(part)
    if not out or out == [""]:
        return "/" if source.startswith("/") else "."
    return "/".join(out)


# Characters a source may not contain: they hide or reorder what a name shows (bidi controls,
# marks), break lines in logs and listings (C0, C1, separators), or are no character at all (lone
# surrogates: a file name that is not UTF-8, which the store cannot hold).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SEPARATORS = frozenset("\u2028\u2029")


def _refused(char: str) -> str | None:
    """What ``char`` is, when a source may not contain it."""
    category = unicodedata.category(char)
    if category == "Cc":
        return "a control character"
    if category == "Cs":
        return "a lone surrogate (the name is not valid UTF-8)"
    if char in _SEPARATORS:
        return "a line or paragraph separator"
    if char in _BIDI:
        return "a bidirectional control"
    return None


def source_problem(source: str) -> str | None:
    """Why ``source`` cannot name a document, or None. Refused: C0 and C1 controls (NUL, newline,
    ESC ...), U+2028/U+2029, the bidirectional controls U+202A-U+202E, U+2066-U+2069 and the marks
    U+200E, U+200F, U+061C, and lone surrogates: the characters that let one name pass for another."""
    for position, char in enumerate(source):
        what = _refused(char)
        if what is not None:
            return (f"source {source!r} contains U+{ord(char):04X}, {what}, at position {position}; "
                    "a source may not contain control characters, line separators or bidirectional controls")
    return None


def check_source(source: str) -> None:
    """Refuse a source :func:`source_problem` refuses (ValueError with the reason)."""
    problem = source_problem(source)
    if problem is not None:
        raise ValueError(problem)


def printable(text: object) -> str:
    """``text`` for a terminal or a prompt: control and other unprintable characters (``\\x1b``,
    ``\\n``, ``\\u200b`` ...) become visible escapes, so a file name cannot drive the terminal."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def value_problem(value: str | int | float | bool, *, stored: bool = False) -> str | None:
    """Why Qdrant cannot take ``value`` (a filter value, or with ``stored`` a metadata value), or
    None. JSON carries what Qdrant cannot: NaN and Infinity (Python's json reads them, and 1e400
    as infinity), integers beyond 64 bits, and lone surrogates (``"\\ud800"``: no character,
    so no UTF-8). A stored number must also lie within the 64-bit integer range, float or not:
    JSON does not tell ``1e30`` from an integer, and korag keeps one rule for both spellings."""
    if isinstance(value, str):
        return lone_surrogate(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number (NaN, Infinity and numbers beyond ±1.8e308 cannot be stored)"
    if (isinstance(value, int) or stored) and not INT64[0] <= value <= INT64[1]:
        return f"{value} is outside the 64-bit range of integers (-2**63 to 2**63-1)"
    return None


def lone_surrogate(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"{text!r} contains a lone surrogate U+{ord(text[exc.start]):04X} at position {exc.start}, "
                "which is no character (and not UTF-8); send the text as valid Unicode")
    return None
