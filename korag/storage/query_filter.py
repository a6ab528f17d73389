"""The service's metadata filter language → a Qdrant filter on ``metadata.<key>``.

Two forms, freely nested::

    {"team": "legal", "year": [2023, 2024]}               # exact matches, as the CLI's --filter:
                                                          # every key must match, a list = any of
    {"and": [{"key": "year", "op": "gte", "value": 2020},
             {"or": [{"team": "legal"}, {"key": "draft", "op": "exists", "value": false}]},
             {"not": {"key": "lang", "op": "in", "value": ["en", "ja"]}}]}

A condition is ``{"key", "op", "value"}`` with ``op`` one of ``eq ne in nin gt gte lt lte
exists``. Values are typed: ``{"op": "eq", "value": 3}`` matches the number 3, never the text
"3" (the exact-match form keeps the CLI's reading, where 3 and "3" match each other). ``gt``,
``gte``, ``lt`` and ``lte`` take a number or an ISO 8601 date / date-time. ``ne`` and ``nin``
also match chunks without the field; ``exists`` (value true or false, default true) is false for
a missing field, null and an empty list. ``{"not": X}`` matches what X does not match;
``{"not": [A, B]}`` what matches neither.

It fails closed: an unknown op, a badly formed key, a value of the wrong type, an empty
``and``/``or`` list raise :class:`FilterError` naming it (the service answers 422), never a
filter that silently matches everything.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from qdrant_client import models

from korag.rules import (
    BLANK,
    INT64,
    UNFILTERABLE,
    UNFILTERABLE_CHARS,
    lone_surrogate,
    not_blank_without,
    value_problem,
)
from korag.storage.filters import any_of, metadata_path

OPS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "exists")
LOGICAL = ("and", "or", "not")
CONDITION_FIELDS = ("key", "op", "value")
MAX_DEPTH = 8
MAX_CONDITIONS = 100
MAX_LIST = 1000


# The rules above as regular expressions, written once for both the parser and the JSON Schema
# (ECMA-262 and Python's re read them alike: classes spelled out, since JSON Schema's \s and \d
# are not Python's). BLANK: what str.strip() takes away.
KEY_PATTERN = not_blank_without(UNFILTERABLE_CHARS)  # not blank, no . [ ] ", no \\
_YEAR = "([0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"  # 0001 to 9999, as Python's datetime
_LEAP_YEAR = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = "((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
_TIME = "[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,9})?)?(Z|[+-]([01][0-9]|2[0-3]):?[0-5][0-9])?"
DATE = f"({_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)({_TIME})?"  # ISO 8601 date or date-time
DATE_PATTERN = f"^[{BLANK}]*{DATE}[{BLANK}]*$"
_DATE = re.compile(DATE)


class FilterError(ValueError):
    """The filter cannot be read; the message names the bad op, key, value or place."""


def parse_filter(data: dict | None) -> models.Filter | None:
    """``data`` (decoded JSON) → a ``models.Filter``, or None for no filter (None or ``{}``)."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise FilterError(f"filter: expected an object, got {_type(data)}")
    if not data:
        return None
    counter = [0]
    node = _node(data, "filter", 0, counter)
    return node if isinstance(node, models.Filter) else models.Filter(must=[node])


def _node(data: Any, where: str, depth: int, counter: list[int]) -> models.Filter | models.Condition:
    if depth > MAX_DEPTH:
        raise FilterError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(data, dict):
        raise FilterError(f"{where}: expected an object, got {_type(data)}")
    if not data:
        raise FilterError(f"{where}: empty object; give a condition")
    logical = [k for k in data if k in LOGICAL]
    if logical:
        if len(data) != 1:
            others = ", ".join(repr(k) for k in data if k != logical[0])
            raise FilterError(f"{where}: {logical[0]!r} cannot share an object with {others}; put each in its own "
                              f'object inside {{"and": [...]}}')
        return _logical(logical[0], data[logical[0]], f"{where}.{logical[0]}", depth, counter)
    if any(k in data for k in CONDITION_FIELDS):
        return _condition(data, where, counter)
    return _exact(data, where, counter)


def _logical(op: str, value: Any, where: str, depth: int, counter: list[int]) -> models.Filter:
    items = [value] if op == "not" and isinstance(value, dict) else value
    if not isinstance(items, list):
        wanted = "an object or a list of objects" if op == "not" else "a list of objects"
        raise FilterError(f"{where}: {op!r} takes {wanted}, got {_type(value)}")
    if not items:
        raise FilterError(f"{where}: {op!r} has an empty list; give at least one condition")
    nodes = [_node(item, f"{where}[{i}]", depth + 1, counter) for i, item in enumerate(items)]
    if op == "and":
        return models.Filter(must=nodes)
    if op == "or":
        return models.Filter(should=nodes)
    return models.Filter(must_not=nodes)


