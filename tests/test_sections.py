"""Section context (parent-child retrieval, issue 20 item 4): small chunks are matched, the run of
their section they belong to is returned, once, on every way to search: the service over HTTP,
``korag search``, the LangChain retrievers.

The offline MiniLM reads no Korean (its dense channel is noise here), so the searches are sparse:
which chunk matches is then decided by the words, and the test can name it."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from bench.documents import long_korean_text
from ingest.chunking import Chunker, ChunkingOptions
from ingest.embedder import Embedder
from ingest.parsing.blocks import Block
from ingest.pipeline import Pipeline
from korag.services.schemas import SearchRequest
from korag.services.service import Service
from korag.storage.store import QdrantStore, open_client
from korag.types import StoredChunk
from retrieval.langchain_http import KoragHttpRetriever
from retrieval.langchain_retriever import KoragRetriever
from retrieval.sections import stitch
from tests.conftest import make_settings
from tests.test_cli_hardening import local_env, run

SMALL = {"chunk_max_tokens": 48, "chunk_overlap_tokens": 16}
LEAVE = ["연차휴가는 매년 부여된다.", "근속 1년이면 15일을 받는다.", "남은 휴가는 이월된다.", "신청은 사흘 전에 한다."]
TRAVEL = ["출장 숙박비는 1박에 12만원이다.", "교통비는 실비로 지급한다."]
DOC = f"# 휴가 규정\n\n## 연차휴가\n\n{' '.join(LEAVE)}\n\n## 출장비\n\n{' '.join(TRAVEL)}\n"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _stored(chunks) -> list[StoredChunk]:
    return [StoredChunk(str(c.index), c.text, {"chunk_index": c.index, "overlap_chars": c.overlap_chars})
            for c in chunks]


@pytest.fixture(scope="module")
def small(minilm, tmp_path_factory):
    """MiniLM cutting chunks at 48 tokens (its own limit, 256, bounds a section run)."""
    return Embedder(minilm.model, minilm.info.name, make_settings(tmp_path_factory.mktemp("small"), **SMALL))


@pytest.fixture
def service(tmp_path, small):
    settings = make_settings(tmp_path, search_mode="sparse", **SMALL)
    store = QdrantStore(open_client(settings), settings.collection)
    assert Pipeline.build(small, store, settings).ingest_bytes(DOC.encode(), "규정.md", "규정.md").status == "indexed"
    return Service(settings, small, store)


def test_runs_fit_the_models_limit_and_stitch_back_to_the_text(minilm):
    """Every chunk of a long text cut at 64 tokens: its run (the chunks sharing its parent) fits
    the model's 256, and the chunks, overlaps dropped, give back the text, each word once."""
    text = long_korean_text(3)
    small_budget = type(minilm.passage_budget)(minilm.model.tokenizer, 64, minilm.passage_budget.prefix)
    chunks = Chunker(small_budget, ChunkingOptions(overlap_tokens=24), minilm.passage_budget).chunk(
        [Block("text", part) for part in text.split("\n\n")])
    runs = sorted({c.parent for c in chunks})
    assert 1 < len(runs) < len(chunks)  # several chunks per run, several runs
    assert any(c.overlap_chars > 0 for c in chunks)  # the overlaps are there to be dropped
    for parent in runs:
        members = [c for c in chunks if c.parent == parent]
        assert [c.index for c in members] == list(range(parent, parent + len(members)))  # consecutive
        assert minilm.passage_budget.fits(None, stitch(_stored(members)))
    assert _flat(stitch(_stored(chunks))) == _flat(text)


def test_chunks_at_the_models_limit_are_their_own_runs(minilm):
    chunks = Chunker(minilm.passage_budget, section_budget=minilm.passage_budget).chunk(
        [Block("text", part) for part in long_korean_text(6).split("\n\n")])
    assert len(chunks) > 1 and [c.parent for c in chunks] == [c.index for c in chunks]


