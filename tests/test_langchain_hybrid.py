"""korag's Korean keyword channel through langchain-qdrant: ``QdrantVectorStore`` in HYBRID mode
over a korag collection, with ``KoragSparseEmbeddings``, ranks like ``korag search --mode hybrid``."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_qdrant import QdrantVectorStore, RetrievalMode

from ingest.pipeline import Pipeline
from korag.storage.store import SPARSE, QdrantStore, open_client
from retrieval.langchain import KoragEmbeddings, KoragSparseEmbeddings, korag_fusion
from retrieval.search import Retriever
from tests.conftest import make_settings

LAWS = {
    "법원조직법.txt": "법원조직법은 대법원과 각급 법원의 조직을 정한다. 대법원장은 대법관 중에서 임명한다.",
    "도로교통법.txt": "도로교통법은 도로에서 일어나는 교통상의 위험과 장해를 방지한다. 운전자는 신호를 지켜야 한다.",
    "근로기준법.txt": "근로기준법은 근로조건의 기준을 정한다. 사용자는 연차 유급휴가를 주어야 한다.",
    "주택임대차보호법.txt": "주택임대차보호법은 주거용 건물의 임대차에 관한 특례를 정한다. 임차인의 보증금을 보호한다.",
    "개인정보보호법.txt": "개인정보보호법은 개인정보의 처리와 보호에 관한 사항을 정한다. 정보주체의 동의를 받아야 한다.",
    "식품위생법.txt": "식품위생법은 식품으로 인한 위생상의 위해를 방지한다. 영업자는 위생교육을 받아야 한다.",
}
QUESTIONS = {
    "임차인의 보증금은 어떻게 보호되나요?": "주택임대차보호법.txt",
    "대법원장은 누가 임명하나요": "법원조직법.txt",
    "연차 유급휴가를 주어야 하나요": "근로기준법.txt",
    "영업자가 받아야 하는 교육은?": "식품위생법.txt",
}


@pytest.fixture(scope="module")
def collection(minilm):
    """The laws ingested by korag into a qdrant-client store — the client langchain-qdrant speaks,
    as against a Qdrant server (korag's server path; no server can run here, so its in-memory
    engine stands in). korag's embedded Qdrant Edge is read by korag itself, not langchain-qdrant."""
    settings = make_settings(Path("/nonexistent"))
    client = open_client(settings)
    store = QdrantStore(client, settings.collection)
    pipeline = Pipeline.build(minilm, store, settings)
    for name, text in LAWS.items():
        assert pipeline.ingest_bytes(text.encode(), name, name).status == "indexed"
    yield settings, store
    client.close()


@pytest.fixture(scope="module")
def korag_search(collection, minilm):
    """korag's own search as `korag search` builds it (its keyword encoder and fusion are the ones
    the adapters must match), with the top 3 sources it gives for each question. Fusion by
    weighted RRF, which Qdrant runs inside one query as it runs langchain-qdrant's (korag's
    default, convex, is fused in korag: korag_fusion gives RRF for it, the README says so)."""
    settings, store = collection
    settings = settings.model_copy(update={"fusion_method": "rrf"})
    retriever = Retriever.from_settings(minilm, store, settings)
    top = {q: [r.metadata["source"] for r in retriever.search(q, k=3, mode="hybrid")] for q in QUESTIONS}
    return retriever.sparse, retriever.fusion, top


def _langchain_qdrant(collection, minilm, encoder, mode=RetrievalMode.HYBRID) -> QdrantVectorStore:
    settings, store = collection
    return QdrantVectorStore(
        store.client,
        settings.collection,
        embedding=KoragEmbeddings(minilm),
        sparse_embedding=KoragSparseEmbeddings(encoder),
        vector_name="dense",
        sparse_vector_name="sparse",
        retrieval_mode=mode,
    )


@pytest.mark.slow
def test_langchain_qdrant_hybrid_ranks_like_korag_search(collection, korag_search, minilm):
    encoder, fusion, korag_top = korag_search
    hybrid = _langchain_qdrant(collection, minilm, encoder)
    for question, expected in QUESTIONS.items():
        found = hybrid.similarity_search(question, k=3, hybrid_fusion=korag_fusion(fusion))
        assert [d.metadata["source"] for d in found] == korag_top[question], question
        assert found[0].metadata["source"] == expected, question


def test_dense_alone_misses_what_the_keyword_channel_finds(collection, korag_search, minilm):
    """Why the adapter matters: langchain-qdrant's dense mode misses a question the Korean
    keyword channel answers (the offline model is English; KoE5 is stronger, the gap remains)."""
    encoder, fusion, _ = korag_search
    question = "영업자가 받아야 하는 교육은?"
    dense = _langchain_qdrant(collection, minilm, encoder, RetrievalMode.DENSE)
    assert "식품위생법.txt" not in [d.metadata["source"] for d in dense.similarity_search(question, k=3)]
    hybrid = _langchain_qdrant(collection, minilm, encoder)
    found = hybrid.similarity_search(question, k=1, hybrid_fusion=korag_fusion(fusion))
    assert found[0].metadata["source"] == "식품위생법.txt"


def test_sparse_adapter_gives_exactly_the_stored_keyword_vectors(collection, korag_search):
    adapter = KoragSparseEmbeddings(korag_search[0])
    settings, store = collection
    points, _ = store.client.scroll(settings.collection, limit=100, with_payload=True, with_vectors=[SPARSE])
    assert len(points) == len(LAWS)
    for point in points:
        stored = point.vector[SPARSE]
        assert point.payload["metadata"].get("section") is None  # no header embedded with the text
        (mine,) = adapter.embed_documents([point.payload["page_content"]])
        assert mine.indices == list(stored.indices)
        assert mine.values == pytest.approx(list(stored.values), rel=1e-6)
    query = adapter.embed_query("임차인의 보증금은?")
    assert query.values == [1.0] * len(query.indices) and len(query.indices) >= 2
