"""Query → ranked chunks."""

from __future__ import annotations

from typing import Any

from ingest.embedder import Embedder
from korag.store import QdrantStore
from korag.types import SearchResult


class Retriever:
    def __init__(self, embedder: Embedder, store: QdrantStore) -> None:
        self.embedder = embedder
        self.store = store
        if store.exists():
            store.check_model(embedder.info.name, embedder.info.dimension)

    def search(self, query: str, k: int = 5, filters: dict[str, Any] | None = None) -> list[SearchResult]:
        """Top ``k`` chunks for ``query``, best first. ``filters`` match metadata fields exactly
        (a list value matches any of its items), e.g. ``{"source": "규정.pdf"}``."""
        if k < 1:
            raise ValueError("k must be >= 1")
        if not query.strip():
            raise ValueError("empty query")
        if not self.store.exists():
            return []
        vector = self.embedder.embed_queries([query])[0]
        return self.store.search(vector, k, filters)
