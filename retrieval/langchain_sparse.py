"""korag's Korean keyword channel for langchain-qdrant: a ``SparseEmbeddings`` producing the
Kiwi BM25 vectors korag stores, and korag's weighted fusion as a ``hybrid_fusion`` query.

    retriever = Retriever.from_settings(embedder, store, settings)  # korag's encoder and fusion
    QdrantVectorStore(
        client=store.client, collection_name=settings.collection, embedding=KoragEmbeddings(embedder),
        sparse_embedding=KoragSparseEmbeddings(retriever.sparse),
        vector_name="dense", sparse_vector_name="sparse", retrieval_mode=RetrievalMode.HYBRID,
    ).similarity_search(question, k=5, hybrid_fusion=korag_fusion(retriever.fusion))
"""

from __future__ import annotations

import asyncio

from langchain_qdrant import SparseEmbeddings, SparseVector
from qdrant_client import models

from ingest.sparse import SparseEncoder
from korag.storage.store import Fusion


def _to_langchain(vector) -> SparseVector:
    return SparseVector(indices=list(vector.indices), values=list(vector.values))


class KoragSparseEmbeddings(SparseEmbeddings):
    """Documents: BM25 term-frequency weights over Kiwi content morphemes (Qdrant's IDF modifier
    adds the rest at query time); queries: each content morpheme once, weight 1. Pass the
    encoder korag uses (``Retriever.sparse``) so tags and BM25 parameters match the collection."""

    def __init__(self, encoder: SparseEncoder) -> None:
        self.encoder = encoder

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        return [_to_langchain(self.encoder.encode_document(text)) for text in texts]

    def embed_query(self, text: str) -> SparseVector:
        return _to_langchain(self.encoder.encode_query(text))

    async def aembed_documents(self, texts: list[str]) -> list[SparseVector]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> SparseVector:
        return await asyncio.to_thread(self.embed_query, text)


def korag_fusion(fusion: Fusion) -> models.RrfQuery | models.FusionQuery:
    """korag's fusion as langchain-qdrant's ``hybrid_fusion`` argument (its prefetches are dense
    first, sparse second): weighted RRF at ``fusion``'s weights and k, or DBSF. Qdrant fuses
    langchain-qdrant's query itself and cannot normalise scores by min and max, so a ``convex``
    fusion (korag's default) is given as weighted RRF at the same weights: korag search matches it
    exactly with KORAG_FUSION_METHOD=rrf. langchain-qdrant prefetches ``k`` candidates per channel
    where korag prefetches ``fusion.prefetch``, so RRF's ranks below the top can differ, and DBSF,
    which normalises over the candidates, can differ at the top too."""
    if fusion.method == "dbsf":
        return models.FusionQuery(fusion=models.Fusion.DBSF)
    return models.RrfQuery(rrf=models.Rrf(k=fusion.k, weights=[fusion.dense_weight, fusion.sparse_weight]))
