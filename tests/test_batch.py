"""Many documents at once: the warm parser pool and embedding across document boundaries.

Real parts: forked parser processes, the offline MiniLM model, qdrant-client's engine."""

from __future__ import annotations

import os
import time

import pytest

from bench import documents as docs
from ingest.batch import BatchIngest
from ingest.parsing.pool import ParserPool
from ingest.pipeline import Pipeline
from korag.errors import DocumentError
from korag.storage.store import QdrantStore, open_client
from tests.conftest import make_settings


# -- the pool ------------------------------------------------------------------------------------
def _work(kind: str, value: int):
    if kind == "sleep":
        time.sleep(value)
    elif kind == "crash":
        os._exit(3)
    elif kind == "memory":
        return bytearray(value << 20)
    elif kind == "refuse":
        raise DocumentError("x", "no extractable text")
    return os.getpid()


def _run(pool: ParserPool, jobs: list[tuple[str, int]]) -> dict:
    for i, job in enumerate(jobs):
        pool.submit(i, f"doc{i}", *job)
    return dict(pool.results())


def test_workers_are_reused_not_forked_per_document():
    with ParserPool(_work, size=2, timeout_s=30, memory_bytes=256 << 20) as pool:
        out = _run(pool, [("pid", 0)] * 12)
    assert len(out) == 12 and len(set(out.values())) <= 2 and os.getpid() not in out.values()


def test_a_bad_document_costs_itself_only_and_its_worker_is_replaced():
    jobs = [("pid", 0), ("sleep", 30), ("crash", 0), ("memory", 2048), ("refuse", 0), ("pid", 0), ("pid", 0)]
    with ParserPool(_work, size=2, timeout_s=1.5, memory_bytes=256 << 20) as pool:
        out = _run(pool, jobs)
    assert "longer than 1.5 s" in out[1].reason
    assert "crashed" in out[2].reason
    assert "memory" in out[3].reason
    assert out[4].reason == "no extractable text"
    assert all(isinstance(out[i], int) for i in (0, 5, 6))


def test_results_arrive_as_documents_finish():
    with ParserPool(_work, size=2, timeout_s=30, memory_bytes=256 << 20) as pool:
        pool.submit("slow", "slow", "sleep", 2)
        pool.submit("quick", "quick", "pid", 0)
        order = [key for key, _ in pool.results()]
    assert order == ["quick", "slow"]


# -- the batch ------------------------------------------------------------------------------------
@pytest.fixture
def pipeline(tmp_path, minilm):
    settings = make_settings(tmp_path)
    return Pipeline.build(minilm, QdrantStore(open_client(settings), settings.collection), settings)


def test_a_batch_indexes_like_one_by_one_and_keeps_the_input_order(tmp_path, pipeline):
    folder = tmp_path / "in"
    made = docs.all_formats(folder)
    (folder / "broken.docx").write_bytes(b"PK\x03\x04 truncated")
    (folder / "empty.txt").write_bytes(b"")
    paths = sorted(folder.iterdir())
    results = list(BatchIngest(pipeline, workers=2).run([(p, f"in/{p.name}") for p in paths]))
    assert [r.source for r in results] == [f"in/{p.name}" for p in paths]
    by_source = {r.source: r for r in results}
    assert by_source["in/broken.docx"].status == "failed" and "DOCX" in by_source["in/broken.docx"].error
    assert by_source["in/empty.txt"].status == "failed" and "empty" in by_source["in/empty.txt"].error
    for path in made.values():
        result = by_source[f"in/{path.name}"]
        assert result.status == "indexed" and result.chunks == pipeline.store.count({"doc_id": result.doc_id})
        # the same document ingested alone under another name gives the same chunks
        alone = pipeline.ingest_path(path, source=f"alone/{path.name}")
        assert alone.chunks == result.chunks
        batch_texts = sorted(c.text for c in pipeline.store.iter_chunks({"doc_id": result.doc_id}))
        alone_texts = sorted(c.text for c in pipeline.store.iter_chunks({"doc_id": alone.doc_id}))
        assert batch_texts == alone_texts
        assert pipeline.registry.get(result.doc_id).status == "indexed"
    again = list(BatchIngest(pipeline, workers=2).run([(p, f"in/{p.name}") for p in paths]))
    assert {r.source: r.status for r in again if r.status != "failed"} == {f"in/{p.name}": "unchanged" for p in made.values()}


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "turns"])
def test_the_model_sees_many_documents_per_call(tmp_path, pipeline, overlap):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        docs.make_text(folder / f"{i:02d}.txt", text=f"문서 {i}번입니다. 내용이 짧습니다.")
    calls = []
    embed = pipeline.embedder.embed_passages
    pipeline.embedder.embed_passages = lambda chunks: calls.append(len(chunks)) or embed(chunks)
    try:
        batch = BatchIngest(pipeline, workers=2, overlap=overlap)
        results = list(batch.run([(p, p.name) for p in sorted(folder.iterdir())]))
    finally:
        del pipeline.embedder.embed_passages
    assert [r.status for r in results] == ["indexed"] * 12
    assert sum(calls) == 12 and len(calls) == 1


