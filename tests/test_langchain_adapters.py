"""korag's LangChain adapters beyond the standard suites: invoke-time search parameters and the
tenant boundary, native async, empty texts, the VectorStore on korag's pipeline, and a RAG chain."""

from __future__ import annotations

import asyncio
import threading

import pytest
from langchain_core.documents import Document

from bench import documents as docs
from ingest.pipeline import DocumentInfo, Pipeline
from korag.errors import DocumentError
from korag.storage.registry import DocumentRegistry
from korag.storage.store import QdrantStore, open_client
from retrieval.langchain import KoragEmbeddings, KoragRetriever, KoragVectorStore, format_documents
from retrieval.search import Retriever
from tests.conftest import make_settings

LAWS = {
    "법원조직법.txt": "법원조직법은 대법원과 각급 법원의 조직을 정한다. 대법원장은 대법관 중에서 임명한다.",
    "도로교통법.txt": "도로교통법은 도로에서 일어나는 교통상의 위험과 장해를 방지한다. 운전자는 신호를 지켜야 한다.",
    "근로기준법.txt": "근로기준법은 근로조건의 기준을 정한다. 사용자는 연차 유급휴가를 주어야 한다.",
    "주택임대차보호법.txt": "주택임대차보호법은 주거용 건물의 임대차에 관한 특례를 정한다. 임차인의 보증금을 보호한다.",
}
QUESTION = "임차인의 보증금은 어떻게 보호되나요?"


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
def store(settings):
    client = open_client(settings)
    yield QdrantStore(client, settings.collection)
    client.close()


@pytest.fixture(scope="module")
def laws(minilm, tmp_path_factory):
    """A Retriever over the four laws without a tenant, and 임대차 rules for tenants "a" and "b"."""
    settings = make_settings(tmp_path_factory.mktemp("langchain-laws"))
    client = open_client(settings)
    store = QdrantStore(client, settings.collection)
    pipeline = Pipeline.build(minilm, store, settings)
    for name, text in LAWS.items():
        assert pipeline.ingest_bytes(text.encode(), name, name).status == "indexed"
    for tenant in ("a", "b"):
        text = f"{tenant} 회사의 임대차 규정: 임차인의 보증금은 신탁 계좌에 보관한다."
        assert pipeline.ingest_bytes(text.encode(), "규정.txt", "규정.txt", info=DocumentInfo(tenant=tenant)).status == "indexed"
    yield Retriever.from_settings(minilm, store, settings)
    client.close()


class ThreadRecorder:
    """The real embedder, noting which thread each model call ran on."""

    def __init__(self, embedder) -> None:
        self.embedder, self.threads = embedder, []

    def __getattr__(self, name):
        return getattr(self.embedder, name)

    def embed_queries(self, queries):
        self.threads.append(threading.get_ident())
        return self.embedder.embed_queries(queries)

    def embed_passage_texts(self, texts):
        self.threads.append(threading.get_ident())
        return self.embedder.embed_passage_texts(texts)


# -- the retriever ------------------------------------------------------------------------------
def test_invoke_takes_k_filter_and_mode_over_the_constructor_defaults(laws):
    retriever = KoragRetriever(retriever=laws, k=4)
    assert len(retriever.invoke(QUESTION)) == 4
    assert len(retriever.invoke(QUESTION, k=1)) == 1
    assert len(retriever.invoke(QUESTION)) == 4  # a call's k does not stick

    # sparse: only the chunks that share a keyword with the question (the law and both tenants' rules)
    sparse = retriever.invoke(QUESTION, mode="sparse")
    assert sorted(d.metadata["source"] for d in sparse) == ["규정.txt", "규정.txt", "주택임대차보호법.txt"]

    only = retriever.invoke(QUESTION, filter={"source": "근로기준법.txt"})
    assert [d.metadata["source"] for d in only] == ["근로기준법.txt"]
    bound = KoragRetriever(retriever=laws, k=4, filters={"source": "도로교통법.txt"})
    assert [d.metadata["source"] for d in bound.invoke(QUESTION)] == ["도로교통법.txt"]
    assert [d.metadata["source"] for d in bound.invoke(QUESTION, filter={"source": "법원조직법.txt"})] == ["법원조직법.txt"]


