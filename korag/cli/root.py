"""The CLI's composition root: what a `korag` command uses is built here, from the one
:class:`~korag.settings.Settings` that :func:`korag.cli.main.main` reads. The commands say what
they do with it; they build nothing themselves.

The Celery app (celery, kombu) loads lazily, only for a command that uses a broker, so that
``korag --help`` and the commands without one stay quick.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from ingest.batch import BatchIngest
from ingest.embedder import Embedder
from ingest.pipeline import Pipeline
from korag.cli.common import STORE_WAIT_S
from korag.services.events import Webhooks
from korag.services.lifecycle import reap_dead_owners
from korag.settings import Settings
from korag.storage.blobs import BlobStore
from korag.storage.registry import DocumentRegistry
from korag.storage.store import QdrantStore, store_session
from retrieval.search import Retriever

if TYPE_CHECKING:
    from celery import Celery

    from korag.services.queue_client import CeleryQueue


def open_store(settings: Settings, stack: ExitStack) -> QdrantStore:
    """The store for the rest of the command (closed with ``stack``), waiting up to
    ``STORE_WAIT_S`` for a worker to release the embedded directory."""
    return stack.enter_context(store_session(settings, wait_s=STORE_WAIT_S))


def open_registry(settings: Settings, stack: ExitStack) -> tuple[QdrantStore, DocumentRegistry]:
    """The store and its document registry; an in-process ingest that was killed shows as failed at once."""
    store = open_store(settings, stack)
    registry = DocumentRegistry(store.client, store.collection)
    reap_dead_owners(registry)
    return store, registry


def blob_store(settings: Settings) -> BlobStore:
    return BlobStore(settings.blobs_path)


@contextmanager
def webhooks(settings: Settings, command: str) -> Iterator[Webhooks | None]:
    """The webhook sender of a one-shot command (None without KORAG_WEBHOOK_URL). On the way out
    it waits up to KORAG_WEBHOOK_TIMEOUT_S for the command's events to be delivered, and says so
    when some are not: they stay in the outbox for the next `korag serve` or worker to send."""
    hooks = Webhooks.from_settings(settings)
    try:
        yield hooks
        if hooks is not None and not hooks.drain(settings.webhook_timeout_s):
            print(f"{command}: webhook events are not delivered yet; they stay in the outbox ({hooks.outbox}) "
                  "and the next korag serve or worker sends them", file=sys.stderr)
    finally:
        if hooks is not None:
            hooks.close()


def load_model(settings: Settings) -> Embedder:
    return Embedder.load(settings)


def open_retriever(settings: Settings, stack: ExitStack) -> Retriever:
    """The store first: held by a `korag serve`, of the old local mode or damaged is said in
    seconds, not after the model's load (a minute for a large model)."""
    store = open_store(settings, stack)
    store.check()
    return Retriever.from_settings(load_model(settings), store, settings)


def open_pipeline(settings: Settings, stack: ExitStack) -> Pipeline:
    """The ingest pipeline over the store (checked before the model loads, as in :func:`open_retriever`)."""
    store = open_store(settings, stack)
    store.check()
    pipeline = Pipeline.build(load_model(settings), store, settings)
    reap_dead_owners(pipeline.registry)
    return pipeline


def batch_ingest(pipeline: Pipeline, settings: Settings) -> BatchIngest:
    """Parsing in a pool of parser processes. This process analyses no text itself: its Kiwi goes
    once the parsers are forked (-0.47 GiB)."""
    return BatchIngest.from_settings(pipeline, settings, keep_kiwi=False)


def queue_app(settings: Settings, check: bool = True) -> Celery:
    """The Celery app of KORAG_BROKER_URL; ``check``: the broker must answer now (before anything
    is recorded as queued)."""
    from korag.services.queue_client import check_broker  # lazy: celery, only with a broker
    from workers.app import create_app  # lazy: celery, only with a broker

    app = create_app(settings)
    if check:
        check_broker(app)
    return app


def service_queue(settings: Settings) -> CeleryQueue:
    """The service's queue (distributed mode): the Celery app of KORAG_BROKER_URL, its broker answering now."""
    from korag.services.queue_client import CeleryQueue  # lazy: celery, only with a broker

    return CeleryQueue(queue_app(settings))
