"""The queue's task messages (korag.messages): the wire format stays the tasks' keyword arguments,
messages an older korag left in Redis are still read, and every sender says whose document it is:
the sweeper's re-sent embed messages once dropped ``tenant``, so their webhooks said ``"tenant": null``."""

from __future__ import annotations

import json
import time

import pytest

from korag.messages import EMBED_TASK, INGEST_TASK, EmbedMessage, IngestMessage
from korag.services.lifecycle import queue_request
from korag.storage.registry import DocumentRegistry
from korag.storage.store import QdrantStore, open_client
from tests.conftest import make_settings
from workers.sweeper import sweep

INGEST_KWARGS = {"blob": "b" * 64, "filename": "규정.txt", "source": "in/규정.txt", "doc_id": "d1", "tenant": "acme",
                 "meta": {"dept": "hr"}, "request": "a" * 32, "seq": 7}
EMBED_KWARGS = {"prepared": "a" * 32, "doc_id": "d1", "source": "in/규정.txt", "chunks": 3, "seq": 7, "tenant": "acme"}


def test_the_wire_format_is_the_tasks_keyword_arguments_unchanged():
    assert IngestMessage.from_kwargs(INGEST_KWARGS).to_kwargs() == INGEST_KWARGS
    assert EmbedMessage.from_kwargs(EMBED_KWARGS).to_kwargs() == EMBED_KWARGS


def test_messages_an_older_korag_left_in_redis_are_read():
    old = IngestMessage.from_kwargs({"blob": "b" * 64, "filename": "a.txt", "source": "a.txt", "doc_id": "d"})
    assert (old.tenant, old.meta, old.request, old.seq) == (None, (), None, None)
    old_embed = EmbedMessage.from_kwargs({"prepared": "a" * 32, "doc_id": "d", "source": "a.txt", "chunks": 2, "seq": 1})
    assert (old_embed.tenant, old_embed.chunks) == (None, 2)
    with pytest.raises(ValueError, match="'blob'"):
        IngestMessage.from_kwargs({"filename": "a.txt", "source": "a.txt", "doc_id": "d"})


def test_a_sender_cannot_leave_out_the_tenant():
    with pytest.raises(TypeError, match="tenant"):
        EmbedMessage(prepared="a" * 32, doc_id="d", source="a.txt", chunks=1, seq=1)  # type: ignore[call-arg]


class SentTasks:
    """A Celery app's ``send_task`` as the sweeper calls it: what would go to the broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def send_task(self, name: str, kwargs: dict, countdown: float | None = None, task_id: str | None = None):
        self.sent.append((name, kwargs))


@pytest.mark.parametrize("parsed", [True, False], ids=["embed", "ingest"])
def test_a_swept_document_is_sent_again_with_its_tenant(tmp_path, parsed):
    settings = make_settings(tmp_path)
    store = QdrantStore(open_client(settings), settings.collection)
    try:
        registry = DocumentRegistry(store.client, store.collection)
        registry.ensure()
        request, _ = queue_request(registry, "d1", "in/규정.txt", "규정.txt", "b" * 64, "acme", {"dept": "hr"})
        if parsed:  # a parse worker left it for the embed workers
            prepared = settings.blobs_path / "prepared"
            prepared.mkdir(parents=True)
            (prepared / f"{request}.json").write_text(json.dumps({"chunks": [{}, {}]}), encoding="utf-8")
        app = SentTasks()
        swept = sweep(registry, app, settings, now=time.time() + settings.sweep_age_s + 60)
    finally:
        store.client.close()
    assert [r.doc_id for r in swept] == ["d1"]
    ((name, kwargs),) = app.sent
    assert name == (EMBED_TASK if parsed else INGEST_TASK)
    assert kwargs["tenant"] == "acme" and kwargs["doc_id"] == "d1"
