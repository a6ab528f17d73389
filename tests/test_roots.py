"""One composition root per process kind (issue 19): importing an entry point builds nothing, and
a worker's tasks run with the worker's own settings, not with those of the environment."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from starlette.testclient import TestClient

from api.app import create_app as create_http_app
from ingest.pipeline import doc_id_for
from korag.services.lifecycle import queue_request
from korag.storage.blobs import BlobStore
from korag.storage.registry import DocumentRegistry
from korag.storage.store import store_session
from tests.conftest import korag_env, make_settings
from workers.app import create_app


def test_importing_the_entry_points_builds_nothing(tmp_path):
    """No Celery app, no model, no store, no webhook thread at import, even with a broker, a
    webhook and a store configured in the environment."""
    script = textwrap.dedent("""
        import threading

        import celery._state
        import ingest.embedder
        import korag.services.events
        import korag.storage.store

        def refuse(*args, **kwargs):
            raise AssertionError("built at import")

        korag.storage.store.open_client = refuse
        korag.storage.store.store_session = refuse
        ingest.embedder.Embedder.load = refuse
        korag.services.events.Webhooks.from_settings = refuse

        import api.app
        import korag.cli.main
        import korag.cli.serve
        import workers.app
        import workers.root
        import workers.tasks

        apps = list(celery._state._apps)
        assert not apps, apps
        assert threading.active_count() == 1, threading.enumerate()
        print("nothing built")
    """)
    env = korag_env({"KORAG_BROKER_URL": "redis://127.0.0.1:1/0", "KORAG_QDRANT_URL": "http://127.0.0.1:1",
                     "KORAG_WEBHOOK_URL": "http://127.0.0.1:1/hook", "KORAG_DATA_DIR": str(tmp_path / "env")})
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "nothing built"
    assert not (tmp_path / "env").exists()


def test_a_task_runs_with_the_settings_of_the_app_it_runs_under(tmp_path, monkeypatch):
    """Two workers' apps in one process, each with its own data: a document queued in the second
    worker's store and blob store is ingested there, by the second app's task. (The tasks read
    the settings of an app built from the environment, whose blob store does not hold it.)"""
    monkeypatch.setenv("KORAG_DATA_DIR", str(tmp_path / "environment"))
    first, second = (create_app(make_settings(tmp_path / name, qdrant_url=None, broker_url="memory://",
                                              result_backend="cache+memory://")) for name in ("first", "second"))
    second.loader.import_default_modules()  # as a worker does when it starts: its tasks (workers.tasks)
    settings = second.conf.korag_settings
    blob = BlobStore(settings.blobs_path).put("제2 작업자의 문서입니다. 근로기준법 제60조.".encode())
    doc_id = doc_id_for("second.txt", None)
    with store_session(settings) as store:  # the second worker's own (embedded) store
        request, seq = queue_request(DocumentRegistry(store.client, store.collection), doc_id, "second.txt",
                                     "second.txt", blob, None, {})

    result = second.tasks["korag.ingest_document"].apply(kwargs={
        "blob": blob, "filename": "second.txt", "source": "second.txt", "doc_id": doc_id, "tenant": None,
        "meta": {}, "request": request, "seq": seq}).get()

    assert result["status"] == "indexed", result
    with store_session(settings) as store:
        record = DocumentRegistry(store.client, store.collection).get(doc_id)
    assert record is not None and record.status == "indexed" and record.chunks == result["chunks"] >= 1
    assert not (tmp_path / "first").exists() and not (tmp_path / "environment").exists()


def test_the_http_app_opens_the_service_its_root_hands_it_at_start_up_and_closes_it(tmp_path):
    """api.create_app builds no service: given the root's ``open_service``, it calls it as it
    starts (503 "Starting" until then) and closes what it returned at shutdown."""
    events = []

    class Opened:
        metrics = None

        def checks(self) -> dict[str, str]:
            return {"model": "ok (fake)", "store": "ok"}

        def close(self) -> None:
            events.append("closed")

    def open_service() -> Opened:
        events.append("opened")
        return Opened()

    app = create_http_app(make_settings(tmp_path), open_service=open_service, open_allowed=True)
    assert TestClient(app).get("/readyz").status_code == 503  # not started: no service yet
    with TestClient(app) as client:  # start-up and shutdown run
        ready = client.get("/readyz")
        assert events == ["opened"]
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert events == ["opened", "closed"]
