"""One document, three ways in: `korag ingest` in this process (the CLI's batch path), the
embedded service's ingest queue (`korag serve` without a broker) and Celery (a real redis-server,
a real `korag worker` process, `korag ingest --wait` as the client). Each records the same
states in the same order (``embedding`` included: the CLI and the embedded service once skipped
it) and stores the same chunks.

The states are read from what each path logs as it records them (``<source>: <state>``, logger
``korag.ingest``): the worker's log file, and this process's log for the other two."""

from __future__ import annotations

import json
import logging
import os
import re

import pytest

from bench import documents as docs
from korag.cli.main import main
from korag.services.service import Service, Upload
from korag.settings import Settings
from korag.storage.blobs import BlobStore
from korag.storage.store import store_session
from tests.conftest import Worker, korag_cli, korag_env, make_settings, offline_model_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOURCE = "in/규정.txt"
TEXT = "사내 규정 문서입니다. 고유 표식 THREE-PATHS-7.\n\n" + docs.long_korean_text(3)
STATES = ("queued", "parsing", "embedding", "indexed", "failed")


def _states(log_text: str) -> list[str]:
    found = re.findall(rf"{re.escape(SOURCE)}: (\w+)\s*$", log_text, re.M)
    return [state for state in found if state in STATES]


def _stored(settings: Settings) -> list[str]:
    with store_session(settings) as store:
        chunks = sorted(store.iter_chunks({"source": SOURCE}), key=lambda c: c.metadata["chunk_index"])
    return [chunk.text for chunk in chunks]


def _in_log(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "korag.ingest")


def test_the_same_document_records_the_same_states_and_chunks_on_every_path(tmp_path, monkeypatch, caplog,
                                                                              redis_server, capsys):
    caplog.set_level(logging.INFO, logger="korag.ingest")
    (tmp_path / "in").mkdir()
    docs.make_text(tmp_path / SOURCE, text=TEXT)
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("KORAG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KORAG_EMBEDDING_MODEL", offline_model_path())

    # 1. the CLI, in this process
    cli = make_settings(tmp_path / "cli", qdrant_url=None)
    monkeypatch.setenv("KORAG_DATA_DIR", str(cli.data_dir))
    assert main(["ingest", SOURCE, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["source"], r["status"]) for r in lines] == [(SOURCE, "indexed")]
    states = {"cli": _states(_in_log(caplog))}
    caplog.clear()

    # 2. the embedded service's ingest queue
    embedded = make_settings(tmp_path / "service", qdrant_url=None)
    service = Service.open(embedded)
    try:
        data = (tmp_path / SOURCE).read_bytes()
        blob = service.blobs.put(data)
        (item,) = service.submit([Upload(SOURCE, "규정.txt", blob, len(data))], None, {})
        assert item.future is not None and item.future.result(timeout=300).status == "indexed"
    finally:
        service.close()
    states["service"] = _states(_in_log(caplog))

    # 3. Celery: a worker process, the CLI as the client
    queued = make_settings(tmp_path / "celery", qdrant_url=None)
    env = korag_env({"KORAG_EMBEDDING_MODEL": offline_model_path(), "KORAG_DATA_DIR": str(queued.data_dir),
                     "KORAG_BROKER_URL": redis_server.url})
    worker = Worker(env, tmp_path, tmp_path / "worker.log").start()
    try:
        done = korag_cli(["ingest", SOURCE, "--wait", "--json", "--timeout", "600"], env, tmp_path)
        assert json.loads(done.stdout.splitlines()[-1])["status"] == "indexed", done.stderr
    finally:
        worker.stop()
    states["celery"] = _states((tmp_path / "worker.log").read_text(errors="replace"))

    assert states == {path: ["parsing", "embedding", "indexed"] for path in ("cli", "service", "celery")}
    chunks = [_stored(cli), _stored(embedded), _stored(queued)]
    assert chunks[0] and chunks[0] == chunks[1] == chunks[2]
    assert BlobStore(embedded.blobs_path).has(blob)
