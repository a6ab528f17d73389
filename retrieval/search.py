"""Query → ranked chunks."""

from __future__ import annotations

from typing import Any

from ingest.embedder import Embedder
from ingest.sparse import SparseEncoder
from korag.errors import StoreError
from korag.store import MODES, Fusion, QdrantStore
from korag.types import SearchResult


class Retriever:
    def __init__(
        self,
        embedder: Embedder,
        store: QdrantStore,
        sparse: SparseEncoder | None = None,
        mode: str = "hybrid",
        fusion: Fusion | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        self.embedder = embedder
        self.store = store
        self.sparse = sparse if sparse is not None else SparseEncoder()
        self.mode = mode
        self.fusion = fusion if fusion is not None else Fusion()
        self._sparse_known: bool | None = None
        if store.exists():
            store.check_model(embedder.info.name, embedder.info.dimension)

    def _has_sparse(self) -> bool:
        # A collection's vector layout never changes once created: ask Qdrant once, not per query.
        if self._sparse_known is None:
            self._sparse_known = self.store.has_sparse()
        return self._sparse_known

    @classmethod
    def from_settings(cls, embedder: Embedder, store: QdrantStore, settings) -> "Retriever":
        return cls(embedder, store, settings.sparse_encoder(), settings.search_mode, settings.fusion())

    def search(
        self,
        query: str,
        k: int = 5,
        filters: dict[str, Any] | None = None,
        mode: str | None = None,
        tenant: str | None = None,
    ) -> list[SearchResult]:
        """Top ``k`` chunks for ``query``, best first. ``filters`` match metadata fields exactly
        (a list value matches any of its items), e.g. ``{"source": "규정.pdf"}``; ``tenant``
        restricts the search to that tenant's documents; ``mode`` is dense, sparse or hybrid."""
        mode = mode if mode is not None else self.mode
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        if k < 1:
            raise ValueError("k must be >= 1")
        if not query.strip():
            raise ValueError("empty query")
        if not self.store.exists():
            return []
        if tenant is not None:
            filters = {**(filters or {}), "tenant": tenant}
        if mode != "dense" and not self._has_sparse():
            raise StoreError(
                f"collection {self.store.collection!r} has no keyword (sparse) vectors: it was created by an "
                "older korag; search with --mode dense, or re-ingest into a new collection"
            )
        vector = self.embedder.embed_queries([query])[0] if mode != "sparse" else None
        sparse = self.sparse.encode_query(query) if mode != "dense" else None
        return self.store.search(vector, k, filters, sparse=sparse, mode=mode, fusion=self.fusion)
