"""The Qdrant store: one code path for the embedded default and a Qdrant server.

qdrant-client's ``QdrantClient`` is already a facade over a local engine (":memory:" or a
directory) and a remote server; korag picks the location from settings and otherwise uses one
API. The collection remembers which embedding model filled it (collection metadata) and refuses
vectors from another model.

Payload layout follows langchain-qdrant: ``page_content`` and ``metadata``.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from korag.errors import ModelMismatchError, StoreBusyError
from korag.settings import Settings
from korag.types import SearchResult, StoredChunk

SearchMode = str  # "dense" | "sparse" | "hybrid"
MODES = ("dense", "sparse", "hybrid")

DENSE = "dense"  # the named dense vector; langchain-qdrant reads it with vector_name="dense"
SPARSE = "sparse"  # Kiwi BM25 term weights; Qdrant applies IDF at query time
_POINT_NAMESPACE = uuid.UUID("6f2b1c1e-6d1f-4d38-9b8e-6b6f7261670a")
_INDEXED_FIELDS = ("doc_id", "source")
TENANT_FIELD = "tenant"


@dataclass(frozen=True)
class Fusion:
    """Weighted reciprocal-rank fusion of the dense and sparse channels, done by Qdrant:
    score = Σ_c 1 / (rank_c / weight_c + k − 1), rank from 1 (a weight scales a channel's ranks;
    weight 0 drops the channel). ``prefetch`` candidates come from each channel."""

    dense_weight: float = 0.3
    sparse_weight: float = 1.0
    k: int = 2
    prefetch: int = 50


def point_id(doc_id: str, chunk_index: int) -> str:
    """Deterministic: a redelivered task rewrites the same points instead of adding new ones."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{doc_id}:{chunk_index}"))


def open_client(settings: Settings) -> QdrantClient:
    """A server when KORAG_QDRANT_URL is set (":memory:" for a throwaway local one), else the
    embedded engine under KORAG_DATA_DIR. The embedded engine allows one process per directory."""
    if settings.qdrant_url == ":memory:":
        return QdrantClient(location=":memory:")
    if settings.qdrant_url is not None:
        return QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
    settings.qdrant_path.mkdir(parents=True, exist_ok=True)
    try:
        return QdrantClient(path=str(settings.qdrant_path))
    except RuntimeError as exc:  # portalocker: "already accessed by another instance"
        raise StoreBusyError(
            f"embedded Qdrant storage {settings.qdrant_path} is in use by another process ({exc}); "
            "the embedded engine allows one process at a time: stop the other process, or run a "
            "Qdrant server and set KORAG_QDRANT_URL"
        ) from exc


def _sparse(vector: Any) -> models.SparseVector:
    return models.SparseVector(indices=list(vector.indices), values=list(vector.values))


def _filter(filters: dict[str, Any] | None) -> models.Filter | None:
    if not filters:
        return None
    must = []
    for key, value in filters.items():
        field = f"metadata.{key}"
        if isinstance(value, (list, tuple, set)):
            must.append(models.FieldCondition(key=field, match=models.MatchAny(any=list(value))))
        else:
            must.append(models.FieldCondition(key=field, match=models.MatchValue(value=value)))
    return models.Filter(must=must)


