"""Points into Qdrant Edge, records and scored points back out as qdrant-client models."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import qdrant_edge as qe
from qdrant_client import models

from korag.storage.edge import EdgeUnsupportedError
from korag.storage.edge.filters import edge_id, to_edge_filter

_UPDATE_MODES = {
    models.UpdateMode.UPSERT: qe.UpdateMode.Upsert,
    models.UpdateMode.INSERT_ONLY: qe.UpdateMode.InsertOnly,
    models.UpdateMode.UPDATE_ONLY: qe.UpdateMode.UpdateOnly,
}


# -- in -------------------------------------------------------------------------------------------
def to_edge_points(points: Sequence[models.PointStruct]) -> list[qe.Point]:
    if isinstance(points, models.Batch) or not isinstance(points, Sequence):
        raise EdgeUnsupportedError("EdgeClient.upsert takes a list of qdrant_client.models.PointStruct")
    out = []
    for point in points:
        if not isinstance(point, models.PointStruct):
            raise EdgeUnsupportedError(f"EdgeClient.upsert takes PointStruct, not {type(point).__name__}")
        out.append(qe.Point(edge_id(point.id), edge_vector(point.vector), point.payload))
    return out


def edge_vector(vector: Any) -> Any:
    """A whole point's vector: one unnamed dense vector, or named dense and sparse vectors."""
    if isinstance(vector, dict):
        return {name: _named(name, value) for name, value in vector.items()}
    return _named("", vector)


def _named(name: str, value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, models.SparseVector):
        return qe.SparseVector(list(value.indices), list(value.values))
    if isinstance(value, list):
        return value
    raise EdgeUnsupportedError(
        f"vector {name!r}: EdgeClient takes lists of floats and SparseVector, not {type(value).__name__} "
        "(embed the text first; Edge does no inference)"
    )


def edge_update_mode(mode: models.UpdateMode | None) -> qe.UpdateMode | None:
    return _UPDATE_MODES[models.UpdateMode(mode)] if mode is not None else None


def selector(points: Any) -> tuple[list[int | str] | None, qe.Filter | None]:
    """qdrant-client's points selector (ids, PointIdsList, Filter, FilterSelector) as
    (ids, None) or (None, filter)."""
    if isinstance(points, models.FilterSelector):
        return None, to_edge_filter(points.filter)
    if isinstance(points, models.Filter):
        return None, to_edge_filter(points)
    if isinstance(points, models.PointIdsList):
        return [edge_id(i) for i in points.points], None
    if isinstance(points, (list, tuple)):
        return [edge_id(i) for i in points], None
    raise EdgeUnsupportedError(f"EdgeClient does not translate the points selector {type(points).__name__}")


def edge_with_payload(value: Any) -> Any:
    if isinstance(value, models.PayloadSelectorInclude):
        return qe.PayloadSelector.Include(list(value.include))
    if isinstance(value, models.PayloadSelectorExclude):
        return qe.PayloadSelector.Exclude(list(value.exclude))
    if isinstance(value, (bool, list)):
        return value
    raise EdgeUnsupportedError(f"EdgeClient does not translate with_payload={value!r}")


# -- out ------------------------------------------------------------------------------------------
def client_id(point_id: Any) -> int | str:
    """qdrant-client returns UUID ids as strings; Edge returns ``uuid.UUID``."""
    return str(point_id) if isinstance(point_id, uuid.UUID) else point_id


def client_vector(vector: Any) -> Any:
    if vector is None:
        return None
    if isinstance(vector, dict):
        return {name: client_vector(value) for name, value in vector.items()}
    if isinstance(vector, qe.SparseVector):
        return models.SparseVector(indices=list(vector.indices), values=list(vector.values))
    return list(vector)


def to_record(record: qe.Record) -> models.Record:
    return models.Record(id=client_id(record.id), payload=record.payload, vector=client_vector(record.vector))


def to_scored(point: qe.ScoredPoint) -> models.ScoredPoint:
    return models.ScoredPoint(
        id=client_id(point.id),
        version=point.version,
        score=point.score,
        payload=point.payload,
        vector=client_vector(point.vector),
        order_value=point.order_value,
    )
