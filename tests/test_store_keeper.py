"""A worker opens a Qdrant server's client once per process and keeps it; the embedded engine's
directory is opened per task and released, so the CLI and other workers can use it in between.

The server path runs on qdrant-client's in-memory engine (``KORAG_QDRANT_URL=:memory:``): no
Qdrant server can run here, and ":memory:" goes through the same keep-it-open branch."""

from __future__ import annotations

from korag.settings import Settings
from korag.storage.store import QdrantStore, StoreKeeper, open_client

MODEL = "test-model"


def test_a_server_client_is_opened_once_and_kept_across_tasks(tmp_path):
    keeper = StoreKeeper(Settings(data_dir=tmp_path, qdrant_url=":memory:"))
    with keeper.session() as first:
        first.ensure_collection(MODEL, 4)
    with keeper.session() as second:
        assert second is first
        assert second.exists(), "a kept client still sees what the previous task wrote"
    assert keeper.opened == 1
    keeper.close()


def test_the_embedded_directory_is_released_between_tasks(tmp_path):
    settings = Settings(data_dir=tmp_path)
    keeper = StoreKeeper(settings)
    with keeper.session() as store:
        store.ensure_collection(MODEL, 4)
    other = open_client(settings)  # what the CLI does between two tasks: the lock is free
    try:
        assert QdrantStore(other, settings.collection).exists()
    finally:
        other.close()
    with keeper.session() as store:
        assert store.exists()
    assert keeper.opened == 2
