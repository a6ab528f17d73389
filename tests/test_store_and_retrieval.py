"""The store contract in every embedded mode (qdrant-client's local engine, Edge in this process,
Edge in a store process), retrieval, prompt context and LangChain adapters."""

from __future__ import annotations

import pytest

from bench import documents as docs
from ingest.pipeline import Pipeline
from korag.errors import ModelMismatchError
from korag.storage.registry import DocumentRegistry
from korag.storage.store import QdrantStore, open_client, point_id
from retrieval import Retriever, format_context
from tests.conftest import make_settings


@pytest.fixture(params=["memory", "path", "store-process"])
def settings(request, tmp_path):
    url = ":memory:" if request.param == "memory" else None
    return make_settings(tmp_path, qdrant_url=url, edge_store_process=request.param == "store-process")


@pytest.fixture
def store(settings):
    client = open_client(settings)
    yield QdrantStore(client, settings.collection)
    client.close()


@pytest.fixture
def pipeline(minilm, store, settings):
    return Pipeline.build(minilm, store, settings)


def _long_document(tmp_path):
    text = docs.long_korean_text(40) + "\n\n" + docs.SECRET_SENTENCE
    return docs.make_text(tmp_path / "긴문서.txt", text=text)


def test_long_document_is_chunked_and_its_last_sentence_is_retrievable(tmp_path, pipeline, minilm, store):
    result = pipeline.ingest_path(_long_document(tmp_path), source="docs/긴문서.txt")
    assert result.status == "indexed" and result.chunks > 10
    hits = Retriever(minilm, store).search("ZEBRA-QUARTZ-7781 비밀번호", k=3)
    assert docs.SECRET_SENTENCE in hits[0].text
    meta = hits[0].metadata
    assert meta["source"] == "docs/긴문서.txt"
    assert meta["chunk_index"] == result.chunks - 1
    assert 0 < meta["token_count"] <= 256


def test_payload_has_the_langchain_layout_and_metadata(tmp_path, pipeline, store):
    result = pipeline.ingest_path(docs.make_pdf(tmp_path / "a.pdf", [["제1장 총칙", "첫 쪽입니다."], [docs.SECRET_SENTENCE]]))
    (point,) = [c for c in store.iter_chunks({"doc_id": result.doc_id})]
    record = DocumentRegistry(store.client, store.collection).get(result.doc_id)
    assert point.id == point_id(result.doc_id, 0, record.request)  # a redelivery of the request rewrites it
    assert point.metadata["ingest_seq"] == record.seq == record.indexed_seq
    for key in ("doc_id", "source", "chunk_index", "token_count", "page_number", "section", "content_hash"):
        assert key in point.metadata
    assert point.metadata["page_number"] == 1


def test_reingest_rewrites_the_same_points_and_drops_stale_ones(tmp_path, pipeline, store):
    path = _long_document(tmp_path)
    first = pipeline.ingest_path(path, source="doc.txt")
    again = pipeline.ingest_path(path, source="doc.txt")
    assert again.chunks == first.chunks
    assert store.count({"doc_id": first.doc_id}) == first.chunks  # no duplicates
    docs.make_text(path, text="짧아진 문서입니다. 내용이 바뀌었습니다.")
    shorter = pipeline.ingest_path(path, source="doc.txt")
    assert shorter.chunks == 1
    assert [c.text for c in store.iter_chunks({"doc_id": first.doc_id})] == ["짧아진 문서입니다. 내용이 바뀌었습니다."]


def test_a_bad_document_fails_alone_and_keeps_what_is_stored(tmp_path, pipeline, store):
    good = pipeline.ingest_path(docs.make_markdown(tmp_path / "good.md"))
    bad_path = tmp_path / "bad.docx"
    bad_path.write_bytes(b"not a zip")
    bad = pipeline.ingest_path(bad_path, source="uploads/bad.docx")
    assert bad.status == "failed" and bad.source == "uploads/bad.docx"
    assert bad.error.startswith("not a DOCX file")
    assert store.count({"doc_id": good.doc_id}) == good.chunks


def test_filters_restrict_results(tmp_path, pipeline, minilm, store):
    a = pipeline.ingest_path(docs.make_markdown(tmp_path / "a.md"), source="a.md")
    pipeline.ingest_path(docs.make_html(tmp_path / "b.html"), source="b.html")
    hits = Retriever(minilm, store).search("설치", k=10, filters={"source": "a.md"})
    assert hits and {h.metadata["doc_id"] for h in hits} == {a.doc_id}


def test_collection_refuses_another_model(tmp_path, pipeline, tiny_xlmr, store, settings):
    pipeline.ingest_path(docs.make_markdown(tmp_path / "a.md"))
    with pytest.raises(ModelMismatchError, match="KORAG_EMBEDDING_MODEL"):
        Pipeline.build(tiny_xlmr, store, settings)
    with pytest.raises(ModelMismatchError):
        Retriever(tiny_xlmr, store)


def test_format_context_numbers_and_cites(tmp_path, pipeline, minilm, store):
    pipeline.ingest_path(docs.make_pdf(tmp_path / "규정.pdf", [["제1장 총칙", "첫 쪽입니다."], [docs.SECRET_SENTENCE]]), source="규정.pdf")
    pipeline.ingest_path(docs.make_markdown(tmp_path / "설치.md"), source="설치.md")
    results = Retriever(minilm, store).search("ZEBRA-QUARTZ-7781", k=2)
    context = format_context(results)
    assert context.startswith("[1] 규정.pdf, p. 1")
    assert "\n\n[2] " in context


def test_langchain_retriever_and_embeddings(tmp_path, pipeline, minilm, store, settings):
    """langchain-qdrant's own QdrantVectorStore reads a korag collection through the adapter."""
    from langchain_qdrant import QdrantVectorStore

    from retrieval.langchain import KoragEmbeddings, KoragRetriever

    pipeline.ingest_path(_long_document(tmp_path), source="긴문서.txt")
    documents = KoragRetriever(retriever=Retriever(minilm, store), k=2, mode="dense").invoke("ZEBRA-QUARTZ-7781")
    assert docs.SECRET_SENTENCE in documents[0].page_content
    assert documents[0].metadata["source"] == "긴문서.txt" and "score" in documents[0].metadata

    vector_store = QdrantVectorStore(
        client=store.client, collection_name=settings.collection, embedding=KoragEmbeddings(minilm), vector_name="dense"
    )
    (doc, score), *_ = vector_store.similarity_search_with_score("ZEBRA-QUARTZ-7781", k=2)
    assert docs.SECRET_SENTENCE in doc.page_content
    assert doc.metadata["source"] == "긴문서.txt"
    assert score == pytest.approx(documents[0].metadata["score"], abs=1e-4)
