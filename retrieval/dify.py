"""Dify's External Knowledge API over korag's search, so a Dify app can use korag as its
(Korean) knowledge base. The service mounts it at ``POST /v1/retrieval``; in Dify, register the
API endpoint ``http://<korag>/v1`` (Dify appends ``/retrieval``), a korag key as the API key,
and the collection name (``KORAG_COLLECTION``, default ``korag``) as the External Knowledge ID.

Request (Dify's published spec)::

    {"knowledge_id": "korag", "query": "...", "retrieval_setting": {"top_k": 5, "score_threshold": 0.5},
     "metadata_condition": {"logical_operator": "and",
                            "conditions": [{"name": "team", "comparison_operator": "is", "value": "legal"}]}}

Response ``{"records": [{"content", "score", "title", "metadata"}]}``; errors
``{"error_code", "error_msg"}``: 1001 malformed Authorization header and 1002 authorization
failed, both 403 (Dify's AccessDeniedException; Dify's check of a new endpoint rejects only 403,
404 and 502, so a wrong key must be 403 to be caught there; a request with no Authorization
header at all, which Dify never sends, is HTTP's 401 with 1001), 2001 unknown knowledge (404), and
korag's own 3001 for a request it cannot read or apply (422): a missing or invalid field, or a
metadata condition (``contains``, ``start with`` and ``end with`` are refused, never ignored;
so are numbers that are no finite number, and timestamps past the year 9999).

Scores: records carry korag's score clipped to 0–1 and ``score_threshold`` applies to it. In
hybrid mode (korag's default) that score is a fused-rank score (about 0.73 at most with the
default weights), not a cosine similarity: leave Dify's score threshold off, or search dense.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Collection
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from qdrant_client import models

from korag.storage.query_filter import (
    BLANK,
    DATE_PATTERN,
    EXACT_KEY,
    KEY,
    MAX_CONDITIONS,
    NUMBER,
    RESERVED_NAMES,
    SCALAR,
    FilterError,
    parse_filter,
    scalars,
)
from korag.types import SearchResult

MAX_TOP_K = 100
MAX_QUERY_CHARS = 2000
# korag's bookkeeping, left out of a record's metadata
_INTERNAL_FIELDS = frozenset({"request", "ingest_seq", "content_hash", "embedding_model", "tenant"})

SearchFn = Callable[[str, int, "models.Filter | None"], list[SearchResult]]


# -- models (Dify's field names) --------------------------------------------------------------------
class RetrievalSetting(BaseModel):
    top_k: int = Field(ge=1, description=f"results wanted; korag returns at most {MAX_TOP_K}")
    score_threshold: float = Field(0.0, ge=0.0, le=1.0, description="records below this score are left out; "
                                   "0.0 when the threshold is off in Dify")


class DifyCondition(BaseModel):
    name: str | list[str] = Field(description="metadata field; a list: the condition holds on any of them")
    comparison_operator: str = Field(description="is, is not, in, not in, empty, not empty, null, not null, "
                                     "=, ≠, >, <, ≥, ≤, before, after")
    value: Any = None

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler) -> dict[str, Any]:
        """What :func:`condition_filter` accepts, operator by operator (the model itself takes any
        value, so that a value korag cannot use is Dify's 3001 naming it)."""
        return {"title": "DifyCondition", "type": "object", "required": ["name", "comparison_operator"],
                "description": "a metadata condition; contains, not contains, start with and end with are refused",
                "anyOf": [_variant(ops, exact, value) for ops, exact, value in _VARIANTS]}


class MetadataCondition(BaseModel):
    logical_operator: Literal["and", "or"] = "and"
    conditions: list[DifyCondition] = Field(default_factory=list)


class DifyRequest(BaseModel):
    knowledge_id: str = Field(min_length=1)
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    retrieval_setting: RetrievalSetting
    metadata_condition: MetadataCondition | None = None


class DifyRecord(BaseModel):
    content: str
    score: float
    title: str
    metadata: dict[str, Any] = Field(default_factory=dict)  # an object, never null: Dify fails on null


class DifyResponse(BaseModel):
    records: list[DifyRecord]


class DifyErrorBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"error_code": 1002, "error_msg": "Authorization failed"}})

    error_code: int
    error_msg: str


