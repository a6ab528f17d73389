"""Query → ranked chunks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qdrant_client import models

from ingest.embedder import Embedder
from ingest.sparse import SparseEncoder
from korag.errors import StoreError
from korag.rules import check_tenant
from korag.storage.store import MODES, Fusion, QdrantStore
from korag.types import SearchResult
from retrieval.rerank import Reranker
from retrieval.sections import check_context, section_results


@dataclass(frozen=True)
class SearchResponse:
    """Results, and a note for the caller when the query had to be adapted (cut for the dense channel)."""

    results: list[SearchResult]
    notice: str | None = None


class Retriever:
    def __init__(
        self,
        embedder: Embedder,
        store: QdrantStore,
        sparse: SparseEncoder | None = None,
        mode: str = "hybrid",
        fusion: Fusion | None = None,
        reranker: Reranker | None = None,
        context: str = "chunk",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        check_context(context)
        self.embedder = embedder
        self.store = store
        self.sparse = sparse if sparse is not None else SparseEncoder()
        self.mode = mode
        self.fusion = fusion if fusion is not None else Fusion()
        self.reranker = reranker  # re-orders the top candidates of every mode (KORAG_RERANK_MODEL)
        self.context = context  # chunk or section: what a search returns (retrieval.sections)
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
        return cls(embedder, store, SparseEncoder.from_settings(settings), settings.search_mode,
                   Fusion.from_settings(settings), Reranker.from_settings(settings), settings.search_context)

    def search(
        self,
        query: str,
        k: int = 5,
        filters: dict[str, Any] | None = None,
        mode: str | None = None,
        tenant: str | None = None,
        where: models.Filter | None = None,
        context: str | None = None,
    ) -> list[SearchResult]:
        """Top ``k`` chunks for ``query``, best first. ``filters`` match metadata fields exactly
        (a list value matches any of its items; ``"3"`` also matches a stored 3, ``"true"`` a stored
        True), e.g. ``{"source": "규정.pdf"}``; ``tenant`` restricts the search to that tenant's
        documents; ``where`` is a Qdrant filter that must match as well (the service's filter
        language: korag.storage.query_filter.parse_filter); ``mode`` is dense, sparse or hybrid; with a
        reranker, the top candidates of that mode are re-ordered by it (:mod:`retrieval.rerank`);
        ``context="section"`` returns, instead of chunks, the top ``k`` runs of consecutive chunks of
        a section the matching chunks belong to, each once (:mod:`retrieval.sections`). A query
        longer than the model's limit is cut for the dense channel only (see
        :meth:`search_with_notes` to learn when)."""
        return self.search_with_notes(query, k, filters, mode, tenant, where=where, context=context).results

    def search_with_notes(
        self,
        query: str,
        k: int = 5,
        filters: dict[str, Any] | None = None,
        mode: str | None = None,
        tenant: str | None = None,
        where: models.Filter | None = None,
        context: str | None = None,
    ) -> SearchResponse:
        """:meth:`search`, plus a notice when the query was cut to fit the dense channel."""
        mode = mode if mode is not None else self.mode
        context = context if context is not None else self.context
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        check_context(context)
        if k < 1:
            raise ValueError("k must be >= 1")
        if not query.strip():
            raise ValueError("empty query")
        check_tenant(tenant)
        if not self.store.exists():
            return SearchResponse([])
        if tenant is not None:
            filters = {**(filters if filters is not None else {}), "tenant": tenant}
        if mode != "dense" and not self._has_sparse():
            raise StoreError(
                f"collection {self.store.collection!r} has no keyword (sparse) vectors: it was created by an "
                "older korag; search with --mode dense, or re-ingest into a new collection"
            )
        fit = self.embedder.fit_query(query) if mode != "sparse" else None
        vector = self.embedder.embed_queries([fit.text])[0] if fit is not None else None
        sparse = self.sparse.encode_query(query) if mode != "dense" else None

        def ranked(top: int) -> list[SearchResult]:
            """The top chunks of this query, re-ordered by the reranker when there is one."""
            depth = self.reranker.depth(top) if self.reranker is not None else top
            found = self.store.search(vector, depth, filters, sparse=sparse, mode=mode, fusion=self.fusion,
                                      where=where)
            return self.reranker.rerank(query, found, top) if self.reranker is not None else found

        results = ranked(k) if context == "chunk" else section_results(self.store, ranked, k)
        return SearchResponse(results, fit.notice() if fit is not None else None)
