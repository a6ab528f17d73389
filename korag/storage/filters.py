"""Metadata filters as Qdrant reads them: the payload path of a metadata key, the typed "any of"
match, and the CLI's ``key=value`` filters (:func:`build_filter`). The service's richer filter
language (:mod:`korag.storage.query_filter`) builds on the same two helpers; which keys can be
filtered at all is a rule of :mod:`korag.rules`.
"""

from __future__ import annotations

import re
from typing import Any

from qdrant_client import models

from korag.rules import INT64, PLAIN_KEY, UNFILTERABLE


def _typed(value: str) -> bool | int | None:
    """The typed reading of a filter string: ``true``/``false`` or a canonical 64-bit integer."""
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", value.strip()):
        number = int(value)
        if INT64[0] <= number <= INT64[1]:
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
    return f"metadata.{key}" if PLAIN_KEY.fullmatch(key) else f'metadata."{key}"'


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
