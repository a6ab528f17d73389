"""Webhook events from the queued path: a real redis-server, a real `korag worker` process and a
real local HTTP receiver. The worker reports `document.indexed` / `document.failed` for what it
finished, signed like the service's events (the HTTP service in distributed mode sends only
`document.deleted` itself: ingest outcomes come from the workers)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from bench import documents as docs
from korag.services.events import verify_signature
from tests.conftest import Worker, korag_cli, korag_env, offline_model_path
from tests.test_events import SECRET, Receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_worker_sends_signed_events_for_the_documents_it_finished(tmp_path, redis_server):
    receiver = Receiver()
    env = korag_env({
        "KORAG_EMBEDDING_MODEL": offline_model_path(),
        "KORAG_DATA_DIR": str(tmp_path / "data"),
        "KORAG_BROKER_URL": redis_server.url,
        "KORAG_WEBHOOK_URL": receiver.url,
        "KORAG_WEBHOOK_SECRET": SECRET,
    })
    worker = Worker(env, tmp_path, tmp_path / "worker.log").start()
    try:
        (tmp_path / "in").mkdir()
        docs.make_text(tmp_path / "in" / "good.txt", text=docs.long_korean_text(2))
        (tmp_path / "in" / "broken.docx").write_bytes(b"PK\x03\x04 truncated")  # fails in the worker
        done = korag_cli(["ingest", "in", "--wait", "--json", "--timeout", "600"], env, tmp_path)
        lines = {json.loads(line)["source"]: json.loads(line) for line in done.stdout.splitlines()}
        assert lines["in/good.txt"]["status"] == "indexed", done.stderr
        assert lines["in/broken.docx"]["status"] == "failed"

        deliveries = receiver.wait_for(2, deadline_s=60)
        events = {}
        for headers, body in deliveries:
            assert verify_signature(SECRET, headers, body), headers
            event = json.loads(body)
            events[event["data"]["source"]] = event
        assert events["in/good.txt"]["type"] == "document.indexed"
        assert events["in/good.txt"]["data"]["doc_id"] == lines["in/good.txt"]["doc_id"]
        assert events["in/good.txt"]["data"]["chunks"] == lines["in/good.txt"]["chunks"] > 0
        assert events["in/broken.docx"]["type"] == "document.failed"
        assert events["in/broken.docx"]["data"]["error"] == lines["in/broken.docx"]["error"]
    finally:
        worker.stop()
        receiver.close()


# -- issue 18 item 12: Celery's events show every document of a batch --------------------------------
class EventLog:
    """Celery events as a monitor (Flower, `celery events`) receives them: an ``app.events.Receiver``
    on the broker, in a thread."""

    def __init__(self, broker_url: str) -> None:
        from celery import Celery

        self.app = Celery(broker=broker_url)
        self.events: list[dict] = []
        self._receiver = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self.app.connection_for_read() as connection:
            self._receiver = self.app.events.Receiver(connection, handlers={"*": self.events.append})
            self._receiver.capture(limit=None, timeout=None, wakeup=True)

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(list(self.events)):
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; events: {[e.get('type') for e in self.events]}")

    def lead(self) -> str | None:
        return next((e["uuid"] for e in list(self.events) if e["type"] == "task-received"), None)

    def succeeded(self) -> list[str]:
        return [e["uuid"] for e in list(self.events) if e["type"] == "task-succeeded"]

    def of(self, task_id: str) -> list[str]:
        return [e["type"] for e in list(self.events) if e.get("uuid") == task_id]

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(timeout=10)


def test_celery_events_show_a_task_for_every_document_of_a_batch(tmp_path, redis_server):
    """A worker that takes four queued documents in one batch: a monitor receives task-received,
    task-started and task-succeeded for each document's own task id, not only the first's. The
    worker's events are switched on as Flower does (``enable_events``), and its parse queue is held
    (``cancel_consumer``) while the documents are queued, so that they wait for it together."""
    from tests.test_queue_batching import RoleWorker

    env = korag_env({
        "KORAG_EMBEDDING_MODEL": offline_model_path(),
        "KORAG_DATA_DIR": str(tmp_path / "data"),
        "KORAG_BROKER_URL": redis_server.url,
    })
    worker = RoleWorker(env, tmp_path, tmp_path / "worker.log", "ev", "parse,embed").start()
    monitor = EventLog(redis_server.url)
    try:
        control = monitor.app.control
        destination = [name for reply in control.ping(timeout=2) for name in reply]
        assert control.enable_events(destination=destination, reply=True, timeout=5)
        monitor.wait_for(lambda events: any(e["type"] == "worker-heartbeat" for e in events), 30, "a heartbeat")
        assert control.cancel_consumer("parse", destination=destination, reply=True, timeout=5)
        (tmp_path / "in").mkdir()
        for i in range(4):
            docs.make_text(tmp_path / "in" / f"문서{i}.txt", text=f"문서 {i}.\n\n" + docs.long_korean_text(2))
        done = korag_cli(["ingest", "in", "--json"], env, tmp_path)
        assert done.returncode == 0, done.stderr
        sources = [json.loads(line)["source"] for line in done.stdout.splitlines()]
        assert len(sources) == 4
        assert control.add_consumer("parse", destination=destination, reply=True, timeout=5)
        # The lead (the first received) succeeds last: its batch settles the others first, and a
        # solo worker sends every event on one connection, so they arrive in order.
        monitor.wait_for(lambda events: monitor.lead() is not None and monitor.lead() in monitor.succeeded(), 300,
                         "the batch's first document to succeed")
    finally:
        monitor.close()
        worker.stop()
    assert "ingesting 4 document(s)" in worker.text()  # one batch took all four
    received = {e["uuid"]: e for e in monitor.events if e["type"] == "task-received"}
    task_ids = {source: [t for t, e in received.items() if repr(source) in e["kwargs"]] for source in sources}
    assert all(len(ids) == 1 for ids in task_ids.values()), task_ids  # each document its own task
    assert set(monitor.succeeded()) == {ids[0] for ids in task_ids.values()}
    for (task_id,) in task_ids.values():
        seen = monitor.of(task_id)
        assert seen.count("task-received") == seen.count("task-started") == seen.count("task-succeeded") == 1, seen
        assert seen.index("task-received") < seen.index("task-started") < seen.index("task-succeeded"), seen
        succeeded = next(e for e in monitor.events if e.get("uuid") == task_id and e["type"] == "task-succeeded")
        assert "'status': 'indexed'" in succeeded["result"]
