"""LangChain's own standard suites (the `langchain-tests` package every partner integration runs)
against korag's adapters, on the real offline model and the embedded Qdrant engine in a
directory (qdrant-client's local path mode)."""

from __future__ import annotations

import inspect

import pytest
from langchain_tests.integration_tests import (
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests

from ingest.pipeline import Pipeline
from korag.storage.store import QdrantStore, open_client
from retrieval.langchain import KoragEmbeddings, KoragRetriever, KoragVectorStore
from retrieval.search import Retriever
from tests.conftest import make_settings


def _run_async_tests_with_pytest_asyncio(*suites: type) -> None:
    """The suites' `async def` tests need pytest-asyncio (a dependency of langchain-tests), which
    this project runs in strict mode: mark those test functions, leaving the sync ones alone. The
    functions themselves are marked, so the suites' no-override check still sees LangChain's tests."""
    for suite in suites:
        for cls in suite.__mro__:
            for name, value in vars(cls).items():
                if name.startswith("test_") and inspect.iscoroutinefunction(value):
                    pytest.mark.asyncio(value)


_run_async_tests_with_pytest_asyncio(EmbeddingsIntegrationTests, RetrieversIntegrationTests,
                                     VectorStoreIntegrationTests)

LAWS = {
    "법원조직법.txt": "법원조직법은 대법원과 각급 법원의 조직을 정한다. 대법원장은 대법관 중에서 임명한다.",
    "도로교통법.txt": "도로교통법은 도로에서 일어나는 교통상의 위험과 장해를 방지한다. 운전자는 신호를 지켜야 한다.",
    "근로기준법.txt": "근로기준법은 근로조건의 기준을 정한다. 사용자는 연차 유급휴가를 주어야 한다.",
    "주택임대차보호법.txt": "주택임대차보호법은 주거용 건물의 임대차에 관한 특례를 정한다. 임차인의 보증금을 보호한다.",
}


@pytest.fixture(scope="module")
def law_store(tmp_path_factory, minilm):
    """Four Korean laws ingested by korag's pipeline into a directory-backed embedded store."""
    tmp_path = tmp_path_factory.mktemp("langchain-laws")
    settings = make_settings(tmp_path, qdrant_url=None)
    client = open_client(settings)
    store = QdrantStore(client, settings.collection)
    pipeline = Pipeline.build(minilm, store, settings)
    for name, text in LAWS.items():
        assert pipeline.ingest_bytes(text.encode(), name, name).status == "indexed"
    yield store, settings
    client.close()


class _KoragEmbeddingsUnderTest:
    """How both embeddings suites build KoragEmbeddings: over the real offline model."""

    @pytest.fixture(autouse=True)
    def _embedder(self, minilm):
        self.embedder = minilm

    @property
    def embeddings_class(self) -> type[KoragEmbeddings]:
        return KoragEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"embedder": self.embedder}


class TestKoragEmbeddingsUnit(_KoragEmbeddingsUnderTest, EmbeddingsUnitTests):
    pass


class TestKoragEmbeddingsIntegration(_KoragEmbeddingsUnderTest, EmbeddingsIntegrationTests):
    pass


class TestKoragRetrieverIntegration(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _retriever(self, law_store, minilm):
        store, settings = law_store
        self.korag_retriever = Retriever.from_settings(minilm, store, settings)

    @property
    def retriever_constructor(self) -> type[KoragRetriever]:
        return KoragRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"retriever": self.korag_retriever}

    @property
    def retriever_query_example(self) -> str:
        return "임차인의 보증금은 어떻게 보호되나요?"


class TestKoragVectorStore(VectorStoreIntegrationTests):
    """korag's pipeline writes (plain-text parsing, chunking, both vectors, registry); the
    suite's documents come back with exactly the ids and metadata they were added with."""

    @pytest.fixture
    def vectorstore(self, tmp_path, minilm):
        settings = make_settings(tmp_path, qdrant_url=None)
        client = open_client(settings)
        try:
            yield KoragVectorStore.from_settings(minilm, QdrantStore(client, settings.collection), settings)
        finally:
            client.close()