class DifyError(Exception):
    """An error in Dify's format: ``status`` is the HTTP status, ``to_json()`` the body."""

    def __init__(self, status: int, error_code: int, error_msg: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error_msg)
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg
        self.headers = headers

    def to_json(self) -> dict[str, Any]:
        return {"error_code": self.error_code, "error_msg": self.error_msg}

    @classmethod
    def missing_header(cls) -> "DifyError":
        """No credentials at all: HTTP's 401 with its challenge (Dify always sends its key)."""
        return cls(401, 1001, "No Authorization header. Expected 'Bearer <api-key>' format.",
                   headers={"WWW-Authenticate": "Bearer"})

    @classmethod
    def invalid_header(cls) -> "DifyError":
        return cls(403, 1001, "Invalid Authorization header format. Expected 'Bearer <api-key>' format.")

    @classmethod
    def authorization_failed(cls) -> "DifyError":
        return cls(403, 1002, "Authorization failed: unknown or revoked API key.")

    @classmethod
    def knowledge_not_found(cls, knowledge_id: str) -> "DifyError":
        return cls(404, 2001, f"The knowledge does not exist: {knowledge_id!r}")

    @classmethod
    def bad_condition(cls, message: str) -> "DifyError":
        return cls(422, 3001, f"metadata_condition: {message}")

    @classmethod
    def invalid_request(cls, message: str) -> "DifyError":
        return cls(422, 3001, f"invalid request: {message}")


def bearer_key(authorization: str | None) -> str:
    """The key of an ``Authorization: Bearer <key>`` header; DifyError 1001 when there is none
    (401) or it is malformed (403)."""
    if authorization is None or not authorization.strip():
        raise DifyError.missing_header()
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise DifyError.invalid_header()
    return key.strip()


# -- metadata_condition -> korag's filter language ----------------------------------------------------
_POSITIVE = {"is": "is", "in": "in", "=": "=", ">": "gt", "<": "lt", "≥": "gte", "≤": "lte", ">=": "gte",
             "<=": "lte", "before": "before", "after": "after", "not empty": "exists", "not null": "exists"}
_NEGATIVE = {"is not": "is", "not in": "in", "≠": "=", "!=": "=", "empty": "exists", "null": "exists"}
_UNSUPPORTED = ("contains", "not contains", "start with", "end with")
# A number spelled as text: up to 18 digits before the point (so within 64 bits), no exponent; a
# Unix timestamp as text: up to 10 (years 1653 to 2286); as a number: years 1 to 9999.
NUMBER_TEXT = f"^[{BLANK}]*-?(0|[1-9][0-9]{{0,17}})(\\.[0-9]+)?[{BLANK}]*$"
TIMESTAMP_TEXT = f"^[{BLANK}]*-?(0|[1-9][0-9]{{0,9}})(\\.[0-9]+)?[{BLANK}]*$"
TIMESTAMPS = (-62_135_596_800, 253_402_300_799)  # 0001-01-01T00:00:00Z, 9999-12-31T23:59:59Z
_NUMBER_TEXT, _TIMESTAMP_TEXT, _DATE_TEXT = re.compile(NUMBER_TEXT), re.compile(TIMESTAMP_TEXT), re.compile(DATE_PATTERN)

_NUMBERS = {"anyOf": [NUMBER, {"type": "string", "pattern": NUMBER_TEXT}]}
_VARIANTS = (  # operators, whether the name goes into an exact match, the value's schema
    (["is", "is not"], True, {"anyOf": [SCALAR, scalars(1)]}),
    (["in", "not in"], True, {"anyOf": [scalars(1), {"type": "string", "pattern": f"[^,{BLANK}]",
                                                     "description": "comma-separated values"}]}),
    (["=", "≠", "!="], True, _NUMBERS),
    ([">", "<", "≥", "≤", ">=", "<="], False, _NUMBERS),
    (["before", "after"], False, {"anyOf": [
        {"type": "number", "minimum": TIMESTAMPS[0], "maximum": TIMESTAMPS[1]},
        {"type": "string", "pattern": TIMESTAMP_TEXT}, {"type": "string", "pattern": DATE_PATTERN}]}),
    (["empty", "not empty", "null", "not null"], False, None),
)


def _variant(ops: list[str], exact: bool, value: dict | None) -> dict[str, Any]:
    key = EXACT_KEY if exact else KEY
    properties = {"name": {"anyOf": [key, {"type": "array", "minItems": 1, "maxItems": MAX_CONDITIONS, "items": key}]},
                  "comparison_operator": {"enum": ops}}
    if value is None:
        return {"properties": properties}
    return {"properties": {**properties, "value": value}, "required": ["value"]}


def condition_filter(condition: MetadataCondition | dict | None) -> dict | None:
    """Dify's ``metadata_condition`` in korag's filter language (see korag.storage.query_filter), or None.
    Raises FilterError naming the operator or value it cannot apply."""
    if condition is None:
        return None
    if isinstance(condition, dict):
        condition = MetadataCondition.model_validate(condition)
    if not condition.conditions:
        return None
    nodes = [_condition(c, i) for i, c in enumerate(condition.conditions)]
    return {condition.logical_operator: nodes}