class QdrantStore:
    def __init__(self, client: QdrantClient, collection: str, upsert_batch_size: int = 256) -> None:
        self.client = client
        self.collection = collection
        self.upsert_batch_size = upsert_batch_size

    # -- collection -----------------------------------------------------------------------------
    def ensure_collection(self, model_name: str, dimension: int) -> None:
        """Create on first use; afterwards refuse a different model or dimension."""
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(
                self.collection,
                vectors_config={DENSE: models.VectorParams(size=dimension, distance=models.Distance.COSINE)},
                sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                metadata={"embedding_model": model_name, "dimension": dimension},
            )
            with warnings.catch_warnings():  # the local engine ignores payload indexes and says so
                warnings.simplefilter("ignore")
                for field in _INDEXED_FIELDS:
                    self.client.create_payload_index(
                        self.collection, f"metadata.{field}", models.PayloadSchemaType.KEYWORD
                    )
                self.client.create_payload_index(
                    self.collection,
                    f"metadata.{TENANT_FIELD}",
                    models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
                )
            return
        self.check_model(model_name, dimension)

    def check_model(self, model_name: str, dimension: int) -> None:
        info = self.client.get_collection(self.collection)
        recorded = (info.config.metadata or {}).get("embedding_model")
        vectors = info.config.params.vectors
        size = vectors[DENSE].size if isinstance(vectors, dict) and DENSE in vectors else None
        if recorded != model_name or size != dimension:
            raise ModelMismatchError(
                f"collection {self.collection!r} was filled by embedding model {recorded!r} "
                f"({size} dimensions); this process uses {model_name!r} ({dimension} dimensions). "
                "Vectors of different models cannot be compared: set KORAG_EMBEDDING_MODEL back, "
                "or use another KORAG_COLLECTION (or delete this one and re-ingest)"
            )

    def exists(self) -> bool:
        return self.client.collection_exists(self.collection)

    # -- writes ---------------------------------------------------------------------------------
    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
        sparse: Sequence[Any] | None = None,
    ) -> None:
        """``sparse``: per point an object with ``indices`` and ``values`` (BM25 weights)."""
        if not (len(ids) == len(vectors) == len(payloads)) or (sparse is not None and len(sparse) != len(ids)):
            raise ValueError("ids, vectors, payloads and sparse vectors differ in length")
        points = []
        for i, (pid, vec, payload) in enumerate(zip(ids, vectors, payloads)):
            vector: dict[str, Any] = {DENSE: vec.tolist()}
            if sparse is not None and sparse[i].indices:
                vector[SPARSE] = models.SparseVector(indices=sparse[i].indices, values=sparse[i].values)
            points.append(models.PointStruct(id=pid, vector=vector, payload=payload))
        for start in range(0, len(points), self.upsert_batch_size):
            self.client.upsert(self.collection, points=points[start : start + self.upsert_batch_size], wait=True)

    def delete_other_versions(self, doc_id: str, content_hash: str) -> None:
        """After a new version is written: remove the document's chunks of any other content."""
        selector = models.Filter(
            must=[models.FieldCondition(key="metadata.doc_id", match=models.MatchValue(value=doc_id))],
            must_not=[models.FieldCondition(key="metadata.content_hash", match=models.MatchValue(value=content_hash))],
        )
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=selector), wait=True)

    def delete_document(self, doc_id: str) -> int:
        """Remove every chunk of a document; returns how many there were."""
        if not self.exists():
            return 0
        count = self.count({"doc_id": doc_id})
        selector = models.Filter(must=[models.FieldCondition(key="metadata.doc_id", match=models.MatchValue(value=doc_id))])
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=selector), wait=True)
        return count

    # -- reads ----------------------------------------------------------------------------------
    def has_sparse(self) -> bool:
        return SPARSE in (self.client.get_collection(self.collection).config.params.sparse_vectors or {})

    def search(
        self,
        vector: np.ndarray | None,
        k: int,
        filters: dict[str, Any] | None = None,
        sparse: Any | None = None,
        mode: SearchMode = "dense",
        fusion: Fusion | None = None,
    ) -> list[SearchResult]:
        """One Qdrant query per call. ``hybrid`` prefetches both channels and fuses them
        server-side with weighted RRF."""
        query_filter = _filter(filters)
        if mode == "dense":
            response = self.client.query_points(
                self.collection, query=vector.tolist(), using=DENSE, limit=k, query_filter=query_filter, with_payload=True
            )
        elif mode == "sparse":
            if not sparse.indices:
                return []
            response = self.client.query_points(
                self.collection, query=_sparse(sparse), using=SPARSE, limit=k, query_filter=query_filter, with_payload=True
            )
        elif mode == "hybrid":
            fusion = fusion if fusion is not None else Fusion()
            depth = max(fusion.prefetch, k)
            prefetch = [models.Prefetch(query=vector.tolist(), using=DENSE, limit=depth, filter=query_filter)]
            weights = [fusion.dense_weight]
            if sparse.indices:
                prefetch.append(models.Prefetch(query=_sparse(sparse), using=SPARSE, limit=depth, filter=query_filter))
                weights.append(fusion.sparse_weight)
            response = self.client.query_points(
                self.collection,
                prefetch=prefetch,
                query=models.RrfQuery(rrf=models.Rrf(k=fusion.k, weights=weights)),
                limit=k,
                with_payload=True,
            )
        else:
            raise ValueError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        return [
            SearchResult(
                id=str(p.id),
                score=float(p.score),
                text=(p.payload or {}).get("page_content", ""),
                metadata=(p.payload or {}).get("metadata", {}),
            )
            for p in response.points
        ]

    def iter_chunks(self, filters: dict[str, Any] | None = None, batch: int = 256) -> Iterator[StoredChunk]:
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection, scroll_filter=_filter(filters), limit=batch, offset=offset, with_payload=True
            )
            for p in points:
                payload = p.payload or {}
                yield StoredChunk(id=str(p.id), text=payload.get("page_content", ""), metadata=payload.get("metadata", {}))
            if offset is None:
                return

    def count(self, filters: dict[str, Any] | None = None) -> int:
        return self.client.count(self.collection, count_filter=_filter(filters), exact=True).count


@contextmanager
def store_session(settings: Settings, wait_s: float = 0.0) -> Iterator[QdrantStore]:
    """Open a client for the duration of a block and always close it (the embedded engine's
    directory lock is released on close). ``wait_s``: how long to wait for another process to
    release the embedded engine's directory."""
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            client = open_client(settings)
            break
        except StoreBusyError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        yield QdrantStore(client, settings.collection, settings.upsert_batch_size)
    finally:
        client.close()
