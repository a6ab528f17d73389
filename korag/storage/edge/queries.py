"""qdrant-client's ``query_points`` arguments as one Qdrant Edge ``QueryRequest``."""

from __future__ import annotations

from typing import Any

import numpy as np
import qdrant_edge as qe
from qdrant_client import models

from korag.storage.edge import EdgeUnsupportedError
from korag.storage.edge.filters import to_edge_filter
from korag.storage.edge.points import edge_with_payload

DEFAULT_RRF_K = 2  # Qdrant's (and qdrant-client's local engine's) default ranking constant
DEFAULT_PREFETCH_LIMIT = 10  # Qdrant's default when a Prefetch gives no limit


def query_request(
    query: Any,
    using: str | None,
    prefetch: Any,
    query_filter: models.Filter | None,
    search_params: models.SearchParams | None,
    limit: int,
    offset: int | None,
    with_payload: Any,
    with_vectors: Any,
    score_threshold: float | None,
) -> qe.QueryRequest:
    return qe.QueryRequest(
        limit=limit,
        offset=offset,
        query=scoring_query(query, using),
        prefetches=_prefetches(prefetch),
        with_vector=with_vectors,
        with_payload=edge_with_payload(with_payload),
        filter=to_edge_filter(query_filter),
        score_threshold=score_threshold,
        params=_params(search_params),
    )


def scoring_query(query: Any, using: str | None) -> Any:
    if query is None:
        return None
    if isinstance(query, models.NearestQuery):
        if query.mmr is not None:
            raise EdgeUnsupportedError("EdgeClient does not translate NearestQuery(mmr=...)")
        query = query.nearest
    if isinstance(query, np.ndarray):
        query = query.tolist()
    if isinstance(query, list):
        return qe.Query.Nearest(query, using=using)
    if isinstance(query, models.SparseVector):
        return qe.Query.Nearest(qe.SparseVector(list(query.indices), list(query.values)), using=using)
    if isinstance(query, models.RrfQuery):
        k = query.rrf.k if query.rrf.k is not None else DEFAULT_RRF_K
        return qe.Fusion.Rrf(k=k, weights=query.rrf.weights)
    if isinstance(query, models.FusionQuery):
        if query.fusion == models.Fusion.RRF:
            return qe.Fusion.Rrf(k=DEFAULT_RRF_K)
        return qe.Fusion.Dbsf()
    raise EdgeUnsupportedError(
        f"EdgeClient does not translate the query {type(query).__name__}: it takes dense vectors, "
        "SparseVector, NearestQuery, RrfQuery and FusionQuery"
    )


def _prefetches(prefetch: Any) -> list[qe.Prefetch] | None:
    if prefetch is None:
        return None
    if not isinstance(prefetch, list):
        prefetch = [prefetch]
    out = []
    for p in prefetch:
        if p.lookup_from is not None:
            raise EdgeUnsupportedError("EdgeClient does not translate Prefetch(lookup_from=...): one shard per collection")
        out.append(
            qe.Prefetch(
                limit=p.limit if p.limit is not None else DEFAULT_PREFETCH_LIMIT,
                query=scoring_query(p.query, p.using),
                prefetches=_prefetches(p.prefetch),
                params=_params(p.params),
                filter=to_edge_filter(p.filter),
                score_threshold=p.score_threshold,
            )
        )
    return out


def _params(params: models.SearchParams | None) -> qe.SearchParams | None:
    if params is None:
        return None
    if params.quantization is not None or params.acorn is not None or params.idf is not None:
        raise EdgeUnsupportedError("EdgeClient translates SearchParams(hnsw_ef, exact, indexed_only) only")
    return qe.SearchParams(
        hnsw_ef=params.hnsw_ef,
        exact=params.exact if params.exact is not None else False,
        indexed_only=params.indexed_only if params.indexed_only is not None else False,
    )