def test_one_registry_write_for_many_documents_keeps_each_ones_ownership(pipeline):
    """Batched state writes are a compare-and-set per document: the record a newer request took
    over meanwhile is left as the newer request wrote it, the others are written."""
    from korag.ids import new_seq
    from korag.storage.registry import DocumentRecord

    registry = pipeline.registry
    mine = [DocumentRecord(doc_id=f"d{i}", source=f"s{i}", status="parsing", request=f"r{i}", seq=new_seq())
            for i in range(3)]
    assert all(registry.claim(r) for r in mine)
    newer = DocumentRecord(doc_id="d1", source="s1", status="parsing", request="newer", seq=new_seq())
    assert registry.claim(newer)
    for record in mine:
        record.status = "indexed"
    assert registry.write_many(mine) == [True, False, True]
    assert [registry.get(f"d{i}").status for i in range(3)] == ["indexed", "parsing", "indexed"]
    assert registry.get("d1").request == "newer"


def test_on_the_cpu_the_parsers_rest_while_the_model_embeds(tmp_path, pipeline, monkeypatch):
    """The model and the parsers share this machine's cores: they take turns. No document is
    handed to a parser, or in one, while a model call runs; each call but the last takes a
    full window, across document boundaries; the outcome is the same as with overlap."""
    folder = tmp_path / "turns"
    folder.mkdir()
    for i in range(16):
        docs.make_text(folder / f"{i:02d}.txt", text=f"문서 {i}번입니다. 내용이 짧습니다.\n\n둘째 문단 {i}입니다.")
    events: list[tuple] = []
    submit, results = ParserPool.submit, ParserPool.results

    def counting_submit(self, *args):
        events.append(("submit", time.perf_counter()))
        return submit(self, *args)

    def counting_results(self):
        for item in results(self):
            events.append(("parsed", time.perf_counter()))
            yield item

    monkeypatch.setattr(ParserPool, "submit", counting_submit)
    monkeypatch.setattr(ParserPool, "results", counting_results)
    embed = pipeline.embedder.embed_passages
    calls: list[tuple[float, float, int, int]] = []

    def timed(chunks):
        in_parsers = sum(e[0] == "submit" for e in events) - sum(e[0] == "parsed" for e in events)
        start = time.perf_counter()
        out = embed(chunks)
        calls.append((start, time.perf_counter(), len(chunks), in_parsers))
        return out

    pipeline.embedder.embed_passages = timed
    try:
        batch = BatchIngest(pipeline, workers=2, window_chunks=6)
        assert batch.overlap is False  # auto: the model is on the CPU
        paths = [(p, p.name) for p in sorted(folder.iterdir())]
        turns = list(batch.run(paths))
        assert len(calls) >= 2
        assert all(n >= 6 for _, _, n, _ in calls[:-1])
        assert all(in_parsers == 0 for *_, in_parsers in calls)
        assert not [t for _, t in events for start, end, _, _ in calls if start <= t <= end]
        overlapped = list(BatchIngest(pipeline, workers=2, overlap=True).run([(p, f"o/{name}") for p, name in paths]))
    finally:
        del pipeline.embedder.embed_passages
    assert [r.status for r in turns] == ["indexed"] * 16
    assert [(r.status, r.chunks) for r in overlapped] == [("indexed", r.chunks) for r in turns]


def test_the_window_follows_the_model_size(pipeline):
    """Taking turns, a window is one model call: MiniLM gets a large one (less padding), KoE5's
    560M parameters a small one, so that results still come out every few minutes on a CPU."""
    from ingest.batch import window_for

    assert BatchIngest(pipeline, workers=1).window_chunks == window_for(pipeline.embedder.parameters) == 4096
    assert 64 <= window_for(560_000_000) <= 256
    assert window_for(10**11) == 64


def test_overlap_follows_the_setting(tmp_path, minilm):
    for value, expected in (("auto", False), ("on", True), ("off", False)):
        settings = make_settings(tmp_path / value, ingest_overlap=value)
        pipeline = Pipeline.build(minilm, QdrantStore(open_client(settings), settings.collection), settings)
        assert BatchIngest.from_settings(pipeline, settings).overlap is expected