def test_a_tenant_given_at_construction_cannot_be_widened_at_invoke_time(laws):
    bound = KoragRetriever(retriever=laws, k=10, tenant="a")
    with pytest.raises(PermissionError, match="tenant 'a'"):
        bound.invoke(QUESTION, tenant="b")
    for found in (bound.invoke(QUESTION), bound.invoke(QUESTION, tenant="a"),
                  bound.invoke(QUESTION, filter={"tenant": "b"}), bound.invoke(QUESTION, mode="sparse")):
        assert [d.metadata.get("tenant") for d in found] == ["a"]
    open_retriever = KoragRetriever(retriever=laws, k=10)
    assert [d.metadata.get("tenant") for d in open_retriever.invoke(QUESTION, tenant="b")] == ["b"]


def test_an_unknown_invoke_argument_is_refused_by_name(laws):
    with pytest.raises(TypeError, match="top_k"):
        KoragRetriever(retriever=laws).invoke(QUESTION, top_k=1)


def test_ainvoke_searches_in_a_worker_thread_with_invoke_time_parameters(laws, minilm):
    recorder = ThreadRecorder(minilm)
    retriever = KoragRetriever(retriever=Retriever(recorder, laws.store, laws.sparse, fusion=laws.fusion), tenant="a")

    async def run():
        with pytest.raises(PermissionError):
            await retriever.ainvoke(QUESTION, tenant="b")
        return threading.get_ident(), await retriever.ainvoke(QUESTION, k=1, mode="dense")

    loop_thread, found = asyncio.run(run())
    assert len(found) == 1 and found[0].metadata["tenant"] == "a"
    assert recorder.threads and loop_thread not in recorder.threads


# -- embeddings ---------------------------------------------------------------------------------
def test_aembed_runs_the_model_in_a_worker_thread(minilm):
    recorder = ThreadRecorder(minilm)
    embeddings = KoragEmbeddings(recorder)

    async def run():
        return threading.get_ident(), await embeddings.aembed_documents(["법원"]), await embeddings.aembed_query("법원")

    loop_thread, (passage,), query = asyncio.run(run())
    assert len(passage) == len(query) == minilm.info.dimension
    assert len(recorder.threads) == 2 and loop_thread not in recorder.threads


def test_an_empty_text_gets_a_vector_in_its_place(minilm):
    embeddings = KoragEmbeddings(minilm)
    empty, word, blank = embeddings.embed_documents(["", "법원", "  "])
    assert len(empty) == len(blank) == minilm.info.dimension
    assert word == pytest.approx(embeddings.embed_documents(["법원"])[0], abs=1e-5)
    assert empty != word


# -- the vector store ---------------------------------------------------------------------------
@pytest.fixture
def vector_store(minilm, store, settings):
    return KoragVectorStore.from_settings(minilm, store, settings)


def test_a_long_document_is_chunked_never_truncated(minilm, store, settings):
    vector_store = KoragVectorStore.from_settings(minilm, store, settings, korag_metadata=True)
    text = docs.long_korean_text(40) + "\n\n" + docs.SECRET_SENTENCE
    metadata = {"source": "긴문서.txt", "year": 2024}
    assert vector_store.add_documents([Document(page_content=text, metadata=metadata)], ids=["long"]) == ["long"]

    chunks = vector_store.get_by_ids(["long"])
    assert len(chunks) > 10 and {c.id for c in chunks} == {"long"}
    assert docs.SECRET_SENTENCE in chunks[-1].page_content
    for chunk in chunks:
        assert chunk.metadata["source"] == "긴문서.txt" and chunk.metadata["year"] == 2024
        assert chunk.metadata["korag"]["chunk_count"] == len(chunks)
        assert chunk.metadata["korag"]["source"] == "긴문서.txt"
        assert 0 < chunk.metadata["korag"]["token_count"] <= minilm.info.max_input_tokens
    (best,) = vector_store.similarity_search("ZEBRA-QUARTZ-7781 비밀번호", k=1)
    assert best.id == "long" and docs.SECRET_SENTENCE in best.page_content

    record = DocumentRegistry(store.client, store.collection).get(vector_store.doc_id("long"))
    assert record.status == "indexed" and record.chunks == len(chunks) and record.source == "긴문서.txt"


def test_filters_match_langchain_metadata_and_keep_its_types(vector_store):
    vector_store.add_texts(["2024년 연차 규정입니다.", "2023년 연차 규정입니다."], [{"year": 2024}, {"year": 2023}])
    found = vector_store.similarity_search("연차 규정", k=5, filter={"year": 2024})
    assert [d.metadata for d in found] == [{"year": 2024}]
    assert len(vector_store.similarity_search("연차 규정", k=5, filter={"year": [2023, 2024]})) == 2


