"""Memory follows a window of chunks, not the document (issue 18, item 15).

A long document is embedded and written a window of chunks at a time, in every ingest path (the
CLI's and the service's batch, the queue's embed stage, one queued document), and recorded
``indexed`` only once all its windows are stored: until then readers keep the version indexed
before. Real parts: forked parsers, the offline MiniLM model, qdrant-client's engine and Qdrant
Edge; the model and store calls are only observed (wrapped), never replaced. Peak memory is
measured in bench/RESULTS.md rather than here: at sizes a test can ingest on two cores, what a
whole-document call held (~10 MB of chunks and vectors per MB of text with MiniLM) is lost in
the ~330 MB of one 16k-token forward batch, which does not depend on the document."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench import documents as docs
from ingest.batch import BatchIngest
from ingest.pipeline import Pipeline
from ingest.stages import prepare_batch
from korag.ids import new_seq
from korag.storage.store import SEQ_FIELD, QdrantStore, open_client
from tests.conftest import make_settings
from tests.test_queue_batching import _queue

WINDOW = 8


def _one_line(paragraphs: int) -> str:
    """Korean sentences on one line, with spaces (MiniLM's WordPiece makes one [UNK] of a word
    over 100 characters, so text without spaces would give few chunks)."""
    return docs.long_korean_text(paragraphs).replace("\n\n", " ")


@pytest.fixture
def pipeline(tmp_path, minilm):
    settings = make_settings(tmp_path)
    return Pipeline.build(minilm, QdrantStore(open_client(settings), settings.collection), settings)


@pytest.fixture
def model_calls(monkeypatch, minilm):
    """The chunk count of every model call for passages."""
    calls: list[int] = []
    embed = minilm.embed_passages

    def counted(chunks):
        calls.append(len(chunks))
        return embed(chunks)

    monkeypatch.setattr(minilm, "embed_passages", counted)
    return calls


def _stored(pipeline: Pipeline, doc_id: str) -> list[dict]:
    return [c.metadata for c in pipeline.store.iter_chunks({"doc_id": doc_id})]


def test_a_long_document_is_written_a_window_at_a_time_and_recorded_once_all_are_stored(
        tmp_path, pipeline, model_calls, monkeypatch):
    path = tmp_path / "long.txt"
    path.write_text(docs.long_korean_text(2), encoding="utf-8")
    (first,) = BatchIngest(pipeline, workers=1).run([(path, "long.txt")])
    before = pipeline.registry.get(first.doc_id)
    assert first.status == "indexed" and before.version == 1

    seen = []  # what a reader finds in the registry while the new version's windows are written
    upsert = pipeline.store.upsert

    def observed(ids, vectors, payloads, sparse=None):
        record = pipeline.registry.get(first.doc_id)
        seen.append((record.version, record.indexed_seq, record.chunks))
        return upsert(ids, vectors, payloads, sparse)

    monkeypatch.setattr(pipeline.store, "upsert", observed)
    path.write_text(_one_line(24), encoding="utf-8")
    model_calls.clear()
    (second,) = BatchIngest(pipeline, workers=1, window_chunks=WINDOW).run([(path, "long.txt")])

    assert second.status == "indexed" and second.chunks > 4 * WINDOW, second
    assert max(model_calls) <= WINDOW and sum(model_calls) == second.chunks, model_calls
    assert len(seen) >= 5 and set(seen) == {(1, before.indexed_seq, before.chunks)}, seen  # the old version until the end
    after = pipeline.registry.get(first.doc_id)
    assert (after.status, after.version, after.chunks) == ("indexed", 2, second.chunks)
    stored = _stored(pipeline, first.doc_id)
    assert sorted(m["chunk_index"] for m in stored) == list(range(second.chunks))  # the old version's are gone
    assert {(m["chunk_count"], m[SEQ_FIELD]) for m in stored} == {(second.chunks, after.indexed_seq)}


def test_a_long_document_taken_over_between_windows_stops_and_removes_what_it_wrote(tmp_path, pipeline, model_calls,
                                                                                    monkeypatch):
    path = tmp_path / "long.txt"
    path.write_text(_one_line(24), encoding="utf-8")
    upsert = pipeline.store.upsert
    taken = []

    def newer_request_after_the_first_window(ids, vectors, payloads, sparse=None):
        upsert(ids, vectors, payloads, sparse)
        if not taken:
            doc_id = payloads[0]["metadata"]["doc_id"]
            record = pipeline.registry.get(doc_id)
            taken.append(replace(record, request="newer", seq=new_seq()))
            assert pipeline.registry.claim(taken[0])

    monkeypatch.setattr(pipeline.store, "upsert", newer_request_after_the_first_window)
    (result,) = BatchIngest(pipeline, workers=1, window_chunks=WINDOW).run([(path, "long.txt")])

    assert result.status == "superseded" and "newer" in result.error, result
    assert max(model_calls) <= WINDOW and len(model_calls) <= 3, model_calls  # the windows after it were not embedded
    assert _stored(pipeline, result.doc_id) == []  # its first window was removed
    assert pipeline.registry.get(result.doc_id).request == "newer"


def test_one_queued_document_is_embedded_a_window_at_a_time(tmp_path, pipeline, model_calls):
    pipeline.window_chunks = WINDOW
    data = _one_line(24).encode()
    result = pipeline.ingest_bytes(data, "long.txt", "long.txt")
    assert result.status == "indexed" and result.chunks > 4 * WINDOW
    assert max(model_calls) <= WINDOW and sum(model_calls) == result.chunks, model_calls
    assert len(_stored(pipeline, result.doc_id)) == result.chunks


def test_the_embed_stage_takes_a_long_document_a_window_at_a_time(tmp_path, minilm):
    from ingest.stages import Stage

    calls: list[tuple[int, int]] = []
    settings = make_settings(tmp_path, qdrant_url=None, worker_batch_chunks=WINDOW)
    stage = Stage(settings, minilm, on_embedded=lambda chunks, documents: calls.append((chunks, documents)))
    results: dict = {}
    prepare_batch(stage, _queue(stage, {"short.txt": "짧은 문서입니다.", "long.txt": _one_line(24)}), results,
                  embed_here=True)
    short, long = results[0], results[1]
    assert (short.status, long.status) == ("indexed", "indexed") and long.chunks > 4 * WINDOW
    assert max(chunks for chunks, _ in calls) <= WINDOW and sum(c for c, _ in calls) == short.chunks + long.chunks
    with stage.pipeline() as pipeline:
        record = pipeline.registry.get(long.doc_id)
        assert (record.status, record.chunks) == ("indexed", long.chunks)
        assert pipeline.store.count({"doc_id": long.doc_id}) == long.chunks


_CLI_INGEST = """
import json, sys
from pathlib import Path
from ingest.pipeline import DocumentInfo
from ingest.sentences import kiwi
from korag.cli.main import _ingest_in_process
from korag.settings import Settings

