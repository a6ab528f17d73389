"""`korag ingest --wait` reports what the registry says (issue 24, items 2 and 5), on real parts:
a real redis-server killed with SIGKILL and replaced by an empty one on the same port, a real
`korag worker` process, the offline MiniLM model, the embedded Qdrant on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import ExitStack

import pytest

from bench import documents as docs
from korag.cli import root
from korag.services.events import outcome_event
from korag.services.queue_client import enqueue
from korag.settings import Settings
from korag.storage.registry import UNFINISHED, DocumentRegistry
from korag.storage.store import store_session
from korag.types import DocumentInfo, IngestResult
from tests.conftest import RedisServer, Worker, korag_cli, queue_env, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
N_DOCS = 6
WAIT_S = 150  # the bound: every document indexed within this, broker loss included


@pytest.fixture
def env(tmp_path, redis_server):
    return queue_env(tmp_path, redis_server.url,
        KORAG_WORKER_BATCH_DOCUMENTS="1",  # one document at a time: the rest wait in Redis
    )


def _settings(env) -> Settings:
    return Settings(**{k[len("KORAG_"):].lower(): v for k, v in env.items() if k.startswith("KORAG_")})


def _records(env) -> dict:
    with store_session(_settings(env), wait_s=60) as store:
        return {r.doc_id: r for r in DocumentRegistry(store.client, store.collection).all()}




def test_wait_reports_the_registry_after_the_broker_restarts_empty(tmp_path, env, redis_server):
    """Redis is killed while the first document is being ingested and replaced by an empty one:
    the queued documents' messages are gone. `--wait` notices (the broker's run_id changed, no
    message names them), sends them again through the sweeper's resend, and reports for every
    document exactly the registry's outcome: all indexed, exit 0."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(N_DOCS):
        docs.make_text(folder / f"문서{i:02d}.txt", text=f"문서 번호 {i}.\n\n" + docs.long_korean_text(8))
    worker = Worker(env, tmp_path, tmp_path / "worker.log").start()
    waiting = subprocess.Popen([sys.executable, "-m", "korag.cli", "ingest", "in", "--wait", "--json",
                                "--timeout", str(WAIT_S)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: worker.started("in/문서00.txt"), 120, "the first document to start")
        redis_server.kill()
        empty = RedisServer(tmp_path / "redis-empty", redis_server.port, appendonly=False).start()
        try:
            out, err = waiting.communicate(timeout=WAIT_S + 60)
        finally:
            empty.stop()
    finally:
        waiting.kill()
        worker.stop()
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == N_DOCS, (out, err)
    records = _records(env)
    for line in lines:
        record = records[line["doc_id"]]
        if line["status"] == "queued":  # unfinished: the registry says so too, and the line says why
            assert record.status in UNFINISHED, (line, record.status)
        else:
            assert (line["status"], line["chunks"]) == (str(record.status), record.chunks), (line, record.status)
            assert line["error"] == record.error
    assert {line["status"] for line in lines} == {"indexed"}, out
    assert waiting.returncode == 0, err


def test_a_superseded_submission_s_task_result_says_superseded(tmp_path, env):
    """The same document is sent twice before any worker runs: the first task finds a newer
    request owning the document. Its Celery result says ``superseded`` (not failed), and it
    reports no webhook event."""
    settings = _settings(env)
    path = docs.make_text(tmp_path / "규정.txt", text="첫 번째 판.\n\n" + docs.long_korean_text(3))
    app = root.queue_app(settings)
    blobs = root.blob_store(settings)
    with ExitStack() as stack:
        _, registry = root.open_registry(settings, stack)
        first = enqueue(app, blobs, registry, path, "규정.txt", settings.max_file_bytes, DocumentInfo())
        docs.make_text(path, text="두 번째 판.\n\n" + docs.long_korean_text(4))
        second = enqueue(app, blobs, registry, path, "규정.txt", settings.max_file_bytes, DocumentInfo())
    worker = Worker(env, tmp_path, tmp_path / "worker.log").start(timeout=300)  # busy at once: pings late
    try:
        older = first.task.get(timeout=120, propagate=True)
        newer = second.task.get(timeout=120, propagate=True)
    finally:
        worker.stop()
    assert older["status"] == "superseded" and "superseded" in older["error"], older
    assert newer["status"] == "indexed", newer
    assert outcome_event(IngestResult.from_json(older), None) is None  # no document.failed webhook
    shown = korag_cli(["status", first.doc_id, "--json"], env, tmp_path)
    assert json.loads(shown.stdout)["status"] == "indexed"
