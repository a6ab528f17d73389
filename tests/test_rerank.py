"""Optional re-ranking (KORAG_RERANK_MODEL) on every way to search: the retriever the CLI, the
service (HTTP search and Dify) and the LangChain retriever share, its latency in ``took_ms`` and
the metrics. No Korean reranker can be obtained here: the cross-encoder is a tiny BERT with
random weights, built in a fixture on the offline MiniLM's tokenizer. So these tests check the
path (what is read, how it is ordered, what is reported), never quality."""

from __future__ import annotations

import json

import pytest

from bench.rerank_bench import tiny_cross_encoder
from ingest.pipeline import Pipeline
from korag.services.schemas import SearchRequest
from korag.services.service import Service
from korag.services.telemetry import Metrics
from korag.storage.store import QdrantStore, open_client
from retrieval.langchain_retriever import KoragRetriever
from retrieval.rerank import Reranker
from retrieval.search import Retriever
from tests.conftest import make_settings, offline_model_path
from tests.test_cli_hardening import local_env, run

TEXTS = {f"규정{i}.txt": f"제{i}조 연차 휴가는 {i + 10}일이며 사용 전에 신청한다. 문서 번호 {i}." for i in range(8)}
QUERY = "연차 휴가 신청"


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory):
    """A one-label cross-encoder small enough to build here (2 layers, 32 wide), seeded."""
    return tiny_cross_encoder(tmp_path_factory.mktemp("reranker"), offline_model_path())


@pytest.fixture
def indexed(tmp_path, minilm):
    settings = make_settings(tmp_path)
    store = QdrantStore(open_client(settings), settings.collection)
    pipeline = Pipeline.build(minilm, store, settings)
    for name, text in TEXTS.items():
        assert pipeline.ingest_bytes(text.encode(), name, name).status == "indexed"
    return settings, store


def test_the_top_candidates_come_back_in_the_cross_encoders_order(indexed, minilm, cross_encoder_dir):
    settings, store = indexed
    reranker = Reranker.from_settings(settings.model_copy(update={"rerank_model": str(cross_encoder_dir),
                                                                  "rerank_candidates": 6}))
    plain = Retriever.from_settings(minilm, store, settings)
    candidates = plain.search(QUERY, k=6)
    expected = sorted(zip(candidates, reranker.model.predict([(QUERY, c.text) for c in candidates])),
                      key=lambda pair: -pair[1])[:3]

    reranked = Retriever(minilm, store, plain.sparse, settings.search_mode, plain.fusion, reranker).search(QUERY, k=3)
    assert [r.id for r in reranked] == [c.id for c, _ in expected]
    assert [r.score for r in reranked] == pytest.approx([float(s) for _, s in expected])
    assert all(0.0 < r.score < 1.0 for r in reranked)  # a one-label model's sigmoid
    # it read beyond the top 3: with these weights, the order differs from the plain search
    assert [r.id for r in reranked] != [c.id for c in candidates[:3]]


def test_the_service_reports_rerank_latency_and_the_langchain_retriever_reranks(indexed, minilm, cross_encoder_dir):
    settings, store = indexed
    settings = settings.model_copy(update={"rerank_model": str(cross_encoder_dir)})
    metrics = Metrics()
    service = Service(settings, minilm, store, metrics=metrics)
    response = service.search(SearchRequest(query=QUERY, k=2), None)
    assert len(response.results) == 2 and response.took_ms > 0
    exposition = metrics.render()[0].decode()
    assert "korag_rerank_duration_seconds_count 1.0" in exposition

    langchain = KoragRetriever(retriever=service.retriever, k=2)
    assert [d.metadata["source"] for d in langchain.invoke(QUERY)] == [r.metadata["source"] for r in response.results]


def test_korag_search_reranks_and_a_reranker_that_cannot_load_is_one_clear_error(tmp_path, monkeypatch, capsys,
                                                                                  cross_encoder_dir):
    env = local_env(tmp_path)
    (tmp_path / "in").mkdir()
    for name, text in list(TEXTS.items())[:4]:
        (tmp_path / "in" / name).write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, ["ingest", "in"], **env)
    assert code == 0, err
    code, out, err = run(monkeypatch, capsys, ["search", QUERY, "-k", "2", "--json"],
                         KORAG_RERANK_MODEL=str(cross_encoder_dir), **env)
    assert code == 0, err
    assert all(0.0 < r["score"] < 1.0 for r in json.loads(out)["results"])
    code, _, err = run(monkeypatch, capsys, ["search", QUERY, "--json"], KORAG_RERANK_MODEL=str(tmp_path / "none"),
                       **env)
    assert code == 2 and "KORAG_RERANK_MODEL" in err and "CrossEncoder" in err
