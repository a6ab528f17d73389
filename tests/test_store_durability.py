"""Durability of the embedded store (Qdrant Edge): a real process ingesting with the real model
is SIGKILLed in the middle of a large multi-batch upsert; the store must open again, every
document the registry calls `indexed` must have all of its chunks, and running the ingest again
must finish the rest with nothing left over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import documents as docs
from korag.storage.edge_client import EdgeClient
from korag.storage.registry import DocumentRegistry
from korag.storage.store import QdrantStore
from tests.conftest import make_settings

pytestmark = pytest.mark.slow

SMALL_DOCS = 6
BIG = "큰문서.txt"
KILL_AFTER_BATCHES = 4  # of the big document's upserts (16 points each)
SETTINGS = dict(qdrant_url=None, chunk_max_tokens=48, chunk_overlap_tokens=0, upsert_batch_size=16)

# Ingests every file of a folder in order, in-process, over an EdgeClient; the big document's
# upsert stops after a few batches (its points half written), says so, and waits to be killed
# (argv[3] = 0: it never stops).
CHILD = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from ingest.embedder import Embedder
    from ingest.pipeline import Pipeline
    from korag.storage.edge_client import EdgeClient
    from korag.settings import Settings
    from korag.storage.store import QdrantStore

    settings = Settings()
    client = EdgeClient(settings.qdrant_path)
    calls = []

    def pausing(method):
        def call(collection_name, *args, **kwargs):
            result = method(collection_name, *args, **kwargs)
            if collection_name == settings.collection and current[0] == sys.argv[2]:
                calls.append(1)
                if len(calls) == int(sys.argv[3]):
                    print("MID-UPSERT", flush=True)
                    threading.Event().wait()
            return result
        return call

    for name in ("upsert", "upsert_plain"):  # whichever QdrantStore.upsert goes through
        if hasattr(client, name):
            setattr(client, name, pausing(getattr(client, name)))
    current = [None]
    pipeline = Pipeline.build(Embedder.load(settings), QdrantStore(client, settings.collection, settings.upsert_batch_size), settings)
    for path in sorted(Path(sys.argv[1]).iterdir()):
        current[0] = path.name
        print(path.name, pipeline.ingest_path(path, source=path.name).status, flush=True)
""")


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(SMALL_DOCS):  # sorted before the big one: they are indexed before the kill
        docs.make_text(folder / f"문서{i:02d}.txt", text=f"문서 번호 {i}.\n\n" + docs.long_korean_text(3))
    docs.make_text(folder / BIG, text="큰 문서.\n\n" + docs.long_korean_text(60))
    return folder


def _complete(store: QdrantStore, registry: DocumentRegistry) -> dict[str, int]:
    """{source: chunks} of the documents the registry calls indexed, each checked for all its chunks."""
    indexed = {}
    for record in registry.all():
        if record.status != "indexed":
            continue
        stored = store.count_version(record.doc_id, record.content_hash, record.indexed_seq)
        assert stored == record.chunks > 0, f"{record.source}: {stored} of {record.chunks} chunks"
        indexed[record.source] = record.chunks
    return indexed


def test_kill_9_mid_upsert_then_reopen_and_finish(tmp_path):
    settings = make_settings(tmp_path, **SETTINGS)
    folder = _folder(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KORAG_EMBEDDING_MODEL": settings.embedding_model,
           "KORAG_DATA_DIR": str(settings.data_dir), "KORAG_EMBEDDING_DEVICE": "cpu",
           **{f"KORAG_{k.upper()}": str(v) for k, v in SETTINGS.items() if v is not None}}
    env.pop("KORAG_QDRANT_URL", None)
    command = [sys.executable, "-c", CHILD, str(folder), BIG]
    cwd = Path(__file__).resolve().parents[1]
    child = subprocess.Popen([*command, str(KILL_AFTER_BATCHES)], stdout=subprocess.PIPE, text=True, env=env, cwd=cwd)
    lines = []
    for line in child.stdout:
        lines.append(line.strip())
        if line.strip() == "MID-UPSERT":
            break
    assert lines[-1:] == ["MID-UPSERT"], f"the child ended before the big upsert: {lines}"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert lines[:-1] == [f"문서{i:02d}.txt indexed" for i in range(SMALL_DOCS)]

    client = EdgeClient(settings.qdrant_path)  # the store opens after the kill
    try:
        store = QdrantStore(client, settings.collection, settings.upsert_batch_size)
        registry = DocumentRegistry(client, settings.collection)
        indexed = _complete(store, registry)
        assert set(indexed) == {f"문서{i:02d}.txt" for i in range(SMALL_DOCS)}
        partial = store.count({"source": BIG})
        assert partial >= KILL_AFTER_BATCHES * settings.upsert_batch_size  # the kill hit mid-document
    finally:
        client.close()

    rerun = subprocess.run([*command, "0"], stdout=subprocess.PIPE, text=True, env=env, cwd=cwd, check=True)
    again = dict(line.split() for line in rerun.stdout.splitlines())
    assert again == {**{name: "unchanged" for name in indexed}, BIG: "indexed"}
    client = EdgeClient(settings.qdrant_path)
    try:
        store = QdrantStore(client, settings.collection)
        registry = DocumentRegistry(client, settings.collection)
        indexed = _complete(store, registry)
        assert len(indexed) == SMALL_DOCS + 1 and indexed[BIG] > partial
        assert store.count() == sum(indexed.values())  # the killed run's partial chunks are gone
    finally:
        client.close()
