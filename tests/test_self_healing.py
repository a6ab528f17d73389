"""Distributed mode heals itself (issue 24, items 1 and 3), on real parts: a redis-server with its
append-only file, real `korag worker` processes killed with SIGKILL, the embedded Qdrant on disk,
the offline model. Default timeouts throughout (visibility timeout 2 h, sweep age 36 min): what
recovers a document here is the hand-over's retry and the workers' liveness, not an age. No test
runs `korag sweep`.

- Redis killed at the hand-over from a parse worker to the embed queue (the document recorded
  ``queued``, its embed message not yet accepted), then restarted from its append-only file: the
  document ends ``indexed`` exactly once within ``HANDOVER_BOUND_S`` of the restart.
- A worker killed mid-batch: its documents show as stalled (``korag status``, ``korag docs``,
  and the service behind ``GET /v1/documents`` and the ``korag_documents_stalled`` metric), and a
  new worker's sweep re-queues them: ``indexed`` exactly once within ``WORKER_BOUND_S`` of the new
  worker's start.
- The decision itself (:func:`korag.services.lifecycle.recover`) against a real Redis: a document
  held by a live worker (this process, or one elsewhere that beats) is never touched, however
  long it takes; one whose worker stopped beating is sent again at once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import uuid

import pytest

from bench import documents as docs
from korag.services.lifecycle import recover
from korag.services.liveness import DEAD_AFTER_S, Liveness
from korag.services.queue_client import CeleryQueue
from korag.services.service import Service
from korag.services.telemetry import Metrics
from korag.settings import Settings
from korag.storage.registry import DocumentRecord, DocumentRegistry, this_process
from korag.storage.store import open_client, store_session
from tests.conftest import Worker, korag_cli, make_settings, queue_env, wait_until
from tests.test_crash import _assert_exactly_once, _snapshot
from workers.app import create_app

HANDOVER_BOUND_S = 120.0  # from Redis' restart to the document indexed
WORKER_BOUND_S = 90.0  # from the new worker's start to every document indexed


@pytest.fixture
def env(tmp_path, redis_server):
    return queue_env(tmp_path, redis_server.url)


def _enqueue(env, tmp_path) -> dict[str, str]:
    done = korag_cli(["ingest", "in", "--json"], env, tmp_path)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and {line["status"] for line in lines} == {"queued"}, done.stderr
    return {line["source"]: line["doc_id"] for line in lines}


def _logged(worker: Worker, text: str) -> bool:
    return worker.log.exists() and text in worker.log.read_text(errors="replace")


@pytest.mark.integration
@pytest.mark.slow
def test_redis_killed_at_the_hand_over_to_the_embed_queue(tmp_path, env, redis_server):
    """Redis is frozen (SIGSTOP) once the parse worker took the document, so the worker records it
    ``queued`` and then blocks sending its embed message; Redis is then killed (SIGKILL: only the
    append-only file survives) and restarted. Before the fix the send failed, the parse message
    was settled and the document stayed ``queued`` with no message anywhere."""
    (tmp_path / "in").mkdir()
    docs.make_text(tmp_path / "in" / "문서.txt", text=docs.long_korean_text(40))
    source = "in/문서.txt"
    parser = Worker(env, tmp_path, tmp_path / "parse.log", "parse", queues="parse").start()
    embedder = Worker(env, tmp_path, tmp_path / "embed.log", "embed", queues="embed").start()
    try:
        ids = _enqueue(env, tmp_path)
        wait_until(lambda: _logged(parser, "ingesting 1 document(s)"), 120, "the parse worker to take it")
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        wait_until(lambda: _logged(parser, f"{source}: queued"), 120, "the document recorded queued")
        time.sleep(1)  # the worker is sending the embed message now, to a broker that does not answer
        redis_server.kill()
        time.sleep(5)  # the send fails while the broker is down
        redis_server.start()  # same port, same directory: the append-only file is replayed
        restarted = time.monotonic()
        wait_until(lambda: _snapshot(env)[0][ids[source]].status in ("indexed", "failed"), HANDOVER_BOUND_S,
                    "the document to finish")
        assert time.monotonic() - restarted < HANDOVER_BOUND_S
    finally:
        parser.stop()
        embedder.stop()
    assert "the embed queue did not take it" in parser.log.read_text(errors="replace")
    _assert_exactly_once(env, ids.values())


@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_workers_documents_are_shown_stalled_and_sent_again(tmp_path, env, minilm):
    (tmp_path / "in").mkdir()
    for i in range(6):
        docs.make_text(tmp_path / "in" / f"문서{i:02d}.txt", text=f"문서 번호 {i}.\n\n" + docs.long_korean_text(6))
    worker = Worker(env, tmp_path, tmp_path / "worker1.log", "w1").start()
    try:
        ids = _enqueue(env, tmp_path)
        wait_until(lambda: _logged(worker, ": embedding"), 180, "a batch to reach the model")
        worker.kill()
    finally:
        worker.stop()
    records, _, _ = _snapshot(env)
    held = sorted(d for d, r in records.items() if r.status in ("parsing", "embedding"))
    assert held, "the worker was killed with documents in hand"

    status = korag_cli(["status", "--json"], env, tmp_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["stalled"] == len(held)
    listed = [json.loads(line) for line in korag_cli(["docs", "--json"], env, tmp_path).stdout.splitlines()]
    assert sorted(d["doc_id"] for d in listed if d["stalled"]) == held
    text = korag_cli(["status", held[0]], env, tmp_path).stdout
    assert "stalled: its worker process is gone" in text

    assert _stalled_in_the_service(env, minilm) == (held, len(held))
    replacement = Worker(env, tmp_path, tmp_path / "worker2.log", "w2").start()
    started = time.monotonic()
    try:
        wait_until(lambda: all(r.status == "indexed" for r in _snapshot(env)[0].values())
                   and len(_snapshot(env)[0]) == len(ids), WORKER_BOUND_S, "every document indexed")
        assert time.monotonic() - started < WORKER_BOUND_S
    finally:
        replacement.stop()
    assert _stalled_in_the_service(env, minilm) == ([], 0)
    _assert_exactly_once(env, ids.values())
    assert json.loads(korag_cli(["status", "--json"], env, tmp_path).stdout)["stalled"] == 0


def _stalled_in_the_service(env, minilm) -> tuple[list[str], int]:
    """What ``GET /v1/documents`` and ``/metrics`` of a `korag serve` in distributed mode say:
    the documents flagged stalled and the ``korag_documents_stalled`` gauge. Asked of the
    service object those routes are thin over, in this process: `korag serve` in distributed mode
    needs a Qdrant server shared with the workers, and none can run here."""
    settings = Settings(**{k[len("KORAG_"):].lower(): v for k, v in env.items() if k.startswith("KORAG_")})
    metrics = Metrics()
    with store_session(settings, wait_s=60) as store:
        service = Service(settings, minilm, store, celery=CeleryQueue(create_app(settings)), metrics=metrics)
        flagged = sorted(d.doc_id for d in service.documents(None, limit=100).documents if d.stalled)
        gauge = re.search(r"^korag_documents_stalled (\S+)$", metrics.render()[0].decode(), re.M)
    assert gauge is not None
    return flagged, int(float(gauge.group(1)))


# -- the decision, against a real Redis -------------------------------------------------------------
def _held(registry: DocumentRegistry, doc_id: str, owner: str, status: str = "parsing") -> None:
    request = uuid.uuid4().hex
    registry.put(DocumentRecord(doc_id=doc_id, source=f"{doc_id}.txt", status=status, request=request, seq=1,
                                attempt=f"{request}:0", owner=owner, blob="b" * 64, filename="a.txt"))


@pytest.mark.integration
def test_recover_takes_back_only_what_a_dead_worker_held(tmp_path, redis_server):
    settings = make_settings(tmp_path)
    registry = DocumentRegistry(open_client(settings), settings.collection)
    liveness = Liveness.from_url(redis_server.url)
    assert liveness is not None
    elsewhere_alive, elsewhere_dead = "another-host:101", "another-host:102"
    liveness.beat(elsewhere_alive)
    liveness.beat(elsewhere_dead, now=time.time() - DEAD_AFTER_S - 1)
    _held(registry, "here-alive", this_process())  # a long parse of this very process
    _held(registry, "there-alive", elsewhere_alive, "embedding")
    _held(registry, "there-dead", elsewhere_dead, "embedding")
    _held(registry, "unknown", "a-third-host:7")  # no beat recorded: cannot tell
    dead_here = os.fork()
    if dead_here == 0:
        os._exit(0)
    os.waitpid(dead_here, 0)
    _held(registry, "here-dead", f"{socket.gethostname()}:{dead_here}")

    recovery = recover(registry, max_crashes=3, stale_after_s=3600, resendable=lambda r: True,
                       alive=liveness.alive)
    assert sorted(r.doc_id for r in recovery.resend) == ["here-dead", "there-dead"]
    assert recovery.failed == ()  # a dead worker's documents go again; only a dead in-process ingest fails
    states = {r.doc_id: (r.status, r.crashes, r.owner) for r in registry.all()}
    assert states["here-dead"] == ("queued", 1, None) and states["there-dead"] == ("queued", 1, None)
    assert states["here-alive"][0] == "parsing" and states["there-alive"][0] == "embedding"
    assert states["unknown"][0] == "parsing"
    # two workers sweeping on a timer take turns
    assert liveness.take_turn("sweep", 10) and not liveness.take_turn("sweep", 10)


def test_stalled_documents_are_a_metric():
    metrics = Metrics()
    metrics.set_stalled(lambda: 3)
    assert "korag_documents_stalled 3.0" in metrics.render()[0].decode()
