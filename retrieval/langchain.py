"""LangChain adapters, the only place korag subclasses LangChain classes."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from ingest.embedder import Embedder
from korag.types import Chunk
from retrieval.search import Retriever


class KoragEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over korag's embedder: documents get the passage prefix,
    queries the query prefix. Over-long documents are refused, not truncated."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        chunks = [Chunk(text=t, index=i) for i, t in enumerate(texts)]
        vectors, _ = self.embedder.embed_passages(chunks)
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed_queries([text])[0].tolist()


class KoragRetriever(BaseRetriever):
    """``retriever.invoke("질문")`` → top-k ``Document``s with korag metadata plus ``score`` and ``id``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Retriever
    k: int = 5
    filters: dict[str, Any] | None = Field(default=None)
    mode: str | None = Field(default=None, description="dense, sparse or hybrid; default: the retriever's")
    tenant: str | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [
            Document(page_content=r.text, metadata={**r.metadata, "score": r.score, "id": r.id}, id=r.id)
            for r in self.retriever.search(query, self.k, self.filters, mode=self.mode, tenant=self.tenant)
        ]
