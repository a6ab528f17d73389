"""The queue path batches across documents: parse workers (CPU) and embed workers (the model)
on separate queues, and a worker with both taking many documents per task.

Real parts: the stages over the embedded store (Qdrant Edge) and MiniLM; the Celery cases run a
redis-server and real `korag worker --queues ...` processes, with the CLI as the client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest

from bench import documents as docs
from ingest.pipeline import DocumentInfo, Pipeline, Request
from ingest.stages import PreparedStore, Stage, prepare_batch
from ingest.starters import FromBlob
from korag.services.lifecycle import queue_request
from korag.settings import Settings
from korag.storage.blobs import BlobStore
from korag.storage.registry import DocumentRegistry
from korag.storage.store import store_session
from tests.conftest import Worker, korag_cli, make_settings, queue_env, wait_until


def _texts(n: int) -> dict[str, str]:
    return {f"문서{i:02d}.txt": f"문서 번호 {i}. 고유 표식 TOKEN{i:02d}.\n\n" + docs.long_korean_text(4 + i % 3) for i in range(n)}


# -- the stages, no Celery ---------------------------------------------------------------------------
@pytest.fixture
def stage(tmp_path, minilm):
    calls: list[tuple[int, int]] = []
    settings = make_settings(tmp_path, qdrant_url=None)
    return Stage(settings, minilm, on_embedded=lambda chunks, documents: calls.append((chunks, documents))), calls


def _queue(stage: Stage, texts: dict[str, str]) -> list[FromBlob]:
    blobs = BlobStore(stage.settings.blobs_path)
    out = []
    with stage.pipeline() as pipeline:
        for name, text in texts.items():
            blob = blobs.put(text.encode())
            own = Request(*queue_request(pipeline.registry, f"id-{name}", name, name, blob, None, {}), attempt="a:0")
            out.append(FromBlob(blobs, blob, name, name, f"id-{name}", DocumentInfo(), own))
    return out


def test_a_batch_of_documents_is_embedded_in_one_model_call_with_the_same_chunks(stage, minilm, tmp_path):
    stage, calls = stage
    texts = _texts(5)
    results: dict = {}
    prepare_batch(stage, _queue(stage, texts), results, embed_here=True)
    assert [r.status for r in results.values()] == ["indexed"] * 5
    assert calls == [(sum(r.chunks for r in results.values()), 5)]  # every chunk of all five at once
    # the same documents one by one through the in-process pipeline give the same chunks
    alone = make_settings(tmp_path / "alone", qdrant_url=None)
    with store_session(alone) as store:
        pipeline = Pipeline.build(minilm, store, alone)
        for i, (name, text) in enumerate(texts.items()):
            assert pipeline.ingest_bytes(text.encode(), name, name).chunks == results[i].chunks
    with stage.pipeline() as pipeline:
        for i, name in enumerate(texts):
            stored = sorted(c.metadata["chunk_index"] for c in pipeline.store.iter_chunks({"doc_id": f"id-{name}"}))
            assert stored == list(range(results[i].chunks))


def test_a_document_that_was_interrupted_before_runs_alone(stage):
    stage, calls = stage
    deliveries = _queue(stage, _texts(3))
    with stage.pipeline() as pipeline:  # the second one took a worker down once already
        record = pipeline.registry.get(deliveries[1].doc_id)
        record.crashes = 1
        pipeline.registry.write(record)
    results: dict = {}
    prepare_batch(stage, deliveries, results, embed_here=True)
    assert [results[i].status for i in range(3)] == ["indexed"] * 3
    assert [documents for _, documents in calls] == [2, 1]
    assert calls[1][0] == results[1].chunks
    with stage.pipeline() as pipeline:
        assert pipeline.registry.get(deliveries[1].doc_id).crashes == 0


def test_a_parse_only_worker_leaves_prepared_documents_for_the_embed_stage(stage, minilm, monkeypatch):
    from ingest.stages import embed_batch
    from korag.messages import EmbedMessage

    stage, calls = stage
    deliveries = _queue(stage, _texts(3))
    sent: list[EmbedMessage] = []
    results: dict = {}
    prepare_batch(stage, deliveries, results, embed_here=False, forward=lambda i, order: sent.append(order))
    assert calls == [] and [o.doc_id for o in sent] == [d.doc_id for d in deliveries]
    with stage.pipeline() as pipeline:
        assert {pipeline.registry.get(d.doc_id).status for d in deliveries} == {"queued"}
    prepared = PreparedStore.from_settings(stage.settings)
    assert all(prepared.exists(o.prepared) for o in sent)

    # the parse side's token ids travel with the chunks: the embed side does not tokenize again
    assert all(c["input_ids"] for o in sent for c in prepared.get(o.prepared)["chunks"])

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("the embed stage tokenized again")

    monkeypatch.setattr(minilm.engine, "tokenize", no_tokenizing)
    outcomes: dict = {}
    redelivered = (sent[0], f"{sent[0].prepared}:e1")  # the same document twice in one batch: embedded once
    embed_batch(stage, [(o, f"{o.prepared}:e0") for o in sent] + [redelivered], outcomes)
    assert [outcomes[i].status for i in range(4)] == ["indexed"] * 4
    assert [outcomes[i].chunks for i in range(4)] == [o.chunks for o in sent] + [sent[0].chunks]
    assert calls == [(sum(o.chunks for o in sent), 3)]
    assert not any(prepared.exists(o.prepared) for o in sent)  # removed once recorded
    again: dict = {}
    embed_batch(stage, [(sent[0], f"{sent[0].prepared}:e0")], again)  # a redelivered message: nothing new
    assert again[0].status == "unchanged" and len(calls) == 1


# -- real workers on separate queues -----------------------------------------------------------------
class RoleWorker(Worker):
    """A `korag worker --queues ROLES` process (solo pool)."""

    def __init__(self, env, cwd, log, name: str, roles: str) -> None:
        super().__init__(env, cwd, log, name)
        self.roles = roles

    def start(self, timeout: float = 90, ping: bool = True) -> "RoleWorker":
        """``ping=False``: return at once (a solo worker that takes a task as it starts answers no
        ping until the task is done)."""
        handle = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "korag.cli", "worker", "--pool", "solo", "--loglevel", "INFO",
             "--hostname", f"{self.name}@%h", "--queues", self.roles],
            env=self.env, cwd=self.cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if not ping:
            return self
        from celery import Celery

        probe = Celery(broker=self.env["KORAG_BROKER_URL"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()[-2000:]}")
            if any(name.startswith(f"{self.name}@") for reply in probe.control.ping(timeout=0.5) for name in reply):
                return self
        raise RuntimeError(f"worker did not answer a ping: {self.log.read_text()[-2000:]}")

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def env(tmp_path, redis_server):
    return queue_env(tmp_path, redis_server.url,
        KORAG_TASK_SOFT_TIME_LIMIT="100",
        KORAG_TASK_TIME_LIMIT="110",
        KORAG_VISIBILITY_TIMEOUT="600",
    )


def _write(folder, texts: dict[str, str]) -> list[str]:
    folder.mkdir()
    for name, text in texts.items():
        docs.make_text(folder / name, text=text)
    return [f"in/{name}" for name in texts]




def _embed_waiting(redis_server) -> int:
    import redis

    return redis.Redis(port=redis_server.port).llen("embed")


def _snapshot(env) -> tuple[dict, Counter, Counter]:
    settings = Settings(**{k[len("KORAG_"):].lower(): v for k, v in env.items() if k.startswith("KORAG_")})
    with store_session(settings, wait_s=60) as store:
        records = {r.source: r for r in DocumentRegistry(store.client, store.collection).all()}
        per_doc, per_chunk = Counter(), Counter()
        if store.exists():
            for chunk in store.iter_chunks():
                per_doc[chunk.metadata["source"]] += 1
                per_chunk[(chunk.metadata["source"], chunk.metadata["chunk_index"])] += 1
    return records, per_doc, per_chunk


def _enqueue(env, tmp_path) -> dict[str, str]:
    done = korag_cli(["ingest", "in", "--json"], env, tmp_path)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and {line["status"] for line in lines} == {"queued"}, done.stderr
    return {line["source"]: line["doc_id"] for line in lines}


@pytest.mark.integration
@pytest.mark.slow
def test_parse_and_embed_workers_on_separate_queues_batch_across_documents(tmp_path, env, redis_server):
    """Documents queued while only a parse worker runs wait, parsed, in the embed queue; the embed
    worker then embeds the chunks of all of them in one model call; every document ends indexed
    with its chunks, and `--wait` gets each document's outcome from the embed worker."""
    texts = _texts(8)
    sources = _write(tmp_path / "in", texts)
    parser = RoleWorker(env, tmp_path, tmp_path / "parse.log", "parse", "parse").start()
    embedder = RoleWorker(env, tmp_path, tmp_path / "embed.log", "embed", "embed")
    try:
        waiting = subprocess.Popen([sys.executable, "-m", "korag.cli", "ingest", "in", "--wait", "--json"], env=env,
                                   cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: _embed_waiting(redis_server) == len(sources), 240, "every document to be parsed")
        records, per_doc, _ = _snapshot(env)
        assert {records[s].status for s in sources} == {"queued"} and not per_doc  # parsed, not embedded
        embedder.start()
        out, err = waiting.communicate(timeout=300)
    finally:
        parser.stop()
        embedder.stop()
    lines = {json.loads(line)["source"]: json.loads(line) for line in out.splitlines()}
    assert waiting.returncode == 0, err
    assert {lines[s]["status"] for s in sources} == {"indexed"}
    records, per_doc, per_chunk = _snapshot(env)
    for source in sources:
        assert records[source].status == "indexed"
        assert per_doc[source] == records[source].chunks == lines[source]["chunks"] > 1
    assert max(per_chunk.values()) == 1
    total = sum(per_doc.values())
    assert f"embedded {total} chunks of {len(sources)} documents in one call" in embedder.text()
    assert "in one call" not in parser.text() and ": parsing" not in embedder.text()  # each did its own stage
    assert not list((tmp_path / "data" / "blobs" / "prepared").glob("*.json"))  # prepared files cleaned up
    found = korag_cli(["search", "TOKEN05", "-k", "1", "--json", "--mode", "sparse"], env, tmp_path)
    assert "TOKEN05" in json.loads(found.stdout)["results"][0]["text"]


