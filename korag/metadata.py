"""Rules for chunk metadata: which keys a caller may set, how sources and tenants are spelled,
and how ``key=value`` filters become Qdrant filters.

Every key a caller can store must be filterable: Qdrant reads ``.`` and ``[]`` in a payload key
as a path into nested objects, so such keys could be stored but never matched, and are refused.
Fields korag writes itself are refused too, so ``--meta page_number=999`` cannot fake a citation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from qdrant_client import models

# Every field korag writes into a chunk's metadata (or reads back for its own bookkeeping).
RESERVED_FIELDS = frozenset({
    "doc_id", "source", "filename", "chunk_index", "chunk_count", "token_count", "page_number", "section",
    "content_hash", "embedding_model", "element_types", "tenant", "ingest_seq", "request",
})
_NESTING = re.compile(r'[.\[\]"]')  # read by Qdrant as a path into nested fields: never a stored key
UNFILTERABLE = re.compile(r'[.\[\]"\\]')  # and a backslash: Qdrant Edge reads no path with one, quoted or not
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")  # what Qdrant reads unquoted in a JSON path
_INT64 = (-(2**63), 2**63 - 1)


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


def _typed(value: str) -> bool | int | None:
    """The typed reading of a filter string: ``true``/``false`` or a canonical 64-bit integer."""
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", value.strip()):
        number = int(value)
        if _INT64[0] <= number <= _INT64[1]:
            return number
    return None


def alternatives(value: Any) -> list[Any]:
    """What a filter value matches: the value itself, plus its string spelling for an int or bool,
    plus its typed reading for a string ("3" → 3, "true" → True). ``--filter page_number=3``
    thus finds page 3 whether it was stored as the integer or as the text."""
    if isinstance(value, bool):
        return [value, "true" if value else "false"]
    if isinstance(value, int):
        return [value, str(value)]
    if isinstance(value, str):
        typed = _typed(value)
        return [value] if typed is None else [typed, value]
    return [value]


def metadata_path(key: str) -> str:
    """The payload path of metadata ``key`` (a key :data:`UNFILTERABLE` allows): Qdrant reads a key
    of other characters than letters, digits, ``_`` and ``-`` (a space, ":", "/") only quoted."""
    return f"metadata.{key}" if _PLAIN_KEY.fullmatch(key) else f'metadata."{key}"'


def any_of(field: str, values: list[Any]) -> models.Condition:
    """One condition matching any of ``values`` or their alternatives (MatchAny per type:
    Qdrant cannot mix strings and integers in one MatchAny)."""
    options = [option for value in values for option in alternatives(value)]
    strings = list(dict.fromkeys(v for v in options if isinstance(v, str)))
    integers = list(dict.fromkeys(v for v in options if isinstance(v, int) and not isinstance(v, bool)))
    others = [v for v in options if isinstance(v, bool) or not isinstance(v, (str, int))]
    conditions: list[models.Condition] = []
    for group in (strings, integers):
        if len(group) == 1:
            conditions.append(models.FieldCondition(key=field, match=models.MatchValue(value=group[0])))
        elif group:
            conditions.append(models.FieldCondition(key=field, match=models.MatchAny(any=group)))
    conditions += [models.FieldCondition(key=field, match=models.MatchValue(value=v)) for v in others]
    if not conditions:  # an empty list matches nothing
        return models.FieldCondition(key=field, match=models.MatchAny(any=[]))
    return conditions[0] if len(conditions) == 1 else models.Filter(should=conditions)


def build_filter(filters: dict[str, Any] | None) -> models.Filter | None:
    """``{key: value}`` → a Qdrant filter on ``metadata.<key>``; every key must match. A list,
    tuple or set value matches any of its items."""
    if not filters:
        return None
    must: list[models.Condition] = []
    for key, value in filters.items():
        if not isinstance(key, str) or not key.strip() or UNFILTERABLE.search(key):
            raise ValueError(f"cannot filter on metadata key {key!r}: keys with '.', '[', ']', '\"' or '\\' cannot "
                             "be filtered on")
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        must.append(any_of(metadata_path(key), values))
    return models.Filter(must=must)