def _condition(cond: DifyCondition, index: int) -> dict:
    where = f"conditions[{index}]"
    op = cond.comparison_operator
    names = cond.name if isinstance(cond.name, list) else [cond.name]
    if not names:
        raise FilterError(f"{where}: name is an empty list")
    if op in _UNSUPPORTED:
        raise FilterError(f"{where}: comparison_operator {cond.comparison_operator!r} is not supported by korag "
                          "(no substring matching on metadata); use is, in, =, >, <, before, after, empty")
    if op in _POSITIVE:
        positive, negate = _POSITIVE[op], False
    elif op in _NEGATIVE:
        positive, negate = _NEGATIVE[op], True
    else:
        raise FilterError(f"{where}: unknown comparison_operator {cond.comparison_operator!r}")
    anyof = [_one(name, positive, cond.value, where) for name in names]
    node = anyof[0] if len(anyof) == 1 else {"or": anyof}
    return {"not": node} if negate else node


def _one(name: str, op: str, value: Any, where: str) -> dict:
    if op == "exists":
        return {"key": name, "op": "exists", "value": True}
    if value is None:
        raise FilterError(f"{where}: comparison_operator needs a value")
    if op in ("is", "in", "=") and name in RESERVED_NAMES:
        raise FilterError(f"{where}: korag cannot match a field named {name!r} with {op!r} (use > or <, or rename "
                          f"it); the names {', '.join(RESERVED_NAMES)} are its filter language's own")
    if op == "is":
        return {name: value}  # 2024 and "2024" match each other, as with the CLI's --filter
    if op == "in":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif not isinstance(value, list):
            raise FilterError(f"{where}: 'in' takes a list or comma-separated text, got {value!r}")
        if not value:
            raise FilterError(f"{where}: 'in' needs at least one value")
        return {name: value}
    if op == "=":
        return {name: _number(value, where)}
    if op in ("gt", "lt", "gte", "lte"):
        return {"key": name, "op": op, "value": _number(value, where)}
    # before / after: an ISO 8601 date-time, or a Unix timestamp (how Dify stores time metadata);
    # a timestamp matches fields holding either form.
    bound = "lt" if op == "before" else "gt"
    if isinstance(value, str) and not _TIMESTAMP_TEXT.search(value):
        if _DATE_TEXT.search(value):
            return {"key": name, "op": bound, "value": value}
        raise FilterError(f"{where}: {value!r} is neither an ISO 8601 date-time nor a Unix timestamp korag can read "
                          f"(years 1 to 9999; as text up to 10 digits)")
    stamp = _number(value, where)
    if not TIMESTAMPS[0] <= stamp <= TIMESTAMPS[1]:  # 1e20: past the year 9999
        raise FilterError(f"{where}: {value!r} is not a Unix timestamp korag can read (years 1 to 9999)")
    moment = dt.datetime.fromtimestamp(stamp, dt.timezone.utc)
    iso = moment.isoformat().replace("+00:00", "Z")
    return {"or": [{"key": name, "op": bound, "value": stamp}, {"key": name, "op": bound, "value": iso}]}


def _number(value: Any, where: str) -> int | float:
    """A finite number, or its spelling as :data:`NUMBER_TEXT` ("2024", "-3.5"); "inf", "nan",
    "1e3", 1e400 are refused."""
    if isinstance(value, str):
        if not _NUMBER_TEXT.search(value):
            raise FilterError(f"{where}: expected a number, got {value!r}")
        text = value.strip()
        return float(text) if "." in text else int(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FilterError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(f"{where}: expected a finite number, got {value!r}")
    return value


# -- the endpoint's work ----------------------------------------------------------------------------
def retrieve(req: DifyRequest, search: SearchFn, *, knowledge_ids: Collection[str] | None = None) -> DifyResponse:
    """Answer one Dify retrieval request with ``search(query, k, where)`` (korag's search for the
    caller's tenant). ``knowledge_ids``: the External Knowledge IDs served (None: any); another
    is DifyError 2001. A bad metadata condition is DifyError 3001; nothing is searched then."""
    if knowledge_ids is not None and req.knowledge_id not in knowledge_ids:
        raise DifyError.knowledge_not_found(req.knowledge_id)
    try:
        where = parse_filter(condition_filter(req.metadata_condition))
    except FilterError as exc:
        raise DifyError.bad_condition(str(exc)) from exc
    k = min(req.retrieval_setting.top_k, MAX_TOP_K)
    threshold = req.retrieval_setting.score_threshold
    records = []
    for result in search(req.query, k, where):
        score = min(1.0, max(0.0, float(result.score)))
        if score < threshold:
            continue
        records.append(DifyRecord(content=result.text, score=score, title=_title(result.metadata),
                                  metadata=_metadata(result)))
    return DifyResponse(records=records)


def _title(metadata: dict[str, Any]) -> str:
    for key in ("filename", "source"):
        value = metadata.get(key)
        if value:
            return str(value)
    return ""


def _metadata(result: SearchResult) -> dict[str, Any]:
    meta = {k: v for k, v in (result.metadata or {}).items() if k not in _INTERNAL_FIELDS}
    meta["chunk_id"] = result.id
    return meta
