"""Issue 18 item 14: `korag ingest` and `korag search` check the store before they load the model.

A store held by a running `korag serve`, written by the old local mode or damaged is reported in
seconds, with the holder named, instead of after the model's load (and a minute's wait for a
holder that never lets go). The model here is a path that does not exist: a command that loaded
the model first would report that instead."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from korag.settings import Settings
from korag.storage.store import lock_holder
from tests.api_server import serve
from tests.conftest import korag_cli, korag_env

NO_MODEL = "/nonexistent/korag-test-model"


def _env(tmp_path) -> dict[str, str]:
    return korag_env({"KORAG_EMBEDDING_MODEL": NO_MODEL, "KORAG_DATA_DIR": str(tmp_path / "data"),
                      "KORAG_EMBEDDING_DEVICE": "cpu"})


def _documents(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("한국어 문서 하나.", encoding="utf-8")


@pytest.mark.slow
def test_ingest_and_search_name_a_serving_holder_without_loading_the_model_or_waiting(tmp_path):
    """A live `korag serve` holds the embedded store: ingest, search and docs end at once with exit 2,
    one line naming the serve process; nothing of the model is reported (it was never loaded) and
    nothing waits for a holder that keeps the store for its lifetime (the wait for a worker is 60 s)."""
    _documents(tmp_path)
    with serve(tmp_path / "server") as server:
        env = {**_env(tmp_path), "KORAG_DATA_DIR": str(server.data_dir)}
        for args in (["ingest", "in"], ["search", "질문"], ["docs"]):
            started = time.monotonic()
            done = korag_cli(args, env, tmp_path)
            elapsed = time.monotonic() - started
            assert done.returncode == 2, (args, done.stdout, done.stderr)
            assert len(done.stderr.splitlines()) == 1, done.stderr
            assert "in use by another process" in done.stderr
            assert f"held by process {server.pid} " in done.stderr and "korag.cli serve" in done.stderr
            assert NO_MODEL not in done.stderr and "model" not in done.stderr.split("held by")[1]
            assert elapsed < 30, f"{args}: {elapsed:.1f} s"  # generous: the wait alone would be 60 s
        assert server.alive()


def test_the_lock_holder_is_named_and_a_passing_holder_is_not_taken_for_a_serve(tmp_path):
    """The kernel's lock table names the process holding the store; a process that is not `korag
    serve` (a worker or another command, which let go) is waited for as before."""
    settings = Settings(data_dir=tmp_path / "data", embedding_model=NO_MODEL)
    script = textwrap.dedent(f"""
        import sys, time
        from korag.storage.edge_client import EdgeClient
        client = EdgeClient({str(settings.qdrant_path)!r})
        print("held", flush=True)
        sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        holder = lock_holder(settings)
        assert holder is not None and holder.pid == child.pid and not holder.serving
        assert f"process {child.pid} (`{sys.executable} -c" in str(holder)
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    assert lock_holder(settings) is None  # released


def test_a_damaged_store_is_reported_before_the_model_loads(tmp_path):
    from korag.storage.edge_client import EdgeClient
    from korag.storage.registry import DocumentRecord, DocumentRegistry

    _documents(tmp_path)
    client = EdgeClient(tmp_path / "data" / "qdrant")
    DocumentRegistry(client, "korag").put(DocumentRecord(doc_id="d", source="d.txt", status="indexed"))
    client.create_collection("korag", vectors_config={})
    client.close()
    spec = tmp_path / "data" / "qdrant" / "collections" / "korag" / "collection.json"
    spec.write_text("{not json", encoding="utf-8")
    for args in (["ingest", "in"], ["search", "질문"]):
        done = korag_cli(args, _env(tmp_path), tmp_path)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
        assert str(spec) in done.stderr and "damaged" in done.stderr and NO_MODEL not in done.stderr


def test_a_store_of_the_old_local_mode_is_reported_before_the_model_loads(tmp_path):
    from qdrant_client import QdrantClient

    _documents(tmp_path)
    client = QdrantClient(path=str(tmp_path / "data" / "qdrant"))
    client.create_collection("korag-documents", vectors_config={})
    client.close()
    done = korag_cli(["ingest", "in"], _env(tmp_path), tmp_path)
    assert done.returncode == 2 and "korag migrate" in done.stderr and NO_MODEL not in done.stderr, done.stderr