paths = [Path(p) for p in sys.argv[1:]]
results = list(_ingest_in_process([(p, p.name) for p in paths], Settings(), DocumentInfo(), False))
status = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in open("/proc/self/status"))
          if k in ("VmRSS", "VmHWM")}
print(json.dumps({"results": [(r.status, r.chunks) for r in results], "kiwi": kiwi.cache_info().currsize,
                  "rss_kb": status["VmRSS"], "peak_kb": status["VmHWM"]}))
"""


@pytest.mark.slow
def test_a_cli_ingest_gives_back_its_kiwi_once_the_parsers_are_forked(tmp_path):
    """``korag ingest``'s process analyses no text itself: its Kiwi (~480 MB) goes once the parser
    pool is forked, and the forked parsers still chunk and tag Korean. The CLI's in-process
    ingest runs in a fresh interpreter (as ``korag ingest`` does), so nothing else holds Kiwi."""
    import json
    import subprocess
    import sys

    from tests.conftest import korag_env, offline_model_path

    paths = []
    for name, paragraphs in (("a.txt", 3), ("b.txt", 5)):
        paths.append(tmp_path / name)
        paths[-1].write_text(docs.long_korean_text(paragraphs), encoding="utf-8")
    env = korag_env({"KORAG_EMBEDDING_MODEL": offline_model_path(), "KORAG_DATA_DIR": str(tmp_path / "data"),
                     "KORAG_EMBEDDING_DEVICE": "cpu"})
    done = subprocess.run([sys.executable, "-c", _CLI_INGEST, *map(str, paths)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert [status for status, _ in report["results"]] == ["indexed", "indexed"] and all(
        chunks > 0 for _, chunks in report["results"]), report
    assert report["kiwi"] == 0, report  # not held any more...
    assert report["peak_kb"] - report["rss_kb"] > 300 * 1024, report  # ...and its memory went back to the system
