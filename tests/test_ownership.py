"""Who owns a document: concurrent versions, what `unchanged` means, deletions that outlive
queued messages, retries that are not crashes, in-process runs that died.

Two workers are two Pipelines over one Qdrant (qdrant-client's engine stands in for the shared
server); they are interleaved deterministically through the pipeline's ``on_step`` hook: the
first worker pauses after a step while the second runs a newer version to the end."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from bench import documents as docs
from ingest.pipeline import DocumentInfo, Pipeline, Request
from ingest.stages import InFlight, Stage, prepare_batch, settle_delivery
from ingest.starters import FromBlob
from korag.services.lifecycle import delete_document, queue_request, reap_dead_owners
from korag.storage.registry import DocumentRecord, DocumentRegistry
from korag.storage.store import QdrantStore, open_client
from korag.types import IngestResult
from retrieval.search import Retriever
from tests.conftest import make_settings, offline_model_path
from workers.tasks import _cut_short

OLD = "옛 버전 문서입니다. 오래된 규정 ALPHA-OLD-1111 이 적용됩니다.\n\n" + docs.long_korean_text(4)
NEW = "새 버전 문서입니다. 새 규정 OMEGA-NEW-9999 가 적용됩니다.\n\n" + docs.long_korean_text(2)
STEPS = ["parsing", "embedding", "upserted", "indexed", "cleaned"]


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
def store(settings):
    store = QdrantStore(open_client(settings), settings.collection)
    yield store
    store.client.close()


def _pipeline(minilm, store, settings, **changes) -> Pipeline:
    return Pipeline.build(minilm, store, settings.model_copy(update=changes) if changes else settings)


def _deliver(settings, minilm, blob: str, doc_id: str, request: Request) -> IngestResult:
    """One queued document through a worker's parse stage, embedding there, as
    ``korag.ingest_document`` runs it; a time limit is settled as the task settles it."""
    stage = Stage(settings, minilm)
    results: dict = {}
    try:
        prepare_batch(stage, [FromBlob(stage.blobs, blob, "a.txt", "a.txt", doc_id, DocumentInfo(), request)],
                      results, embed_here=True)
    except SoftTimeLimitExceeded:
        _cut_short(stage, {0: InFlight(doc_id, "a.txt", request.id, request.seq)}, results)
    return results[0]


def _pause_at(step: str, action):
    """An on_step hook that runs ``action`` once, right after ``step``."""
    fired = []

    def hook(current: str) -> None:
        if current == step and not fired:
            fired.append(step)
            action()
    return hook, fired


def _assert_only(store, registry, doc_id: str, text: str, chunks: int) -> None:
    record = registry.get(doc_id)
    assert (record.status, record.chunks) == ("indexed", chunks)
    assert record.content_hash == hashlib.sha256(text.encode()).hexdigest()
    stored = list(store.iter_chunks({"doc_id": doc_id}))
    assert len(stored) == chunks and {c.metadata["content_hash"] for c in stored} == {record.content_hash}
    assert {c.metadata["chunk_index"] for c in stored} == set(range(chunks))


@pytest.mark.parametrize("step", STEPS)
def test_in_process_the_newer_version_wins_whenever_the_older_one_resumes(step, minilm, store, settings):
    older, newer = _pipeline(minilm, store, settings), _pipeline(minilm, store, settings)
    results = {}
    older.on_step, fired = _pause_at(step, lambda: results.setdefault(
        "new", newer.ingest_bytes(NEW.encode(), "규정.txt", "규정.txt")))
    results["old"] = older.ingest_bytes(OLD.encode(), "규정.txt", "규정.txt")
    assert fired and results["new"].status == "indexed"
    if step in ("indexed", "cleaned"):  # the older one was recorded: the newer one replaced it
        assert results["old"].status == "indexed"
    else:
        assert results["old"].status == "superseded" and "superseded" in results["old"].error  # issue 24: not "failed"
    _assert_only(store, older.registry, results["new"].doc_id, NEW, results["new"].chunks)
    hits = Retriever(minilm, store).search("OMEGA-NEW-9999 규정", k=3, mode="sparse")
    assert hits and all("ALPHA-OLD-1111" not in h.text for h in hits)


@pytest.mark.parametrize("step", STEPS)
def test_queued_a_slow_worker_on_the_older_request_never_undoes_the_newer_one(step, minilm, store, settings):
    """Worker A holds the older queued request and pauses after ``step``; the newer request is
    queued and worker B runs it to the end; then A goes on."""
    a, b = _pipeline(minilm, store, settings), _pipeline(minilm, store, settings)
    registry, doc_id = a.registry, "doc-1"
    old_request = Request(*queue_request(registry, doc_id, "규정.txt", "규정.txt", "blob-old", None, {}), attempt="a:0")
    results = {}

    def newer_arrives():
        new_request = Request(*queue_request(registry, doc_id, "규정.txt", "규정.txt", "blob-new", None, {}),
                              attempt="b:0")
        results["new"] = b.ingest_bytes(NEW.encode(), "규정.txt", "규정.txt", doc_id, request=new_request)

    a.on_step, fired = _pause_at(step, newer_arrives)
    results["old"] = a.ingest_bytes(OLD.encode(), "규정.txt", "규정.txt", doc_id, request=old_request)
    assert fired and results["new"].status == "indexed"
    _assert_only(store, registry, doc_id, NEW, results["new"].chunks)
    # a redelivery of the older request is told it was superseded, and changes nothing
    assert "superseded" in settle_delivery(registry, doc_id, old_request, max_crashes=3).error


def test_an_older_request_that_starts_after_the_newer_one_is_queued_does_nothing(minilm, store, settings):
    pipeline = _pipeline(minilm, store, settings)
    old = Request(*queue_request(pipeline.registry, "d", "a.txt", "a.txt", "b1", None, {}))
    new = Request(*queue_request(pipeline.registry, "d", "a.txt", "a.txt", "b2", None, {}))
    assert pipeline.ingest_bytes(OLD.encode(), "a.txt", "a.txt", "d", request=old).status == "superseded"
    assert store.count({"doc_id": "d"}) == 0
    assert pipeline.ingest_bytes(NEW.encode(), "a.txt", "a.txt", "d", request=new).status == "indexed"


# -- what `unchanged` means ---------------------------------------------------------------------
def test_unchanged_needs_the_chunks_to_exist(minilm, store, settings):
    pipeline = _pipeline(minilm, store, settings)
    first = pipeline.ingest_bytes(NEW.encode(), "a.txt", "a.txt")
    assert pipeline.ingest_bytes(NEW.encode(), "a.txt", "a.txt").status == "unchanged"
    store.client.delete_collection(store.collection)  # as the model-mismatch error advises
    again = _pipeline(minilm, store, settings).ingest_bytes(NEW.encode(), "a.txt", "a.txt")
    assert (again.status, again.chunks) == ("indexed", first.chunks)
    assert Retriever(minilm, store).search("OMEGA-NEW-9999", k=1, mode="sparse")


def test_unchanged_takes_the_chunking_settings_into_account(minilm, store, settings):
    first = _pipeline(minilm, store, settings).ingest_bytes(OLD.encode(), "a.txt", "a.txt")
    same = _pipeline(minilm, store, settings).ingest_bytes(OLD.encode(), "a.txt", "a.txt")
    assert same.status == "unchanged"
    for change in ({"chunk_overlap_tokens": 0}, {"embed_section_header": False}, {"sparse_tags": "NNG,NNP"},
                   {"chunk_max_tokens": 128}):
        redone = _pipeline(minilm, store, settings, **change).ingest_bytes(OLD.encode(), "a.txt", "a.txt")
        assert redone.status == "indexed", change
        assert store.count({"doc_id": first.doc_id}) == redone.chunks
    assert _pipeline(minilm, store, settings, chunk_max_tokens=128).ingest_bytes(
        OLD.encode(), "a.txt", "a.txt").status == "unchanged"


def test_a_metadata_change_updates_the_chunks_without_embedding_again(minilm, store, settings):
    pipeline = _pipeline(minilm, store, settings)
    first = pipeline.ingest_bytes(OLD.encode(), "a.txt", "a.txt", info=DocumentInfo(meta=(("dept", "hr"), ("year", "2024"))))
    calls = []
    embed = pipeline.embedder.embed_passages
    pipeline.embedder.embed_passages = lambda chunks: calls.append(len(chunks)) or embed(chunks)
    try:
        moved = pipeline.ingest_bytes(OLD.encode(), "a.txt", "a.txt", info=DocumentInfo(meta=(("dept", "legal"),)))
    finally:
        del pipeline.embedder.embed_passages
    assert (moved.status, moved.chunks, calls) == ("indexed", first.chunks, [])
    assert store.count({"doc_id": first.doc_id, "dept": "legal"}) == first.chunks
    assert store.count({"doc_id": first.doc_id, "dept": "hr"}) == 0
    assert all("year" not in c.metadata for c in store.iter_chunks({"doc_id": first.doc_id}))
    assert pipeline.registry.get(first.doc_id).meta == {"dept": "legal"}
    again = pipeline.ingest_bytes(OLD.encode(), "a.txt", "a.txt", info=DocumentInfo(meta=(("dept", "legal"),)))
    assert again.status == "unchanged"


# -- deletion outlives queued messages --------------------------------------------------------------
def test_deleting_a_queued_document_is_not_undone_by_its_task(minilm, settings):
    from korag.storage.blobs import BlobStore
    from korag.storage.store import store_session

    settings = settings.model_copy(update={"qdrant_url": None})  # one embedded store, opened in turn
    blob = BlobStore(settings.blobs_path).put(NEW.encode())
    with store_session(settings) as store:
        pipeline = _pipeline(minilm, store, settings)
        indexed = pipeline.ingest_bytes(OLD.encode(), "a.txt", "a.txt")
        request = Request(*queue_request(pipeline.registry, indexed.doc_id, "a.txt", "a.txt", blob, None, {}))
        deletion = delete_document(store, pipeline.registry, indexed.doc_id)
    assert deletion.known and deletion.deleted_chunks == indexed.chunks
    outcome = _deliver(settings, minilm, blob, indexed.doc_id, request)
    assert outcome.status == "failed" and "deleted" in outcome.error
    with store_session(settings) as store:
        pipeline = _pipeline(minilm, store, settings)
        assert store.count({"doc_id": indexed.doc_id}) == 0
        assert pipeline.registry.get(indexed.doc_id) is None
        assert indexed.doc_id not in {r.doc_id for r in pipeline.registry.all()}
        # ingesting it again afterwards is a newer request: the document comes back
        assert pipeline.ingest_bytes(NEW.encode(), "a.txt", "a.txt").status == "indexed"
        assert pipeline.registry.get(indexed.doc_id).status == "indexed"


def test_deleting_a_document_while_it_is_being_embedded(minilm, store, settings):
    pipeline = _pipeline(minilm, store, settings)
    pipeline.on_step, _ = _pause_at("embedding", lambda: delete_document(store, pipeline.registry, "d"))
    outcome = pipeline.ingest_bytes(OLD.encode(), "a.txt", "a.txt", "d")
    assert outcome.status == "failed" and "deleted while it was being ingested" in outcome.error
    assert store.count({"doc_id": "d"}) == 0 and pipeline.registry.get("d") is None


# -- a retry is not a crash; the soft time limit ends the document ----------------------------
def test_transient_errors_after_the_state_was_written_are_retries_not_crashes(minilm, settings, tmp_path):
    """The store's upsert fails three times with a connection error (a Qdrant server restarting:
    the one failure the real local engine cannot produce on demand, so it is injected)."""
    from korag.storage.blobs import BlobStore

    settings = settings.model_copy(update={"max_crashes": 2, "qdrant_url": None})
    blob = BlobStore(settings.blobs_path).put(OLD.encode())
    from korag.storage.store import store_session

    with store_session(settings) as store:
        pipeline = _pipeline(minilm, store, settings)
        request = queue_request(pipeline.registry, "d", "a.txt", "a.txt", blob, None, {})
    original = QdrantStore.upsert
    flaky = {"left": 6}  # each attempt writes twice: all its documents at once, then each alone

    def upsert(self, *args, **kwargs):
        if flaky["left"]:
            flaky["left"] -= 1
            raise ConnectionError("qdrant: connection refused")
        return original(self, *args, **kwargs)

    QdrantStore.upsert = upsert
    try:
        for retries in range(3):  # Celery's autoretry: the same request, one more retry each time
            with pytest.raises(ConnectionError):
                _deliver(settings, minilm, blob, "d", Request(*request, attempt=f"{request[0]}:{retries}"))
        outcome = _deliver(settings, minilm, blob, "d", Request(*request, attempt=f"{request[0]}:3"))
    finally:
        QdrantStore.upsert = original
    assert outcome.status == "indexed", outcome
    with store_session(settings) as store:
        record = DocumentRegistry(store.client, store.collection).get("d")
    assert (record.status, record.crashes) == ("indexed", 0)


def test_a_redelivery_of_the_same_attempt_is_a_crash(minilm, store, settings):
    registry = _pipeline(minilm, store, settings).registry
    rid, seq = queue_request(registry, "d", "a.txt", "a.txt", "b", None, {})
    record = registry.get("d")
    record.status, record.attempt = "embedding", f"{rid}:0"
    registry.write(record)
    assert settle_delivery(registry, "d", Request(rid, seq, f"{rid}:1"), max_crashes=2) is None
    assert registry.get("d").crashes == 0  # a retry
    record = registry.get("d")
    record.status = "embedding"
    registry.write(record)
    assert settle_delivery(registry, "d", Request(rid, seq, f"{rid}:0"), max_crashes=2) is None
    assert registry.get("d").crashes == 1  # the same attempt delivered again: its worker died


def test_the_soft_time_limit_ends_the_document_failed_with_the_reason(minilm, settings):
    from korag.storage.blobs import BlobStore
    from korag.storage.store import store_session

    settings = settings.model_copy(update={"qdrant_url": None})
    blob = BlobStore(settings.blobs_path).put(OLD.encode())
    with store_session(settings) as store:
        request = Request(*queue_request(DocumentRegistry(store.client, store.collection), "d", "a.txt", "a.txt",
                                         blob, None, {}), attempt="x:0")

    def too_slow(chunks):
        raise SoftTimeLimitExceeded()

    minilm_embed = minilm.embed_passages
    minilm.embed_passages = too_slow
    try:
        outcome = _deliver(settings, minilm, blob, "d", request)
    finally:
        del minilm.embed_passages
    assert minilm.embed_passages == minilm_embed
    assert outcome.status == "failed" and "KORAG_TASK_SOFT_TIME_LIMIT" in outcome.error
    with store_session(settings) as store:
        record = DocumentRegistry(store.client, store.collection).get("d")
        assert record.status == "failed" and "KORAG_TASK_SOFT_TIME_LIMIT" in record.error
        assert QdrantStore(store.client, store.collection).count({"doc_id": "d"}) == 0


# -- an in-process run that died ----------------------------------------------------------------
@pytest.mark.slow
def test_a_killed_in_process_ingest_is_failed_at_once_not_after_the_sweep_age(tmp_path):
    """A real process ingests into an embedded store and SIGKILLs itself while embedding."""
    data = tmp_path / "data"
    script = textwrap.dedent(f"""
        import os, signal
        from ingest.embedder import Embedder
        from ingest.pipeline import Pipeline
        from korag.settings import Settings
        from korag.storage.store import store_session
        settings = Settings(embedding_model={offline_model_path()!r}, data_dir={str(data)!r}, embedding_device="cpu")
        with store_session(settings) as store:
            pipeline = Pipeline.build(Embedder.load(settings), store, settings)
            pipeline.on_step = lambda step: os.kill(os.getpid(), signal.SIGKILL) if step == "embedding" else None
            pipeline.ingest_bytes({OLD!r}.encode(), "a.txt", "a.txt", "d")
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    from korag.storage.store import store_session

    settings = make_settings(tmp_path, qdrant_url=None)
    with store_session(settings) as store:
        registry = DocumentRegistry(store.client, store.collection)
        assert registry.get("d").status == "embedding"
        reaped = reap_dead_owners(registry)
        assert [r.doc_id for r in reaped] == ["d"]
        record = registry.get("d")
        assert record.status == "failed" and "ended before it finished" in record.error


def test_a_live_owner_is_not_reaped(minilm, store, settings):
    registry = _pipeline(minilm, store, settings).registry
    registry.put(DocumentRecord(doc_id="d", source="a.txt", status="parsing", request="r", seq=1,
                                owner=f"{socket.gethostname()}:{os.getpid()}"))
    assert reap_dead_owners(registry) == [] and registry.get("d").status == "parsing"


def test_the_same_bytes_under_a_new_source_update_the_stored_source(minilm, store, settings):
    pipeline = _pipeline(minilm, store, settings)
    first = pipeline.ingest_bytes(NEW.encode(), "a.txt", "old/a.txt", "d")
    moved = pipeline.ingest_bytes(NEW.encode(), "b.txt", "new/b.txt", "d")
    assert (moved.status, moved.chunks) == ("indexed", first.chunks)
    stored = list(store.iter_chunks({"doc_id": "d"}))
    assert {(c.metadata["source"], c.metadata["filename"]) for c in stored} == {("new/b.txt", "b.txt")}
    assert pipeline.ingest_bytes(NEW.encode(), "b.txt", "new/b.txt", "d").status == "unchanged"
