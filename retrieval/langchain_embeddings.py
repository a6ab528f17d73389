"""LangChain ``Embeddings`` over korag's embedder: the passage prefix for documents, the query
prefix for queries, the same model calls korag's pipeline and search make."""

from __future__ import annotations

import asyncio

from langchain_core.embeddings import Embeddings

from ingest.embedder import Embedder


class KoragEmbeddings(Embeddings):
    """Over-long documents are refused (``InputTooLongError``), never truncated; an empty text
    gets the vector of the bare passage prefix, as other LangChain embeddings embed ``""``.
    The async calls run the model in a worker thread, so the event loop is never blocked."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed_passage_texts(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed_queries([text])[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)