@pytest.mark.integration
@pytest.mark.slow
def test_a_document_deleted_while_waiting_for_an_embed_worker_stays_deleted(tmp_path, env, redis_server):
    sources = _write(tmp_path / "in", _texts(2))
    parser = RoleWorker(env, tmp_path, tmp_path / "parse.log", "parse", "parse").start()
    try:
        ids = {json.loads(line)["source"]: json.loads(line)["doc_id"]
               for line in korag_cli(["ingest", "in", "--json"], env, tmp_path).stdout.splitlines()}
        wait_until(lambda: _embed_waiting(redis_server) == 2, 240, "both documents to be parsed")
    finally:
        parser.stop()
    deleted = korag_cli(["delete", ids[sources[0]], "--json"], env, tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    embedder = RoleWorker(env, tmp_path, tmp_path / "embed.log", "embed", "embed").start()
    try:
        wait_until(lambda: "deleted before it was ingested" in embedder.text()
                    and f"'source': '{sources[1]}'" in embedder.text(), 240, "the embed worker to take both")
    finally:
        embedder.stop()
    records, per_doc, _ = _snapshot(env)
    assert sources[0] not in records and per_doc[sources[0]] == 0
    assert records[sources[1]].status == "indexed" and per_doc[sources[1]] == records[sources[1]].chunks
    assert not list((tmp_path / "data" / "blobs" / "prepared").glob("*.json"))


@pytest.mark.integration
@pytest.mark.slow
def test_an_embed_worker_killed_mid_batch_counts_the_crash_and_the_documents_finish_alone(tmp_path, env, redis_server):
    """SIGKILL the embed worker while it embeds a batch: the next embed worker's start-up sweep
    counts one interruption per document and sends them back to the embed queue (already parsed);
    each is then embedded alone, and every document ends indexed exactly once."""
    sources = _write(tmp_path / "in", {f"긴문서{i}.txt": f"문서 {i}.\n\n" + docs.long_korean_text(30) for i in range(6)})
    parser = RoleWorker(env, tmp_path, tmp_path / "parse.log", "parse", "parse").start()
    try:
        _enqueue(env, tmp_path)
        wait_until(lambda: _embed_waiting(redis_server) == len(sources), 240, "every document to be parsed")
    finally:
        parser.stop()
    first = RoleWorker(env, tmp_path, tmp_path / "embed1.log", "e1", "embed").start(ping=False)
    try:
        deadline = time.monotonic() + 180
        while not all(f"{s}: embedding" in first.text() for s in sources):  # all taken: the model runs now
            assert time.monotonic() < deadline, "the batch never started embedding"
            time.sleep(0.05)
        first.kill()
    finally:
        first.stop()
    records, _, _ = _snapshot(env)
    assert {records[s].status for s in sources} == {"embedding"}
    sweeping = {**env, "KORAG_SWEEP_AFTER_S": "1"}  # the new worker re-sends what the dead one left
    second = RoleWorker(sweeping, tmp_path, tmp_path / "embed2.log", "e2", "embed").start()
    try:
        wait_until(lambda: all(_snapshot(env)[0][s].status == "indexed" for s in sources), 240, "every document")
    finally:
        second.stop()
    records, per_doc, per_chunk = _snapshot(env)
    assert all(per_doc[s] == records[s].chunks > 0 and records[s].crashes == 0 for s in sources)
    assert max(per_chunk.values()) == 1  # no duplicate points
    assert second.text().count("documents in one call") == len(sources)
    assert second.text().count("of 1 documents in one call") == len(sources)  # each alone after the crash
    assert ": parsing" not in second.text()  # sent back as parsed documents, not parsed again
