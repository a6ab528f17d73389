"""Crash tests on real parts: a redis-server with its append-only file, real `korag worker`
processes killed with SIGKILL, the embedded Qdrant on disk. Every accepted document must end
`indexed` exactly once (no duplicate points); a poison document ends `failed`."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from bench import documents as docs
from korag.settings import Settings
from korag.storage.registry import DocumentRegistry
from korag.storage.store import store_session
from tests.conftest import Worker, korag_cli, queue_env, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
N_DOCS = 8


@pytest.fixture
def env(tmp_path, redis_server):
    return queue_env(tmp_path, redis_server.url,
        KORAG_TASK_SOFT_TIME_LIMIT="50",
        KORAG_TASK_TIME_LIMIT="60",
        KORAG_VISIBILITY_TIMEOUT="70",
        KORAG_SWEEP_AFTER_S="1",  # a restarted worker re-sends what the dead one left
        KORAG_MAX_CRASHES="2",
    )


def _batch(folder, n=N_DOCS, paragraphs=6):
    folder.mkdir()
    for i in range(n):
        docs.make_text(folder / f"문서{i:02d}.txt", text=f"문서 번호 {i}.\n\n" + docs.long_korean_text(paragraphs))
    return [f"in/문서{i:02d}.txt" for i in range(n)]


def _enqueue(env, tmp_path) -> dict[str, str]:
    done = korag_cli(["ingest", "in", "--json"], env, tmp_path)
    lines = [json.loads(l) for l in done.stdout.splitlines()]
    assert done.returncode == 0 and {l["status"] for l in lines} == {"queued"}, done.stderr
    return {l["source"]: l["doc_id"] for l in lines}




def _snapshot(env) -> tuple[dict, Counter, Counter]:
    """Registry records by doc_id, and stored points per doc_id and per (doc_id, chunk_index)."""
    settings = Settings(**{k[len("KORAG_"):].lower(): v for k, v in env.items() if k.startswith("KORAG_")})
    with store_session(settings, wait_s=60) as store:
        records = {r.doc_id: r for r in DocumentRegistry(store.client, store.collection).all()}
        per_doc, per_chunk = Counter(), Counter()
        if store.exists():
            for chunk in store.iter_chunks():
                per_doc[chunk.metadata["doc_id"]] += 1
                per_chunk[(chunk.metadata["doc_id"], chunk.metadata["chunk_index"])] += 1
    return records, per_doc, per_chunk


def _all_indexed(env, doc_ids) -> bool:
    records, _, _ = _snapshot(env)
    return all(d in records and records[d].status in ("indexed", "failed") for d in doc_ids)


def _assert_exactly_once(env, doc_ids) -> None:
    records, per_doc, per_chunk = _snapshot(env)
    for doc_id in doc_ids:
        record = records[doc_id]
        assert record.status == "indexed", (record.source, record.error)
        assert per_doc[doc_id] == record.chunks > 0
        assert sorted(i for d, i in per_chunk if d == doc_id) == list(range(record.chunks))
    assert max(per_chunk.values()) == 1  # no duplicate points


def test_worker_killed_mid_batch(tmp_path, env):
    sources = _batch(tmp_path / "in")
    worker = Worker(env, tmp_path, tmp_path / "worker1.log", "w1").start()
    try:
        ids = _enqueue(env, tmp_path)
        wait_until(lambda: worker.started(sources[2]), 120, "the third document to start")
        time.sleep(0.5)
        worker.kill()
    finally:
        worker.stop()
    replacement = Worker(env, tmp_path, tmp_path / "worker2.log", "w2").start()
    try:
        wait_until(lambda: _all_indexed(env, ids.values()), 300, "every document to finish")
    finally:
        replacement.stop()
    _assert_exactly_once(env, ids.values())


def test_redis_killed_mid_batch(tmp_path, env, redis_server):
    sources = _batch(tmp_path / "in")
    worker = Worker(env, tmp_path, tmp_path / "worker.log").start()
    try:
        ids = _enqueue(env, tmp_path)
        wait_until(lambda: worker.started(sources[1]), 120, "the second document to start")
        redis_server.kill()
        time.sleep(2)
        redis_server.start()  # same port, same directory: the append-only file is replayed
        wait_until(lambda: _all_indexed(env, ids.values()), 300, "every document to finish")
    finally:
        worker.stop()
    _assert_exactly_once(env, ids.values())


def test_poison_document_ends_failed_and_the_rest_finish(tmp_path, env):
    """The poison document takes its worker down every time (here: SIGKILL whenever a worker
    starts on it, as an out-of-memory kill would); it must end failed, not loop forever."""
    sources = _batch(tmp_path / "in", n=4, paragraphs=4)
    docs.make_text(tmp_path / "in" / "독.txt", text=docs.long_korean_text(80))
    poison = "in/독.txt"
    kills = 0
    worker = Worker(env, tmp_path, tmp_path / "worker0.log", "w0").start()

    def logs() -> str:  # every worker's log so far; the store stays free for the workers
        return "".join(p.read_text(errors="replace") for p in tmp_path.glob("worker*.log"))

    def finished(source: str) -> bool:
        return any(f"'source': '{source}'" in line and "succeeded" in line for line in logs().splitlines())

    try:
        ids = _enqueue(env, tmp_path)
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and not all(finished(s) for s in [*sources, poison]):
            if worker.started(poison, "embedding"):
                worker.kill()
                kills += 1
                # no waiting for a ping: a solo worker answers none while it runs a task, and the
                # replacement takes the redelivered poison at once (it would be indexed meanwhile)
                worker = Worker(env, tmp_path, tmp_path / f"worker{kills}.log", f"w{kills}").start(ready=False)
            time.sleep(0.2)
    finally:
        worker.stop()
    records, _, _ = _snapshot(env)
    bad = records[ids[poison]]
    assert bad.status == "failed" and "gave up after 2 interrupted attempts" in bad.error
    assert kills == 2
    _assert_exactly_once(env, [ids[s] for s in sources])
