"""Real Korean documents written by others (../shared/samples) ingest without error."""

from __future__ import annotations

import pytest

from ingest.parsing import SUPPORTED_SUFFIXES
from ingest.pipeline import Pipeline
from korag.storage.store import QdrantStore, open_client
from tests.conftest import SHARED, make_settings, shared_path

SAMPLES = sorted(p for p in (SHARED / "samples").glob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES) if (SHARED / "samples").is_dir() else []


def test_samples_folder_present_or_skipped():
    shared_path("samples")
    assert SAMPLES, "no supported files in ../shared/samples"


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_ingests(path, tmp_path, minilm):
    settings = make_settings(tmp_path)
    store = QdrantStore(open_client(settings), settings.collection)
    result = Pipeline.build(minilm, store, settings).ingest_path(path, source=path.name)
    assert result.status == "indexed", result.error
    stored = list(store.iter_chunks({"doc_id": result.doc_id}))
    assert len(stored) == result.chunks
    assert all(c.metadata["token_count"] <= minilm.info.max_input_tokens for c in stored)
