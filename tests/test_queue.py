"""The queued path on real parts: a redis-server, a `korag worker` process, the CLI as a client."""

from __future__ import annotations

import json
import time

import pytest

from bench import documents as docs
from tests.conftest import Worker, korag_cli, korag_env, offline_model_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def env(tmp_path, redis_server):
    return korag_env(
        {
            "KORAG_EMBEDDING_MODEL": offline_model_path(),
            "KORAG_DATA_DIR": str(tmp_path / "data"),
            "KORAG_BROKER_URL": redis_server.url,
        }
    )


@pytest.fixture
def worker(tmp_path, env):
    w = Worker(env, tmp_path, tmp_path / "worker.log").start()
    yield w
    w.stop()


def test_ingest_through_the_queue_then_search(tmp_path, env, worker):
    made = docs.all_formats(tmp_path / "in")
    (tmp_path / "in" / "broken.docx").write_bytes(b"PK\x03\x04 truncated")
    done = korag_cli(["ingest", "in", "--wait", "--json"], env, tmp_path)
    lines = {json.loads(l)["source"]: json.loads(l) for l in done.stdout.splitlines()}
    assert done.returncode == 1, done.stderr
    assert {s for s, l in lines.items() if l["status"] == "indexed"} == {f"in/{p.name}" for p in made.values()}
    assert lines["in/broken.docx"]["status"] == "failed" and "DOCX" in lines["in/broken.docx"]["error"]

    # The worker holds the embedded store only while a task runs, so a client can search now.
    found = korag_cli(["search", "ZEBRA-QUARTZ-7781", "-k", "1", "--json"], env, tmp_path)
    assert found.returncode == 0, found.stderr
    assert docs.SECRET_SENTENCE in json.loads(found.stdout)["results"][0]["text"]


def test_documents_travel_as_blobs_not_paths(tmp_path, env, worker, monkeypatch):
    """The worker never sees the client's path: the client's copy is deleted before the task runs."""
    from korag.services.queue_client import enqueue
    from korag.settings import Settings
    from korag.storage.blobs import BlobStore
    from workers.app import create_app

    for key, value in env.items():
        if key.startswith("KORAG_"):
            monkeypatch.setenv(key, value)
    settings = Settings()
    path = docs.make_docx(tmp_path / "비밀 문서.docx")
    sent = enqueue(create_app(settings), BlobStore(settings.blobs_path), None, path, "uploads/비밀 문서.docx",
                   settings.max_file_bytes)
    path.unlink()
    result = sent.wait(timeout=120)
    assert result.status == "indexed" and result.source == "uploads/비밀 문서.docx"
    stored = [p.name for p in settings.blobs_path.rglob("*") if p.is_file() and p.name != ".lock"]
    assert len(stored) == 1 and len(stored[0]) == 64  # named by content hash only (beside the store's lock file)


def test_without_wait_documents_are_reported_queued(tmp_path, env, worker):
    docs.make_markdown(tmp_path / "a.md")
    done = korag_cli(["ingest", "a.md", "--json"], env, tmp_path)
    (line,) = [json.loads(l) for l in done.stdout.splitlines()]
    assert done.returncode == 0 and line["status"] == "queued" and line["chunks"] == 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = korag_cli(["chunks", "--doc-id", line["doc_id"], "--json"], env, tmp_path)
        if listed.stdout.strip():
            break
        time.sleep(1)
    assert listed.stdout.strip(), "the worker never indexed the queued document"


def test_deleting_a_queued_document_outlives_its_message(tmp_path, env):
    """`korag delete` while the document waits in the queue (no worker yet); then a worker starts
    and takes the message: the document stays deleted."""
    docs.make_markdown(tmp_path / "a.md")
    queued = korag_cli(["ingest", "a.md", "--json"], env, tmp_path)
    (line,) = [json.loads(l) for l in queued.stdout.splitlines()]
    assert line["status"] == "queued", queued.stderr
    deleted = korag_cli(["delete", line["doc_id"], "--json"], env, tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    w = Worker(env, tmp_path, tmp_path / "worker.log").start()
    try:
        docs.make_text(tmp_path / "b.txt", text="두 번째 문서입니다. 이 문서는 남습니다.")
        after = korag_cli(["ingest", "b.txt", "--wait", "--json"], env, tmp_path)  # queued behind a.md
        assert json.loads(after.stdout)["status"] == "indexed", after.stderr
    finally:
        w.stop()
    assert "deleted before it was ingested" in (tmp_path / "worker.log").read_text()
    listed = korag_cli(["docs", "--json"], env, tmp_path)
    assert [json.loads(l)["source"] for l in listed.stdout.splitlines()] == ["b.txt"]
    chunks = korag_cli(["chunks", "--doc-id", line["doc_id"], "--json"], env, tmp_path)
    assert chunks.stdout.strip() == ""
    status = korag_cli(["status", line["doc_id"], "--json"], env, tmp_path)
    assert status.returncode != 0 and "no document" in status.stderr