def test_a_section_search_returns_the_whole_section_once(service):
    """The answer sentence sits in one small chunk; the section around it comes back."""
    chunk = service.search(SearchRequest(query="이월", k=5), None).results
    assert chunk[0].text == LEAVE[2]  # a chunk search: the small chunk alone
    [section] = service.search(SearchRequest(query="이월", k=5, context="section"), None).results
    assert _flat(section.text) == _flat("연차휴가 " + " ".join(LEAVE))
    assert section.metadata["section"] == "휴가 규정 > 연차휴가" and section.metadata["source"] == "규정.md"
    assert section.id == chunk[0].id and section.score == chunk[0].score  # its best chunk's
    assert section.metadata["matched_chunks"][0] == chunk[0].metadata["chunk_index"]


def test_two_hits_in_one_section_give_one_result_and_k_counts_sections(service):
    query = "15일 이월 숙박비"
    chunks = service.search(SearchRequest(query=query, k=5), None).results
    assert len(chunks) == 3  # two chunks of the leave section, one of the travel section
    sections = service.search(SearchRequest(query=query, k=5, context="section"), None).results
    assert len(sections) == 2 and len({r.text for r in sections}) == 2
    leave = next(r for r in sections if "이월" in r.text)
    assert sorted(leave.metadata["matched_chunks"]) == sorted(
        c.metadata["chunk_index"] for c in chunks if c.metadata["section"].endswith("연차휴가"))
    assert [r.id for r in service.search(SearchRequest(query=query, k=1, context="section"), None).results] == \
        [sections[0].id]  # k=1: the best section, not its best chunk alone


def test_http_search_takes_context_and_the_langchain_retrievers_pass_it(service, monkeypatch):
    with TestClient(create_app(service.settings, service)) as client:
        body = client.post("/v1/search", json={"query": "이월", "context": "section"}).json()
        [hit] = body["results"]
        assert _flat(hit["text"]) == _flat("연차휴가 " + " ".join(LEAVE)) and hit["metadata"]["matched_chunks"]
        refused = client.post("/v1/search", json={"query": "이월", "context": "document"})
        assert refused.status_code == 422
        info = client.get("/v1/info").json()
        assert info["search_contexts"] == ["chunk", "section"] and info["default_search_context"] == "chunk"

        def post(url, json, headers, timeout):  # the real app, in process (TestClient takes no timeout)
            return client.post(url, json=json, headers=headers)

        monkeypatch.setattr("retrieval.langchain_http.httpx.post", post)
        over_http = KoragHttpRetriever(url="http://testserver").invoke("이월", context="section")
    assert [d.page_content for d in over_http] == [hit["text"]]

    local = KoragRetriever(retriever=service.retriever, context="section")
    assert [d.page_content for d in local.invoke("이월")] == [hit["text"]]
    assert local.invoke("이월", context="chunk")[0].page_content == LEAVE[2]
    with pytest.raises(ValueError, match="unknown search context"):
        local.invoke("이월", context="document")


def test_korag_search_context_section(tmp_path, monkeypatch, capsys):
    env = {**local_env(tmp_path), "KORAG_CHUNK_MAX_TOKENS": "48", "KORAG_CHUNK_OVERLAP_TOKENS": "16",
           "KORAG_SEARCH_MODE": "sparse"}
    (tmp_path / "규정.md").write_text(DOC, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, ["ingest", "규정.md"], **env)
    assert code == 0, err
    code, out, err = run(monkeypatch, capsys, ["search", "15일 이월", "--context", "section", "--json"], **env)
    assert code == 0, err
    [hit] = json.loads(out)["results"]
    assert _flat(hit["text"]) == _flat("연차휴가 " + " ".join(LEAVE)) and len(hit["metadata"]["matched_chunks"]) == 2
    code, out, err = run(monkeypatch, capsys, ["search", "15일 이월", "--json"], **env)
    assert len(json.loads(out)["results"]) == 2  # the two chunks, without --context section
