"""qdrant-client filters (``models.Filter`` and its conditions) as Qdrant Edge filters."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import numpy as np
import qdrant_edge as qe
from qdrant_client import models

from korag.storage.edge import EdgeUnsupportedError


def to_edge_filter(flt: models.Filter | None) -> qe.Filter | None:
    if flt is None:
        return None
    if not isinstance(flt, models.Filter):
        raise EdgeUnsupportedError(f"EdgeClient takes qdrant_client.models.Filter, not {type(flt).__name__}")
    min_should = None
    if flt.min_should is not None:
        min_should = qe.MinShould(conditions=_conditions(flt.min_should.conditions), min_count=flt.min_should.min_count)
    return qe.Filter(
        must=_conditions(flt.must),
        should=_conditions(flt.should),
        must_not=_conditions(flt.must_not),
        min_should=min_should,
    )


def _conditions(conditions: Any) -> list[Any] | None:
    if conditions is None:
        return None
    if not isinstance(conditions, list):  # qdrant-client also takes a single condition
        conditions = [conditions]
    return [_condition(c) for c in conditions]


def _condition(cond: Any) -> Any:
    if isinstance(cond, models.FieldCondition):
        return _field_condition(cond)
    if isinstance(cond, models.Filter):
        return to_edge_filter(cond)
    if isinstance(cond, models.IsEmptyCondition):
        return qe.IsEmptyCondition(cond.is_empty.key)
    if isinstance(cond, models.IsNullCondition):
        return qe.IsNullCondition(cond.is_null.key)
    if isinstance(cond, models.HasIdCondition):
        return qe.HasIdCondition({edge_id(i) for i in cond.has_id})
    if isinstance(cond, models.HasVectorCondition):
        return qe.HasVectorCondition(cond.has_vector)
    if isinstance(cond, models.NestedCondition):
        return qe.NestedCondition(cond.nested.key, to_edge_filter(cond.nested.filter))
    raise EdgeUnsupportedError(f"EdgeClient does not translate the filter condition {type(cond).__name__}")


def _field_condition(cond: models.FieldCondition) -> qe.FieldCondition:
    unsupported = [name for name in ("geo_bounding_box", "geo_radius", "geo_polygon") if getattr(cond, name) is not None]
    if unsupported:
        raise EdgeUnsupportedError(f"EdgeClient does not translate {', '.join(unsupported)} (field {cond.key!r})")
    values_count = None
    if cond.values_count is not None:
        vc = cond.values_count
        values_count = qe.ValuesCount(lt=vc.lt, gt=vc.gt, lte=vc.lte, gte=vc.gte)
    return qe.FieldCondition(
        cond.key,
        match=_match(cond.match, cond.key) if cond.match is not None else None,
        range=_range(cond.range) if cond.range is not None else None,
        values_count=values_count,
        is_empty=cond.is_empty,
        is_null=cond.is_null,
    )


def _match(match: Any, key: str) -> Any:
    if isinstance(match, models.MatchValue):
        value = match.value
        # qdrant-edge-py 0.9.0 reads a Python bool as the integer 0/1 (bool is an int subclass), so
        # MatchValue(True) would match nothing; numpy's bool is not an int and arrives as a bool.
        return qe.MatchValue(np.bool_(value) if isinstance(value, bool) else value)
    if isinstance(match, models.MatchAny):
        return qe.MatchAny(list(match.any))
    if isinstance(match, models.MatchExcept):
        return qe.MatchExcept(list(match.except_))
    if isinstance(match, models.MatchText):
        return qe.MatchText(match.text)
    if isinstance(match, models.MatchPhrase):
        return qe.MatchPhrase(match.phrase)
    if isinstance(match, models.MatchTextAny):
        return qe.MatchTextAny(match.text_any)
    raise EdgeUnsupportedError(f"EdgeClient does not translate the match {type(match).__name__} (field {key!r})")


def _range(rng: Any) -> Any:
    if isinstance(rng, models.DatetimeRange):
        return qe.RangeDateTime(gte=_iso(rng.gte), gt=_iso(rng.gt), lte=_iso(rng.lte), lt=_iso(rng.lt))
    return qe.RangeFloat(gte=rng.gte, gt=rng.gt, lte=rng.lte, lt=rng.lt)


def _iso(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    raise EdgeUnsupportedError(f"EdgeClient cannot read {value!r} as a date-time bound")


def edge_id(point_id: Any) -> int | str:
    """Edge takes unsigned integers and UUID strings; qdrant-client also passes ``uuid.UUID``."""
    if isinstance(point_id, uuid.UUID):
        return str(point_id)
    if isinstance(point_id, (int, str)) and not isinstance(point_id, bool):
        return point_id
    raise EdgeUnsupportedError(f"point ids are unsigned integers or UUIDs, not {point_id!r}")
