"""Webhook events from the queued path: a real redis-server, a real `korag worker` process and a
real local HTTP receiver. The worker reports `document.indexed` / `document.failed` for what it
finished, signed like the service's events (the HTTP service in distributed mode sends only
`document.deleted` itself: ingest outcomes come from the workers)."""

from __future__ import annotations

import json

import pytest

from korag.events import verify_signature
from tests import documents as docs
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
