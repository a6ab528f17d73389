"""One recovery routine (issue 19): what becomes of documents a dead process left unfinished is
decided by korag.services.lifecycle.recover for the Celery sweeper (a worker's start, `korag
sweep`) and for `korag serve`'s embedded queue alike; they differ only in how they send a document
again. Re-sent messages keep the document's tenant (its webhooks name it)."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import uuid

import pytest

from ingest.pipeline import Pipeline
from korag.services.ingest_queue import IngestQueue
from korag.services.lifecycle import Recovery, recover
from korag.storage.blobs import BlobStore
from korag.storage.registry import DocumentRecord, DocumentRegistry
from korag.storage.store import QdrantStore, open_client
from tests.conftest import make_settings
from workers.sweeper import sweep

HOUR = 3600.0


def _registry(settings) -> DocumentRegistry:
    return DocumentRegistry(open_client(settings), settings.collection)


def _put(registry: DocumentRegistry, doc_id: str, status: str, **fields) -> DocumentRecord:
    record = DocumentRecord(doc_id=doc_id, source=f"{doc_id}.txt", status=status, request=uuid.uuid4().hex, seq=1,
                            **fields)
    return registry.put(record)


def _dead_owner() -> str:
    """host:pid of a process that has ended."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return f"{socket.gethostname()}:{pid}"


def _situations(registry: DocumentRegistry, blobs: BlobStore, dead_owner: str) -> None:
    blob = blobs.put(b"stored bytes")
    _put(registry, "dead-owner", "embedding", owner=dead_owner, blob=blob, filename="a.txt")
    _put(registry, "no-content", "queued")
    _put(registry, "crashed-enough", "parsing", crashes=2, blob=blob, filename="a.txt")
    _put(registry, "resendable", "parsing", blob=blob, filename="a.txt", tenant="acme")
    _put(registry, "finished", "indexed", blob=blob, filename="a.txt")


def _outcomes(registry: DocumentRegistry) -> dict[str, tuple[str, str | None, int]]:
    return {r.doc_id: (r.status, r.error, r.crashes) for r in registry.all()}


def test_recover_decides_each_kind_of_lost_document(tmp_path):
    settings = make_settings(tmp_path)
    registry, blobs = _registry(settings), BlobStore(settings.blobs_path)
    _situations(registry, blobs, _dead_owner())
    first = recover(registry, max_crashes=3, stale_after_s=HOUR, resendable=lambda r: True)
    assert first == Recovery(failed=(registry.get("dead-owner"),))  # a dead owner at once; the rest too recent
    later = recover(registry, max_crashes=3, stale_after_s=HOUR, now=time.time() + 2 * HOUR,
                    resendable=lambda r: r.blob is not None)
    assert [r.doc_id for r in later.resend] == ["resendable"]
    assert sorted(r.doc_id for r in later.failed) == ["crashed-enough", "no-content"]
    outcomes = _outcomes(registry)
    status, error, _ = outcomes["dead-owner"]
    assert status == "failed" and "(pid " in error and "ended before it finished" in error
    assert outcomes["no-content"][:2] == (
        "failed", "interrupted: the korag process ingesting it ended before it finished; ingest it again")
    assert outcomes["crashed-enough"][0] == "failed" and "gave up after 3 interrupted attempts" in outcomes[
        "crashed-enough"][1]
    assert outcomes["resendable"] == ("queued", None, 1)  # found mid-flight: one interruption counted
    assert outcomes["finished"] == ("indexed", None, 0)


def test_the_sweeper_and_the_embedded_queue_leave_the_same_outcomes(tmp_path, minilm):
    """The same lost documents: the sweeper without a broker fails what it cannot send; the
    embedded queue (every unfinished document is lost at its start) runs again what has its bytes.
    Everything else, reasons included, is the same."""
    dead_owner = _dead_owner()
    swept_settings = make_settings(tmp_path / "swept")
    swept, swept_blobs = _registry(swept_settings), BlobStore(swept_settings.blobs_path)
    _situations(swept, swept_blobs, dead_owner)
    sweep(swept, None, swept_settings, now=time.time() + swept_settings.sweep_age_s + 60)

    served_settings = make_settings(tmp_path / "served")
    store = QdrantStore(open_client(served_settings), served_settings.collection)
    pipeline = Pipeline.build(minilm, store, served_settings)
    served_blobs = BlobStore(served_settings.blobs_path)
    _situations(pipeline.registry, served_blobs, dead_owner)
    queue = IngestQueue(pipeline, served_blobs)  # not started: the jobs wait
    jobs = queue.recover(served_settings.max_crashes)

    assert [job.doc_id for job in jobs] == ["resendable"]
    assert jobs[0].info.tenant == "acme"
    by_sweep, by_queue = _outcomes(swept), _outcomes(pipeline.registry)
    assert by_sweep.pop("resendable")[:2] == ("failed", by_queue["no-content"][1])  # no broker to send it to
    assert by_queue.pop("resendable")[0] == "queued"  # under a new request
    assert by_sweep == by_queue


@pytest.mark.integration
def test_the_sweeper_re_sends_a_parsed_document_to_the_embed_queue_with_its_tenant(tmp_path, redis_server):
    """Before issue 19 the re-sent embed message had no tenant: the embed worker's
    ``document.indexed`` webhook then said ``"tenant": null``."""
    import redis

    from workers.app import create_app

    settings = make_settings(tmp_path, broker_url=redis_server.url)
    registry, blobs = _registry(settings), BlobStore(settings.blobs_path)
    blob = blobs.put(b"stored bytes")
    parsed = _put(registry, "parsed", "embedding", tenant="acme", blob=blob, filename="a.txt")
    unparsed = _put(registry, "unparsed", "queued", tenant="acme", blob=blob, filename="b.txt")
    prepared = settings.blobs_path / "prepared"
    prepared.mkdir(parents=True)
    (prepared / f"{parsed.request}.json").write_text(json.dumps({"chunks": [{}, {}]}))

    app = create_app(settings)
    swept = sweep(registry, app, settings, now=time.time() + settings.sweep_age_s + 60)
    assert sorted(r.doc_id for r in swept) == ["parsed", "unparsed"]

    broker = redis.Redis(port=redis_server.port)
    sent = {}
    for queue in ("embed", "parse"):
        for raw in broker.lrange(queue, 0, -1):
            message = json.loads(raw)
            _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            sent[kwargs["doc_id"]] = (message["headers"]["task"], kwargs)
    assert sent["parsed"][0] == "korag.embed_document"
    assert sent["parsed"][1] == {"prepared": parsed.request, "doc_id": "parsed", "source": "parsed.txt",
                                 "chunks": 2, "seq": 1, "tenant": "acme"}
    assert sent["unparsed"][0] == "korag.ingest_document"
    assert sent["unparsed"][1]["tenant"] == "acme" and sent["unparsed"][1]["request"] == unparsed.request
