"""Every delete alike (issue 19): `korag delete` and the service's ``DELETE /documents/{id}`` go
through one services-level delete (korag.services.lifecycle.delete_document), so both send the
same signed ``document.deleted`` webhook to a real local receiver; the service counts it in its
``korag_documents_total{outcome="deleted"}`` metric."""

from __future__ import annotations

import json

import pytest

from bench import documents as docs
from ingest.pipeline import DocumentInfo, Pipeline
from korag.services.events import Webhooks, verify_signature
from korag.services.service import Service
from korag.services.telemetry import Metrics
from korag.storage.store import store_session
from tests.conftest import korag_cli, korag_env, make_settings, offline_model_path
from tests.test_events import SECRET, Receiver

TEXT = "삭제 알림 시험 문서입니다.\n\n" + docs.long_korean_text(2)


def _deleted_events(deliveries) -> dict[str, dict]:
    events = {}
    for headers, body in deliveries:
        assert verify_signature(SECRET, headers, body), headers
        event = json.loads(body)
        assert headers["X-Korag-Event"] == event["type"]
        events[event["data"]["doc_id"]] = event
    return events


@pytest.mark.slow
def test_korag_delete_sends_the_webhook_the_services_delete_sends(tmp_path, minilm):
    receiver = Receiver()
    settings = make_settings(tmp_path, qdrant_url=None, webhook_url=receiver.url, webhook_secret=SECRET)
    info = DocumentInfo(tenant="acme")
    try:
        with store_session(settings) as store:
            pipeline = Pipeline.build(minilm, store, settings)
            by_service = pipeline.ingest_bytes(TEXT.encode(), "a.md", "docs/a.md", info=info)
            by_cli = pipeline.ingest_bytes(TEXT.encode(), "b.md", "docs/b.md", info=info)
            assert by_service.status == by_cli.status == "indexed" and by_service.chunks == by_cli.chunks > 0
            metrics, hooks = Metrics(), Webhooks.from_settings(settings)
            try:
                service = Service(settings, minilm, store, metrics=metrics, webhooks=hooks)
                gone = service.delete(by_service.doc_id, tenant=None)
                assert gone is not None and gone.deleted_chunks == by_service.chunks
                receiver.wait_for(1)
            finally:
                hooks.close()
            assert metrics.documents.labels(outcome="deleted")._value.get() == 1

        env = korag_env({"KORAG_EMBEDDING_MODEL": offline_model_path(), "KORAG_DATA_DIR": str(tmp_path / "data"),
                         "KORAG_WEBHOOK_URL": receiver.url, "KORAG_WEBHOOK_SECRET": SECRET})
        done = korag_cli(["delete", by_cli.doc_id, "--json"], env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"doc_id": by_cli.doc_id, "deleted_chunks": by_cli.chunks}
        # delivered before `korag delete` exits (a short-lived process waits for its events)
        events = _deleted_events(receiver.wait_for(2, deadline_s=0.5))
        unknown = korag_cli(["delete", "no-such-document"], env, tmp_path)  # nothing deleted: no event
        assert unknown.returncode == 1 and "no document no-such-document" in unknown.stderr
        assert len(receiver.requests) == 2
    finally:
        receiver.close()

    assert len(events) == 2
    service_event, cli_event = events[by_service.doc_id], events[by_cli.doc_id]
    assert service_event["type"] == cli_event["type"] == "document.deleted"
    assert service_event["data"] == {"doc_id": by_service.doc_id, "source": "docs/a.md", "tenant": "acme",
                                     "deleted_chunks": by_service.chunks}
    assert cli_event["data"] == {"doc_id": by_cli.doc_id, "source": "docs/b.md", "tenant": "acme",
                                 "deleted_chunks": by_cli.chunks}