def _count(counter: list[int], where: str) -> None:
    counter[0] += 1
    if counter[0] > MAX_CONDITIONS:
        raise FilterError(f"{where}: more than {MAX_CONDITIONS} conditions in one filter")


def _field(key: Any, where: str) -> str:
    if not isinstance(key, str) or not key.strip():
        raise FilterError(f"{where}: key {key!r} is not a metadata field name")
    bad = UNFILTERABLE.search(key)
    if bad is not None:
        raise FilterError(f"{where}: key {key!r} contains {bad.group()!r}; korag cannot filter on a key with "
                          '. [ ] " or \\')
    surrogate = lone_surrogate(key)
    if surrogate is not None:
        raise FilterError(f"{where}: key {surrogate}")
    return metadata_path(key)


def _exact(data: dict, where: str, counter: list[int]) -> models.Filter:
    """Every key must match; a list matches any of its items. As the CLI's --filter, 3 and "3"
    match each other (korag.storage.filters.build_filter); a float matches the number."""
    must: list[models.Condition] = []
    for key, value in data.items():
        _count(counter, where)
        field = _field(key, where)  # before the key is spelled into a place: it may not be text at all
        items = value if isinstance(value, list) else [value]
        if not items:
            raise FilterError(f"{where}.{key}: empty list; give at least one value")
        if len(items) > MAX_LIST:
            raise FilterError(f"{where}.{key}: more than {MAX_LIST} values")
        values = [_scalar(v, f"{where}.{key}", "an exact match") for v in items]
        exact = [v for v in values if not isinstance(v, float)]
        options = [any_of(field, exact)] if exact else []
        options += [_equals(field, v, where) for v in values if isinstance(v, float)]
        must.append(options[0] if len(options) == 1 else models.Filter(should=options))
    return models.Filter(must=must)


def _condition(data: dict, where: str, counter: list[int]) -> models.Filter | models.Condition:
    _count(counter, where)
    unknown = [k for k in data if k not in CONDITION_FIELDS]
    if unknown:
        raise FilterError(f"{where}: unknown field {unknown[0]!r} in a condition; a condition has "
                          f'"key", "op" and "value"')
    if "key" not in data or "op" not in data:
        missing = "key" if "key" not in data else "op"
        raise FilterError(f'{where}: condition without "{missing}"; write {{"key": ..., "op": ..., "value": ...}}')
    op = data["op"]
    if not isinstance(op, str) or op not in OPS:
        raise FilterError(f"{where}: unknown op {op!r}; use one of {', '.join(OPS)}")
    field = _field(data["key"], f"{where}.key")
    where = f"{where} ({data['key']} {op})"
    if op == "exists":
        value = data.get("value", True)
        if not isinstance(value, bool):
            raise FilterError(f"{where}: exists takes true or false, got {_type(value)}")
        empty = models.IsEmptyCondition(is_empty=models.PayloadField(key=field))
        return models.Filter(must_not=[empty]) if value else empty
    if "value" not in data:
        raise FilterError(f'{where}: condition without "value"')
    value = data["value"]
    if op in ("eq", "ne"):
        cond = _equals(field, _scalar(value, where, op), where)
        return cond if op == "eq" else models.Filter(must_not=[cond])
    if op in ("in", "nin"):
        if not isinstance(value, list):
            raise FilterError(f"{where}: {op} takes a list of values, got {_type(value)}")
        if len(value) > MAX_LIST:
            raise FilterError(f"{where}: more than {MAX_LIST} values")
        cond = _any_of(field, [_scalar(v, f"{where}[{i}]", op) for i, v in enumerate(value)], where)
        return cond if op == "in" else models.Filter(must_not=[cond])
    return _range(field, op, value, where)


def _scalar(value: Any, where: str, op: str) -> str | int | float | bool:
    if not isinstance(value, (str, int, float)):  # bool is an int
        raise FilterError(f"{where}: {op} takes a string, number or boolean, got {_type(value)}")
    problem = value_problem(value, stored=True)  # beyond what a store holds: no match, and no schema could say it
    if problem is not None:
        raise FilterError(f"{where}: {problem}")
    return value


def _equals(field: str, value: str | int | float | bool, where: str) -> models.Condition:
    if isinstance(value, float):  # Qdrant matches strings, integers and booleans; a float is a closed range
        if value.is_integer() and INT64[0] <= value <= INT64[1]:
            return models.Filter(should=[
                models.FieldCondition(key=field, match=models.MatchValue(value=int(value))),
                models.FieldCondition(key=field, range=models.Range(gte=value, lte=value)),
            ])
        return models.FieldCondition(key=field, range=models.Range(gte=value, lte=value))
    return models.FieldCondition(key=field, match=models.MatchValue(value=value))


