"""`korag migrate`: a store written by qdrant-client's local mode (korag before Qdrant Edge),
filled by korag's real pipeline and model, copied into the Edge store without embedding again."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qdrant_client import QdrantClient

from bench import documents as docs
from ingest.pipeline import DocumentInfo, Pipeline
from korag.cli import store as cli_store
from korag.storage.edge import LocalModeDataError
from korag.storage.edge_client import EdgeClient
from korag.storage.migrate import backup_path
from korag.storage.store import QdrantStore
from retrieval import Retriever
from tests.conftest import make_settings

TEXTS = {
    "임대차.txt": "주택임대차보호법\n\n임차인의 보증금은 대항력을 갖춘 경우 보호된다. 임대인은 보증금을 반환하여야 한다.",
    "법원.txt": "법원조직법\n\n대법원장은 국회의 동의를 얻어 대통령이 임명한다. 법원은 심판권을 가진다.",
    "근로.txt": "근로기준법\n\n사용자는 1년간 80퍼센트 이상 출근한 근로자에게 15일의 유급휴가를 주어야 한다.",
    "도로.txt": "도로교통법\n\n모든 차의 운전자는 신호기가 표시하는 신호를 따라야 한다. 보행자를 보호하여야 한다.",
}
QUERIES = ["임대차 보증금은 어떻게 보호되나요?", "대법원장을 누가 임명하나요", "유급휴가는 며칠인가요", "신호를 지켜야 하나요"]


def _ingest(pipeline: Pipeline, folder) -> list[str]:
    statuses = []
    for i, (name, text) in enumerate(TEXTS.items()):
        info = DocumentInfo(tenant="acme" if i % 2 else "globex")
        statuses.append(pipeline.ingest_path(docs.make_text(folder / name, text=text), source=name, info=info).status)
    return statuses


def _answers(retriever: Retriever) -> list[list[tuple[str, str]]]:
    out = []
    for query in QUERIES:
        for mode in ("dense", "sparse", "hybrid"):
            out.append([(h.id, h.text) for h in retriever.search(query, k=3, mode=mode)])
        out.append([(h.id, h.text) for h in retriever.search(query, k=3, mode="hybrid", tenant="acme")])
    return out


@pytest.fixture
def old_store(tmp_path, minilm):
    """KORAG_DATA_DIR as korag's local mode left it: documents ingested, answers recorded."""
    settings = make_settings(tmp_path, qdrant_url=None)
    settings.qdrant_path.mkdir(parents=True)
    client = QdrantClient(path=str(settings.qdrant_path))
    store = QdrantStore(client, settings.collection)
    assert _ingest(Pipeline.build(minilm, store, settings), tmp_path) == ["indexed"] * len(TEXTS)
    answers = _answers(Retriever(minilm, store))
    client.close()
    return settings, answers


def test_old_store_is_refused_by_name_and_migrate_keeps_every_answer(old_store, minilm, tmp_path, capsys):
    settings, answers = old_store
    with pytest.raises(LocalModeDataError, match="korag migrate"):
        EdgeClient(settings.qdrant_path)

    assert cli_store.main(["migrate", "--json"], settings) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["migrated"] is True and report["backup"] == str(backup_path(settings.qdrant_path))
    counts = {c["name"]: c["points"] for c in report["collections"]}
    assert counts[f"{settings.collection}-documents"] == len(TEXTS) and counts[settings.collection] >= len(TEXTS)

    client = EdgeClient(settings.qdrant_path)
    try:
        store = QdrantStore(client, settings.collection)
        assert _answers(Retriever(minilm, store)) == answers
        # the registry and every chunk came over: the same files again are recognised, nothing embedded
        assert _ingest(Pipeline.build(minilm, store, settings), tmp_path) == ["unchanged"] * len(TEXTS)
        assert {field for field in client.get_collection(settings.collection).payload_schema} >= {
            "metadata.doc_id", "metadata.source", "metadata.tenant", "metadata.ingest_seq"}
        some = client.scroll(settings.collection, limit=3, with_vectors=True)[0]
    finally:
        client.close()
    backup = QdrantClient(path=report["backup"])  # the old store is kept, intact
    try:
        before = {r.id: r.vector for r in backup.retrieve(settings.collection, [r.id for r in some], with_vectors=True)}
    finally:
        backup.close()
    for record in some:
        assert np.allclose(record.vector["dense"], before[record.id]["dense"], atol=1e-6)
        assert record.vector["sparse"].indices == before[record.id]["sparse"].indices


def test_migrate_twice_or_without_old_data_changes_nothing(old_store, capsys):
    settings, _ = old_store
    assert cli_store.main(["migrate"], settings) == 0
    assert "migrated" in capsys.readouterr().out
    assert cli_store.main(["migrate", "--json"], settings) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["migrated"] is False and "no data of qdrant-client's local mode" in again["reason"]


def test_migrate_refuses_to_overwrite_an_earlier_backup(old_store, capsys):
    settings, _ = old_store
    backup_path(settings.qdrant_path).mkdir()
    assert cli_store.main(["migrate"], settings) == 2
    assert "already exists" in capsys.readouterr().err
    assert (settings.qdrant_path / "meta.json").exists()  # the old store is untouched
