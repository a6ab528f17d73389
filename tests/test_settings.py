from __future__ import annotations

import pytest

from korag.settings import Settings


def test_environment_prefix(monkeypatch):
    monkeypatch.setenv("KORAG_COLLECTION", "사내문서")
    monkeypatch.setenv("KORAG_QDRANT_URL", "")
    monkeypatch.setenv("KORAG_CHUNK_OVERLAP_TOKENS", "0")
    settings = Settings()
    assert settings.collection == "사내문서"
    assert settings.qdrant_url is None
    assert settings.chunk_overlap_tokens == 0  # 0 stays 0
    assert settings.embedding_model == "nlpai-lab/KoE5"
    assert (settings.query_prefix, settings.passage_prefix) == ("query: ", "passage: ")


def test_time_limit_must_stay_below_visibility_timeout():
    with pytest.raises(ValueError, match="KORAG_VISIBILITY_TIMEOUT"):
        Settings(task_time_limit=4000, task_soft_time_limit=3000, visibility_timeout=3600)


def test_celery_app_is_configured_for_long_tasks():
    from workers.app import create_app

    app = create_app(Settings(broker_url="redis://127.0.0.1:1/0"))
    conf = app.conf
    assert conf.task_acks_late and conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]