def _any_of(field: str, values: list, where: str) -> models.Condition:
    """MatchAny per type (Qdrant cannot mix strings and integers in one); an empty list matches nothing."""
    strings = list(dict.fromkeys(v for v in values if isinstance(v, str)))
    integers = list(dict.fromkeys(v for v in values if isinstance(v, int) and not isinstance(v, bool)))
    conditions: list[models.Condition] = []
    if strings:
        conditions.append(models.FieldCondition(key=field, match=models.MatchAny(any=strings)))
    if integers:
        conditions.append(models.FieldCondition(key=field, match=models.MatchAny(any=integers)))
    others = {(type(v), v): v for v in values if isinstance(v, (bool, float))}  # True == 1.0: keyed by type too
    conditions += [_equals(field, v, where) for v in others.values()]
    if not conditions:
        return models.FieldCondition(key=field, match=models.MatchAny(any=[]))
    return conditions[0] if len(conditions) == 1 else models.Filter(should=conditions)


def _range(field: str, op: str, value: Any, where: str) -> models.FieldCondition:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _scalar(value, where, op)
        return models.FieldCondition(key=field, range=models.Range(**{op: value}))
    if isinstance(value, str) and _DATE.fullmatch(value.strip()):
        try:
            moment = _datetime(value.strip())
        except ValueError as exc:
            raise FilterError(f"{where}: {value!r} is not a valid date-time ({exc})") from None
        return models.FieldCondition(key=field, range=models.DatetimeRange(**{op: moment}))
    raise FilterError(f"{where}: {op} takes a number or an ISO 8601 date-time (e.g. 2024-05-01 or "
                      f"2024-05-01T09:00:00Z), got {_type(value)} {value!r}")


def _datetime(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# -- the same language as JSON Schema (the service's OpenAPI) -----------------------------------------
RESERVED_NAMES = (*LOGICAL, *CONDITION_FIELDS)  # an exact match on a key of these names would switch the form
NUMBER = {"type": "number", "minimum": INT64[0], "maximum": INT64[1]}
SCALAR = {"anyOf": [{"type": "string"}, {"type": "boolean"}, NUMBER]}
KEY = {"type": "string", "pattern": KEY_PATTERN}
EXACT_KEY = {"type": "string", "pattern": KEY_PATTERN, "not": {"enum": list(RESERVED_NAMES)}}


def scalars(min_items: int) -> dict:
    return {"type": "array", "minItems": min_items, "maxItems": MAX_LIST, "items": SCALAR}


def json_schemas(ref: str = "#/components/schemas/") -> dict[str, dict]:
    """The filter language as named JSON Schemas, ``KoragFilter`` the whole filter: what they
    admit, :func:`parse_filter` accepts, and what they refuse it refuses, save two limits no
    JSON Schema generator copes with, stated in the descriptions: ``MAX_DEPTH`` levels of
    nesting (spelled out level by level, the schema sent schemathesis' coverage phase into
    an exponential walk) and ``MAX_CONDITIONS`` conditions in one filter (each list and object
    is held to it on its own)."""
    range_value = {"anyOf": [NUMBER, {"type": "string", "pattern": DATE_PATTERN}]}

    def condition(ops: list[str], value: dict | None) -> dict:
        properties = {"key": KEY, "op": {"enum": ops}}
        if value is not None:
            properties["value"] = value
        required = ["key", "op"] if ops == ["exists"] else ["key", "op", "value"]
        return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}

    node = {"$ref": ref + "KoragFilterNode"}
    nodes = {"type": "array", "minItems": 1, "maxItems": MAX_CONDITIONS, "items": node}
    logical = [{"type": "object", "additionalProperties": False, "required": [op],
                "properties": {op: nodes if op != "not" else {"anyOf": [node, nodes]}}} for op in LOGICAL]
    return {
        "KoragFilterCondition": {"description": 'a condition {"key", "op", "value"}', "anyOf": [
            condition(["exists"], {"type": "boolean"}),
            condition(["eq", "ne"], SCALAR),
            condition(["in", "nin"], scalars(0)),
            condition(["gt", "gte", "lt", "lte"], range_value)]},
        "KoragFilterExact": {
            "description": "exact matches: every key must match, a list matches any of its items",
            "type": "object", "minProperties": 1, "maxProperties": MAX_CONDITIONS, "propertyNames": EXACT_KEY,
            "additionalProperties": {"anyOf": [SCALAR, scalars(1)]}},
        "KoragFilterNode": {"description": f"and, or, not (at most {MAX_DEPTH} levels deep), a condition, "
                                           "or exact matches",
                            "anyOf": [*logical, {"$ref": ref + "KoragFilterCondition"},
                                      {"$ref": ref + "KoragFilterExact"}]},
        "KoragFilter": {
            "description": "korag's metadata filter (README: Filters); {} is no filter. At most "
                           f"{MAX_CONDITIONS} conditions, {MAX_DEPTH} levels deep",
            "anyOf": [{"type": "object", "maxProperties": 0}, node]},
    }
