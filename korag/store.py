"""The Qdrant store: one code path for the embedded default and a Qdrant server.

qdrant-client's ``QdrantClient`` is already a facade over a local engine (":memory:" or a
directory) and a remote server; korag picks the location from settings and otherwise uses one
API. The collection remembers which embedding model filled it (collection metadata) and refuses
vectors from another model.

Payload layout follows langchain-qdrant: ``page_content`` and ``metadata``.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from korag.errors import ModelMismatchError, StoreBusyError
from korag.settings import Settings
from korag.types import SearchResult, StoredChunk

DENSE = "dense"  # the named dense vector; langchain-qdrant reads it with vector_name="dense"
_POINT_NAMESPACE = uuid.UUID("6f2b1c1e-6d1f-4d38-9b8e-6b6f7261670a")
_INDEXED_FIELDS = ("doc_id", "source")


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
                metadata={"embedding_model": model_name, "dimension": dimension},
            )
            with warnings.catch_warnings():  # the local engine ignores payload indexes and says so
                warnings.simplefilter("ignore")
                for field in _INDEXED_FIELDS:
                    self.client.create_payload_index(
                        self.collection, f"metadata.{field}", models.PayloadSchemaType.KEYWORD
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
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        if not (len(ids) == len(vectors) == len(payloads)):
            raise ValueError("ids, vectors and payloads differ in length")
        step = self.upsert_batch_size
        for start in range(0, len(ids), step):
            points = [
                models.PointStruct(id=pid, vector={DENSE: vec.tolist()}, payload=payload)
                for pid, vec, payload in zip(
                    ids[start : start + step], vectors[start : start + step], payloads[start : start + step]
                )
            ]
            self.client.upsert(self.collection, points=points, wait=True)

    def delete_stale_chunks(self, doc_id: str, keep_below: int) -> None:
        """Remove a document's chunks with index >= keep_below (left from a longer old version)."""
        selector = models.Filter(
            must=[
                models.FieldCondition(key="metadata.doc_id", match=models.MatchValue(value=doc_id)),
                models.FieldCondition(key="metadata.chunk_index", range=models.Range(gte=keep_below)),
            ]
        )
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=selector), wait=True)

    # -- reads ----------------------------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int, filters: dict[str, Any] | None = None) -> list[SearchResult]:
        response = self.client.query_points(
            self.collection,
            query=vector.tolist(),
            using=DENSE,
            limit=k,
            query_filter=_filter(filters),
            with_payload=True,
        )
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
def store_session(settings: Settings) -> Iterator[QdrantStore]:
    """Open a client for the duration of a block and always close it (the embedded engine's
    directory lock is released on close)."""
    client = open_client(settings)
    try:
        yield QdrantStore(client, settings.collection, settings.upsert_batch_size)
    finally:
        client.close()
