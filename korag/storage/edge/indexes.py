"""Payload indexes: qdrant-client's schema types and parameters as Edge's, and back."""

from __future__ import annotations

from typing import Any

import qdrant_edge as qe
from qdrant_client import models

from korag.storage.edge import EdgeUnsupportedError

# qdrant-client's parameter classes, Edge's, and the options that Edge takes for each
_PARAMS: dict[type, tuple[Any, tuple[str, ...]]] = {
    models.KeywordIndexParams: (qe.KeywordIndexParams, ("is_tenant", "on_disk", "enable_hnsw")),
    models.IntegerIndexParams: (qe.IntegerIndexParams, ("lookup", "range", "is_principal", "on_disk", "enable_hnsw")),
    models.FloatIndexParams: (qe.FloatIndexParams, ("is_principal", "on_disk", "enable_hnsw")),
    models.BoolIndexParams: (qe.BoolIndexParams, ("on_disk", "enable_hnsw")),
    models.DatetimeIndexParams: (qe.DatetimeIndexParams, ("is_principal", "on_disk", "enable_hnsw")),
    models.UuidIndexParams: (qe.UuidIndexParams, ("is_tenant", "on_disk", "enable_hnsw")),
}


def edge_schema(schema: Any) -> Any:
    if isinstance(schema, str):  # models.PayloadSchemaType is a str enum; "keyword" works too
        kind = models.PayloadSchemaType(schema)
        return getattr(qe.PayloadSchemaType, kind.name.capitalize())
    if type(schema) in _PARAMS:
        edge_cls, options = _PARAMS[type(schema)]
        return edge_cls(**{name: getattr(schema, name) for name in options if getattr(schema, name, None) is not None})
    if hasattr(schema, "type"):  # text and geo parameters: the plain index of that type
        return edge_schema(str(schema.type))
    raise EdgeUnsupportedError(f"EdgeClient does not translate the payload index schema {schema!r}")


def client_schema(info: Any) -> models.PayloadIndexInfo:
    """Edge's ``PayloadIndexInfo`` as qdrant-client's (tenant flag of keyword indexes kept)."""
    kind = models.PayloadSchemaType[str(info.data_type).rpartition(".")[2].upper()]
    params = None
    if isinstance(info.params, qe.KeywordIndexParams):
        params = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=info.params.is_tenant)
    return models.PayloadIndexInfo(data_type=kind, params=params, points=info.points)