def test_metadata_korag_cannot_store_as_a_field_still_comes_back_exactly(vector_store):
    metadata = {"page_number": 3, "doc_id": "x", "a.b": [1, 2], "": None, "nested": {"k": True}}
    (lc_id,) = vector_store.add_texts(["특이한 메타데이터"], [metadata])
    assert [d.metadata for d in vector_store.get_by_ids([lc_id])] == [metadata]
    assert [d.metadata for d in vector_store.similarity_search("메타데이터", k=1)] == [metadata]


def test_same_text_with_new_metadata_replaces_the_metadata(vector_store):
    vector_store.add_texts(["근로기준법 요약"], [{"version": 1}], ids=["law"])
    vector_store.add_texts(["근로기준법 요약"], [{"version": 2}], ids=["law"])
    assert [d.metadata for d in vector_store.get_by_ids(["law"])] == [{"version": 2}]


def test_the_same_text_without_ids_is_one_document(vector_store):
    first = vector_store.add_texts(["같은 문서입니다."], [{"source": "a.txt"}])
    again = vector_store.add_texts(["같은 문서입니다."], [{"source": "a.txt"}])
    assert first == again and len(vector_store.get_by_ids(first)) == 1


def test_tenants_share_ids_without_seeing_each_other(minilm, store, settings):
    store_a = KoragVectorStore.from_settings(minilm, store, settings, tenant="a")
    store_b = KoragVectorStore.from_settings(minilm, store, settings, tenant="b")
    store_a.add_texts(["a 회사의 보증금 규정"], ids=["1"])
    store_b.add_texts(["b 회사의 보증금 규정"], ids=["1"])
    assert [d.page_content for d in store_a.similarity_search("보증금", k=5)] == ["a 회사의 보증금 규정"]
    store_a.delete(["1"])
    assert store_a.get_by_ids(["1"]) == []
    assert [d.page_content for d in store_b.get_by_ids(["1"])] == ["b 회사의 보증금 규정"]


def test_a_document_without_text_fails_by_id_and_the_others_are_indexed(vector_store):
    with pytest.raises(DocumentError, match="'empty': page_content is empty"):
        vector_store.add_texts(["", "내용이 있는 문서"], ids=["empty", "ok"])
    assert [d.page_content for d in vector_store.get_by_ids(["ok"])] == ["내용이 있는 문서"]
    assert vector_store.get_by_ids(["empty"]) == []


def test_as_retriever_searches_with_korag(vector_store):
    vector_store.add_texts(list(LAWS.values()), [{"source": name} for name in LAWS])
    (found,) = vector_store.as_retriever(search_kwargs={"k": 1}).invoke(QUESTION)
    assert found.metadata == {"source": "주택임대차보호법.txt"}
    (dense,) = vector_store.similarity_search_by_vector(vector_store.embeddings.embed_query(QUESTION), k=1)
    assert dense.metadata == {"source": "주택임대차보호법.txt"}


# -- a RAG chain --------------------------------------------------------------------------------
def test_rag_chain_gives_the_llm_numbered_cited_context(laws):
    """The README's chain; the fake chat model answers with the prompt it was given."""
    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough

    retriever = KoragRetriever(retriever=laws, k=2)
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Answer from the context only and cite it as [n]."),
        ("human", "Context:\n{context}\n\nQuestion: {question}"),
    ])
    llm = ParrotFakeChatModel()  # any LangChain chat model
    chain = {"context": retriever | format_documents, "question": RunnablePassthrough()} | prompt | llm | StrOutputParser()

    answer = chain.invoke(QUESTION)
    assert "Context:\n[1] " in answer and "\n\n[2] " in answer
    assert "[1] 주택임대차보호법.txt\n주택임대차보호법은" in answer
    assert answer.endswith(f"Question: {QUESTION}")


def test_same_text_under_a_new_source_moves_the_document(vector_store, store):
    vector_store.add_texts(["근로기준법 요약"], [{"source": "old.txt"}], ids=["law"])
    vector_store.add_texts(["근로기준법 요약"], [{"source": "new.txt"}], ids=["law"])
    assert [d.metadata for d in vector_store.get_by_ids(["law"])] == [{"source": "new.txt"}]
    assert [c.metadata["source"] for c in store.iter_chunks({"doc_id": vector_store.doc_id("law")})] == ["new.txt"]
