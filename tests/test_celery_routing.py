"""Issue 18 item 12: each queue has its own routing key, so a message reaches exactly one queue.

Real parts: a redis-server, kombu publishing to Celery's default exchange, and real `korag worker`
processes (which declare the queues and remove the bindings an older korag left)."""

from __future__ import annotations

import json

import pytest
import redis
from celery import Celery
from kombu import Queue

from bench import documents as docs
from korag.errors import StoreBusyError
from tests.conftest import korag_cli, wait_until
from tests.test_queue_batching import RoleWorker, _snapshot
from tests.test_queue_batching import env as env  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUEUES = ("celery", "parse", "embed")


def _publish(url: str, routing_key: str) -> None:
    """A message on Celery's default exchange (``celery``), as any client that names the exchange sends it."""
    probe = Celery(broker=url)
    with probe.connection_for_write() as connection:
        with connection.Producer() as producer:
            producer.publish({"probe": routing_key}, exchange="celery", routing_key=routing_key, serializer="json")


def _lengths(server) -> dict[str, int]:
    client = redis.Redis(port=server.port)
    return {name: client.llen(name) for name in QUEUES}


def _declare_like_an_older_korag(url: str) -> None:
    """What a korag before issue 18 declared: the three queues, each on routing key ``celery``."""
    old = Celery(broker=url)
    old.conf.task_queues = [Queue("celery"), Queue("parse"), Queue("embed")]
    old.conf.task_default_queue = "celery"
    with old.connection_for_write() as connection:
        for queue in old.amqp.queues.values():
            queue.bind(connection.default_channel).declare()


def _run_worker_once(env, tmp_path, name: str) -> RoleWorker:
    """A worker that declares its queues, answers a ping, and stops (so nothing consumes the probes)."""
    worker = RoleWorker(env, tmp_path, tmp_path / f"{name}.log", name, "parse,embed").start()
    worker.stop()
    return worker


def test_a_message_on_the_default_exchange_reaches_one_queue(tmp_path, env, redis_server):
    _run_worker_once(env, tmp_path, "w1")
    for key in QUEUES:
        before = _lengths(redis_server)
        _publish(redis_server.url, key)
        after = _lengths(redis_server)
        assert {q: after[q] - before[q] for q in QUEUES} == {q: int(q == key) for q in QUEUES}, key


def test_a_worker_removes_the_bindings_an_older_korag_left(tmp_path, env, redis_server):
    _declare_like_an_older_korag(redis_server.url)
    _publish(redis_server.url, "celery")
    assert _lengths(redis_server) == {"celery": 1, "parse": 1, "embed": 1}  # the copies this fixes
    redis.Redis(port=redis_server.port).delete(*QUEUES)
    worker = _run_worker_once(env, tmp_path, "w1")
    assert "removed 2 queue binding(s) an older korag left" in worker.text()
    _publish(redis_server.url, "celery")
    assert _lengths(redis_server) == {"celery": 1, "parse": 0, "embed": 0}


def test_documents_an_older_korag_queued_in_celery_are_ingested_by_a_parse_worker(tmp_path, env, redis_server):
    """Messages an older korag sent to Celery's default queue ``celery`` (moved there from ``parse``
    here, byte for byte) are consumed by a parse worker and end indexed."""
    (tmp_path / "in").mkdir()
    for i in range(3):
        docs.make_text(tmp_path / "in" / f"옛문서{i}.txt", text=f"옛 문서 {i}.\n\n" + docs.long_korean_text(2))
    done = korag_cli(["ingest", "in", "--json"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    sources = [json.loads(line)["source"] for line in done.stdout.splitlines()]
    client = redis.Redis(port=redis_server.port)
    while client.rpoplpush("parse", "celery") is not None:
        pass
    assert _lengths(redis_server) == {"celery": 3, "parse": 0, "embed": 0}
    worker = RoleWorker(env, tmp_path, tmp_path / "w.log", "w", "parse,embed").start(ping=False)
    try:
        wait_until(lambda: _all_indexed(env, sources), 240, "every document indexed")
    finally:
        worker.stop()
    records, per_doc, _ = _snapshot(env)
    assert all(records[s].status == "indexed" and per_doc[s] == records[s].chunks > 0 for s in sources)
    assert _lengths(redis_server) == {"celery": 0, "parse": 0, "embed": 0}


def _all_indexed(env, sources: list[str]) -> bool:
    """Polled while workers write: a store the worker holds at that moment (its registry
    collection opened between the test's two opens, StoreBusyError) is "not yet", not a failure."""
    try:
        records = _snapshot(env)[0]
    except StoreBusyError:
        return False
    return all(s in records and records[s].status == "indexed" for s in sources)
