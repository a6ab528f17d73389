"""The Korean keyword channel, the three search modes, and tenant isolation."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from bench import documents as docs
from ingest.pipeline import DocumentInfo, Pipeline
from ingest.sparse import SparseEncoder, term_id
from korag.storage.store import QdrantStore, open_client
from retrieval import Retriever
from tests.conftest import make_settings

LAWS = {
    "법원조직법.txt": "법원조직법은 대법원과 각급 법원의 조직을 정한다. 대법원장은 대법관 중에서 임명한다.",
    "도로교통법.txt": "도로교통법은 도로에서 일어나는 교통상의 위험과 장해를 방지한다. 운전자는 신호를 지켜야 한다.",
    "근로기준법.txt": "근로기준법은 근로조건의 기준을 정한다. 사용자는 연차 유급휴가를 주어야 한다.",
    "주택임대차보호법.txt": "주택임대차보호법은 주거용 건물의 임대차에 관한 특례를 정한다. 임차인의 보증금을 보호한다.",
}


def test_particles_do_not_split_a_word():
    encoder = SparseEncoder()
    forms = [encoder.terms(t) for t in ("「법원조직법」에", "법원조직법의", "법원조직법은")]
    assert forms[0] == forms[1] == forms[2]
    assert "은" not in encoder.terms("대법원장은 임명한다")


def test_term_ids_are_stable_across_processes():
    code = "from ingest.sparse import term_id; print(term_id('법원'), term_id('임대차'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [int(x) for x in other] == [term_id("법원"), term_id("임대차")]


@pytest.fixture
def store(tmp_path, minilm):
    settings = make_settings(tmp_path)
    store = QdrantStore(open_client(settings), settings.collection)
    pipeline = Pipeline.build(minilm, store, settings)
    for name, text in LAWS.items():
        path = docs.make_text(tmp_path / name, text=text)
        assert pipeline.ingest_path(path, source=name).status == "indexed"
    return store


@pytest.mark.parametrize("mode", ["sparse", "hybrid"])
def test_keyword_channel_finds_korean_words_with_particles(store, minilm, mode):
    retriever = Retriever(minilm, store, mode=mode)
    for query, source in [
        ("임대차 보증금은 어떻게 보호되나요?", "주택임대차보호법.txt"),
        ("대법원장을 누가 임명하나요", "법원조직법.txt"),
        ("연차 유급휴가를 주어야 하나요", "근로기준법.txt"),
        ("교통 신호를 지켜야 하나요", "도로교통법.txt"),
    ]:
        assert retriever.search(query, k=1)[0].metadata["source"] == source, query


def test_dense_mode_still_works_and_sparse_ignores_unknown_words(store, minilm):
    retriever = Retriever(minilm, store)
    assert len(retriever.search("법원", k=2, mode="dense")) == 2
    assert retriever.search("xyzzy", k=2, mode="sparse") == []


def test_filters_on_custom_metadata(tmp_path, minilm):
    settings = make_settings(tmp_path)
    store = QdrantStore(open_client(settings), settings.collection)
    pipeline = Pipeline.build(minilm, store, settings)
    for i, (name, text) in enumerate(LAWS.items()):
        info = DocumentInfo(meta=(("dept", "legal" if i % 2 == 0 else "hr"),))
        pipeline.ingest_path(docs.make_text(tmp_path / name, text=text), source=name, info=info)
    hits = Retriever(minilm, store).search("법", k=10, filters={"dept": "hr"})
    assert hits and {h.metadata["dept"] for h in hits} == {"hr"}
    with pytest.raises(ValueError, match="reserved"):
        DocumentInfo(meta=(("tenant", "x"),))


def test_a_tenant_never_sees_another_tenants_chunks(tmp_path, minilm):
    settings = make_settings(tmp_path)
    store = QdrantStore(open_client(settings), settings.collection)
    pipeline = Pipeline.build(minilm, store, settings)
    tenants = ["acme", "globex", "initech"]
    for tenant in tenants:
        for name, text in LAWS.items():
            # Same file name and content for every tenant: only the tenant tells them apart.
            result = pipeline.ingest_path(docs.make_text(tmp_path / name, text=text), source=name,
                                          info=DocumentInfo(tenant=tenant))
            assert result.status == "indexed"
    retriever = Retriever(minilm, store)
    words = " ".join(LAWS.values()).split()
    rng = random.Random(7)
    for _ in range(60):
        query = " ".join(rng.sample(words, 3))
        tenant = rng.choice(tenants)
        for mode in ("dense", "sparse", "hybrid"):
            hits = retriever.search(query, k=8, mode=mode, tenant=tenant)
            assert all(h.metadata["tenant"] == tenant for h in hits), (query, tenant, mode)
    assert len({h.metadata["doc_id"] for h in retriever.search("법", k=50, mode="dense")}) == 12
