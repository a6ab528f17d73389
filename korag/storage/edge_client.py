"""``EdgeClient``: Qdrant Edge (Qdrant's engine in-process) behind the part of
``qdrant_client.QdrantClient``'s API that korag uses, with the same argument and return types.

korag's store and registry run unchanged over either client. Each collection is one Edge
shard in its own subdirectory (``korag.storage.edge.catalog``); the directory is held by one process
until :meth:`EdgeClient.close`. Edge builds its HNSW index only in :meth:`EdgeClient.optimize`
(blocking); until then new points are searched exactly, by brute force. Segments are bounded so
that each optimize indexes only what is new (``korag.storage.edge.upkeep``: when and how much).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from qdrant_client import models
from qdrant_client.http.models import QueryResponse  # models.QueryResponse is fastembed's, not this

from korag.errors import StoreError
from korag.storage.edge import EdgeUnsupportedError
from korag.storage.edge import upkeep as upkeep_module
from korag.storage.edge.catalog import Catalog, CollectionSpec, edge_call
from korag.storage.edge.filters import edge_id, to_edge_filter
from korag.storage.edge.indexes import client_schema, edge_schema
from korag.storage.edge.points import (
    client_id,
    client_vector,
    edge_update_mode,
    edge_with_payload,
    selector,
    to_edge_points,
    to_record,
    to_scored,
)
from korag.storage.edge.queries import DEFAULT_PREFETCH_LIMIT, query_request
from korag.storage.edge.tiers import Tiers, discard, has_ids

log = logging.getLogger(__name__)
UPKEEP_MODES = ("inline", "process")


def _done() -> models.UpdateResult:
    return models.UpdateResult(operation_id=None, status=models.UpdateStatus.COMPLETED)


def _row(rows: Any, i: int) -> Any:
    row = rows[i]
    return row.tolist() if isinstance(row, np.ndarray) else row


def _refuse(method: str, **options: Any) -> None:
    given = sorted(name for name, value in options.items() if value is not None)
    if given:
        raise EdgeUnsupportedError(f"EdgeClient.{method} does not support {', '.join(given)}")


def _dense_nearest(query: Any) -> bool:
    if isinstance(query, models.NearestQuery) and query.mmr is None:
        query = query.nearest
    return isinstance(query, (list, np.ndarray))


class EdgeClient:
    """``EdgeClient(path)``: the embedded store in ``path``, created on first use.

    ``upkeep="inline"`` (default): :meth:`optimize` indexes in this process, holding its GIL.
    ``upkeep="process"``: collections with named dense vectors are indexed by child processes
    and searched over sealed shards plus the fresh points (``korag.storage.edge.tiers``); no
    index step runs in this process. ``seal_points``: fresh points per sealed shard (default:
    about ``upkeep.SEGMENT_KB`` of dense vectors)."""

    def __init__(self, path: str | Path, upkeep: str = "inline", seal_points: int | None = None) -> None:
        if upkeep not in UPKEEP_MODES:
            raise ValueError(f"upkeep must be one of {UPKEEP_MODES}, not {upkeep!r}")
        self.path = Path(path)
        self.upkeep = upkeep
        self.seal_points = seal_points
        self._catalog = Catalog(self.path)
        self._tiers: dict[str, Tiers | None] = {}
        self._tiers_lock = threading.Lock()

    # -- collections ------------------------------------------------------------------------------
    def collection_exists(self, collection_name: str, **kwargs: Any) -> bool:
        return self._catalog.exists(collection_name)

    def get_collections(self, **kwargs: Any) -> models.CollectionsResponse:
        names = self._catalog.names()
        return models.CollectionsResponse(collections=[models.CollectionDescription(name=n) for n in names])

    def create_collection(
        self,
        collection_name: str,
        vectors_config: models.VectorParams | dict[str, models.VectorParams] | None = None,
        sparse_vectors_config: dict[str, models.SparseVectorParams] | None = None,
        metadata: dict[str, Any] | None = None,
        **options: Any,
    ) -> bool:
        _refuse("create_collection", **{k: v for k, v in options.items() if k != "timeout"})
        spec = CollectionSpec(
            vectors=vectors_config if vectors_config is not None else {},
            sparse_vectors=dict(sparse_vectors_config) if sparse_vectors_config else None,
            metadata=metadata,
        )
        self._catalog.create(collection_name, spec)
        return True

    def delete_collection(self, collection_name: str, **kwargs: Any) -> bool:
        tiers = self._tiers.pop(collection_name, None)
        if tiers is not None:
            tiers.close()
        return self._catalog.drop(collection_name)

    def get_collection(self, collection_name: str, **kwargs: Any) -> models.CollectionInfo:
        spec = self._catalog.spec(collection_name)
        info = self._call(collection_name, "info")
        return models.CollectionInfo(
            status=models.CollectionStatus.GREEN,
            optimizer_status=models.OptimizersStatusOneOf.OK,
            indexed_vectors_count=info.indexed_vectors_count,
            points_count=info.points_count,
            segments_count=info.segments_count,
            payload_schema={key: client_schema(value) for key, value in info.payload_schema.items()},
            config=models.CollectionConfig(
                params=spec.params(),
                hnsw_config=models.HnswConfig(m=16, ef_construct=100, full_scan_threshold=10000),
                optimizer_config=models.OptimizersConfig(
                    deleted_threshold=0.2, vacuum_min_vector_number=1000, default_segment_number=0, flush_interval_sec=5
                ),
                metadata=spec.metadata,
            ),
        )

    def create_payload_index(
        self,
        collection_name: str,
        field_name: str,
        field_schema: Any = None,
        field_type: Any = None,
        wait: bool = True,
        **kwargs: Any,
    ) -> models.UpdateResult:
        schema = field_schema if field_schema is not None else field_type
        if schema is None:
            raise ValueError(f"create_payload_index({field_name!r}) needs a field_schema")
        op = qe.UpdateOperation.create_field_index(field_name, edge_schema(schema))
        self._write(collection_name, op, sealed_op=op)
        return _done()

    def optimize(self, collection_name: str) -> bool:
        """Not in qdrant-client: index the segments that reached ``korag.storage.edge.upkeep.SEGMENT_KB``
        and vacuum deleted points now. Blocks the process (holds the GIL) while it runs: seconds
        to tens of seconds per full segment. Returns whether anything was optimized."""
        tiers = self._tier(collection_name)
        if tiers is not None:
            return self.seal(collection_name)
        return self._call(collection_name, "optimize")

    def seal(self, collection_name: str, force: bool = False) -> bool:
        """Not in qdrant-client; ``upkeep="process"`` only: index up to ``seal_points`` fresh
        points in a child process (when that many are waiting, or any with ``force``) and swap
        the result in. Blocks the calling thread, not the process. Returns whether it sealed."""
        tiers = self._tier(collection_name)
        if tiers is None:
            raise ValueError(f"collection {collection_name!r} is not kept in tiers (upkeep={self.upkeep!r})")
        return tiers.seal(self._indexes(collection_name), force=force)

    def _indexes(self, collection_name: str) -> dict[str, str]:
        """The collection's payload indexes, field -> Edge schema name, for a sealed shard's build."""
        schema = self._call(collection_name, "info").payload_schema
        return {field: str(info.data_type).rpartition(".")[2] for field, info in schema.items()}

    def maintain(self) -> dict[str, bool]:
        """Not in qdrant-client: :meth:`optimize` every collection this client has opened
        (``korag.storage.edge.upkeep.after_batch`` calls it after an ingest batch). With
        ``upkeep="process"`` it seals while enough fresh points wait, then merges small sealed
        shards (``Tiers.merge``); a failed build is logged and leaves its points where they were
        (fresh ones searched exactly)."""
        out = {}
        for name in self._catalog.loaded():
            tiers = self._tier(name)
            if tiers is None:
                out[name] = self.optimize(name)
                continue
            sealed = False
            try:
                while tiers.due() and self.seal(name):
                    sealed = True
                while tiers.mergeable() and tiers.merge(self._indexes(name)):
                    sealed = True
            except StoreError as exc:
                log.warning("index upkeep of %s: %s", name, exc)
            out[name] = sealed
        return out

    # -- points: writes ---------------------------------------------------------------------------
    def upsert(
        self,
        collection_name: str,
        points: Sequence[models.PointStruct],
        wait: bool = True,
        update_filter: models.Filter | None = None,
        update_mode: models.UpdateMode | None = None,
        **kwargs: Any,
    ) -> models.UpdateResult:
        """``update_filter``: an existing point is only replaced when it matches (new points are
        always inserted), as in Qdrant."""
        operation = qe.UpdateOperation.upsert_points(
            to_edge_points(points), condition=to_edge_filter(update_filter), update_mode=edge_update_mode(update_mode)
        )
        self._write(collection_name, operation, moved=[edge_id(p.id) for p in points])
        return _done()

    def upsert_plain(
        self,
        collection_name: str,
        ids: Sequence[Any],
        dense: Mapping[str, np.ndarray],
        payloads: Sequence[dict[str, Any]],
        sparse: Mapping[str, Sequence[Any]] | None = None,
    ) -> models.UpdateResult:
        """Not in qdrant-client: upsert without building ``PointStruct`` models (several times
        faster). ``dense``: vector name -> one row per point; ``sparse``: vector name -> per point
        an object with ``indices`` and ``values`` (None or no indices: the point has no such vector)."""
        sparse = sparse if sparse is not None else {}
        n = len(ids)
        if len(payloads) != n or any(len(rows) != n for rows in (*dense.values(), *sparse.values())):
            raise ValueError("ids, payloads and every vector differ in length")
        points = []
        for i in range(n):  # a row's tolist() crosses into Edge faster than the ndarray row itself
            vector: dict[str, Any] = {name: _row(rows, i) for name, rows in dense.items()}
            for name, rows in sparse.items():
                value = rows[i]
                if value is not None and len(value.indices):
                    vector[name] = qe.SparseVector(list(value.indices), list(value.values))
            points.append(qe.Point(edge_id(ids[i]), vector, payloads[i]))
        self._write(collection_name, qe.UpdateOperation.upsert_points(points), moved=[edge_id(i) for i in ids])
        return _done()

    def delete(self, collection_name: str, points_selector: Any, wait: bool = True, **kwargs: Any) -> models.UpdateResult:
        ids, flt = selector(points_selector)
        if flt is None:
            self._write(collection_name, qe.UpdateOperation.delete_points(ids), removed=ids)
        else:
            op = qe.UpdateOperation.delete_points_by_filter(flt)
            self._write(collection_name, op, sealed_op=op)
        return _done()

    def set_payload(
        self, collection_name: str, payload: dict[str, Any], points: Any, key: str | None = None,
        wait: bool = True, **kwargs: Any,
    ) -> models.UpdateResult:
        """Merge ``payload`` into the points' payloads (into the object at ``key`` when given)."""
        ids, flt = selector(points)
        if flt is None:
            op = qe.UpdateOperation.set_payload(ids, payload, key=key)
            sealed_op = qe.UpdateOperation.set_payload_by_filter(has_ids(set(ids)), payload, key=key)
        else:
            op = sealed_op = qe.UpdateOperation.set_payload_by_filter(flt, payload, key=key)
        self._write(collection_name, op, sealed_op=sealed_op)
        return _done()

    def overwrite_payload(
        self, collection_name: str, payload: dict[str, Any], points: Any, wait: bool = True, **kwargs: Any
    ) -> models.UpdateResult:
        ids, flt = selector(points)
        if flt is None:
            op = qe.UpdateOperation.overwrite_payload(ids, payload)
            sealed_op = qe.UpdateOperation.overwrite_payload_by_filter(has_ids(set(ids)), payload)
        else:
            op = sealed_op = qe.UpdateOperation.overwrite_payload_by_filter(flt, payload)
        self._write(collection_name, op, sealed_op=sealed_op)
        return _done()

    def delete_payload(
        self, collection_name: str, keys: Sequence[str], points: Any, wait: bool = True, **kwargs: Any
    ) -> models.UpdateResult:
        ids, flt = selector(points)
        if flt is None:
            op = qe.UpdateOperation.delete_payload(ids, list(keys))
            sealed_op = qe.UpdateOperation.delete_payload_by_filter(has_ids(set(ids)), list(keys))
        else:
            op = sealed_op = qe.UpdateOperation.delete_payload_by_filter(flt, list(keys))
        self._write(collection_name, op, sealed_op=sealed_op)
        return _done()

    # -- points: reads ----------------------------------------------------------------------------
    def retrieve(
        self, collection_name: str, ids: Sequence[Any], with_payload: Any = True, with_vectors: Any = False,
        **kwargs: Any,
    ) -> list[models.Record]:
        found = self._call(
            collection_name, "retrieve", [edge_id(i) for i in ids], edge_with_payload(with_payload), with_vectors
        )
        return [to_record(r) for r in found]

    def scroll(
        self,
        collection_name: str,
        scroll_filter: models.Filter | None = None,
        limit: int = 10,
        order_by: Any = None,
        offset: Any = None,
        with_payload: Any = True,
        with_vectors: Any = False,
        **kwargs: Any,
    ) -> tuple[list[models.Record], int | str | None]:
        _refuse("scroll", order_by=order_by)
        request = qe.ScrollRequest(
            offset=edge_id(offset) if offset is not None else None,
            limit=limit,
            filter=to_edge_filter(scroll_filter),
            with_payload=edge_with_payload(with_payload),
            with_vector=with_vectors,
        )
        records, next_offset = self._call(collection_name, "scroll", request)
        return [to_record(r) for r in records], client_id(next_offset) if next_offset is not None else None

    def count(
        self, collection_name: str, count_filter: models.Filter | None = None, exact: bool = True, **kwargs: Any
    ) -> models.CountResult:
        n = self._call(collection_name, "count", qe.CountRequest(exact=exact, filter=to_edge_filter(count_filter)))
        return models.CountResult(count=n)

    def query_points(
        self,
        collection_name: str,
        query: Any = None,
        using: str | None = None,
        prefetch: Any = None,
        query_filter: models.Filter | None = None,
        search_params: models.SearchParams | None = None,
        limit: int = 10,
        offset: int | None = None,
        with_payload: Any = True,
        with_vectors: Any = False,
        score_threshold: float | None = None,
        lookup_from: Any = None,
        **kwargs: Any,
    ) -> QueryResponse:
        _refuse("query_points", lookup_from=lookup_from)
        tiers = self._tier(collection_name)
        if tiers is not None and prefetch is None and _dense_nearest(query) and tiers.is_dense(using):
            return self._query_tiers(tiers, collection_name, query, using, query_filter, search_params, limit,
                                     offset or 0, with_payload, with_vectors, score_threshold)
        if tiers is not None and prefetch is not None:
            prefetch = self._prefetch_tiers(tiers, collection_name, prefetch)
        request = query_request(
            query, using, prefetch, query_filter, search_params, limit, offset, with_payload, with_vectors,
            score_threshold,
        )
        return QueryResponse(points=[to_scored(p) for p in self._call(collection_name, "query", request)])

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self, **kwargs: Any) -> None:
        """Flush and close every shard and release the directory for other processes."""
        try:
            for tiers in self._tiers.values():
                if tiers is not None:
                    tiers.close()
        finally:
            self._tiers.clear()
            self._catalog.close()

    # -- internals --------------------------------------------------------------------------------
    def _call(self, collection_name: str, method: str, *args: Any) -> Any:
        shard = self._catalog.shard(collection_name)
        return edge_call(self._catalog.directory(collection_name), getattr(shard, method), *args)

    def _update(self, collection_name: str, operation: Any) -> None:
        self._call(collection_name, "update", operation)

    def _tier(self, collection_name: str) -> Tiers | None:
        """The collection's tiers with ``upkeep="process"`` and named dense vectors, else None.
        In ``inline`` mode the first call drops sealed shards a ``process`` mode left behind
        (this mode's writes would not reach them; ``tiers.discard``)."""
        if self.upkeep != "process":
            if collection_name not in self._tiers:
                with self._tiers_lock:
                    if collection_name not in self._tiers:
                        discard(self._catalog.directory(collection_name))
                        self._tiers[collection_name] = None
            return None
        with self._tiers_lock:
            return self._open_tiers(collection_name)

    def _open_tiers(self, collection_name: str) -> Tiers | None:
        if collection_name not in self._tiers:
            spec = self._catalog.spec(collection_name)
            if not isinstance(spec.vectors, dict) or not spec.vectors:
                self._tiers[collection_name] = None
            else:
                dense = {
                    name: {"size": p.size, "distance": str(p.distance.value).capitalize(), "on_disk": p.on_disk}
                    for name, p in spec.vectors.items()
                }
                seal_points = self.seal_points or max(
                    1, upkeep_module.SEGMENT_KB * 1024 // (4 * sum(v["size"] for v in dense.values())))
                shard = self._catalog.shard(collection_name)
                self._tiers[collection_name] = edge_call(
                    self._catalog.directory(collection_name), Tiers, self._catalog.directory(collection_name), shard,
                    dense, seal_points)
        return self._tiers[collection_name]

    def _write(self, collection_name: str, operation: Any, sealed_op: Any = None, moved: list[Any] | None = None,
               removed: list[Any] | None = None) -> None:
        tiers = self._tier(collection_name)
        if tiers is None:
            self._update(collection_name, operation)
        else:
            edge_call(self._catalog.directory(collection_name), tiers.write, operation, sealed_op, moved, removed)

    def _prefetch_tiers(self, tiers: Tiers, collection_name: str, prefetch: Any) -> list[models.Prefetch]:
        """``prefetch`` with each plain dense one (no nested prefetch) found by the tiers: the
        collection's shard is never indexed in this mode, so there it would scan every dense
        vector. The engine still runs and fuses the prefetches (rrf, dbsf): a dense one is kept,
        restricted to the ids the tiers found and scored exactly, as the tiers score them."""
        out = []
        for p in prefetch if isinstance(prefetch, list) else [prefetch]:
            if p.prefetch is None and p.lookup_from is None and _dense_nearest(p.query) and tiers.is_dense(p.using):
                limit = p.limit if p.limit is not None else DEFAULT_PREFETCH_LIMIT
                request = query_request(p.query, p.using, None, p.filter, p.params, limit, None, False, False,
                                        p.score_threshold)
                hits = edge_call(self._catalog.directory(collection_name), tiers.query_dense, request, limit)
                if hits is not None:  # None: the sealed shards are still being loaded
                    found = models.HasIdCondition(has_id=[client_id(h.id) for h in hits])
                    p = p.model_copy(update={
                        "filter": models.Filter(must=[found] if p.filter is None else [p.filter, found]),
                        "params": models.SearchParams(exact=True)})
            out.append(p)
        return out

    def _query_tiers(self, tiers: Tiers, collection_name: str, query: Any, using: str | None,
                     query_filter: models.Filter | None, search_params: models.SearchParams | None, limit: int,
                     offset: int, with_payload: Any, with_vectors: Any, score_threshold: float | None) -> QueryResponse:
        keep = limit + offset
        request = query_request(query, using, None, query_filter, search_params, keep, None, False, False,
                                score_threshold)
        hits = edge_call(self._catalog.directory(collection_name), tiers.query_dense, request, keep)
        if hits is None:  # the sealed shards are still being loaded: the collection's shard has every point
            hits = self._call(collection_name, "query", request)
        hits = hits[offset:]
        # current payloads (and vectors) from the collection's shard, which has every live point
        found = self._call(collection_name, "retrieve", [p.id for p in hits], edge_with_payload(with_payload),
                           with_vectors)
        records = {client_id(r.id): r for r in found}
        points = []
        for p in hits:
            record = records.get(client_id(p.id))
            if record is None:
                continue
            points.append(models.ScoredPoint(
                id=client_id(p.id), version=p.version, score=p.score,
                payload=record.payload if with_payload is not False else None,
                vector=client_vector(record.vector) if with_vectors else None,
            ))
        return QueryResponse(points=points)
