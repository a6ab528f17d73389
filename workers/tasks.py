"""Thin tasks: decode JSON arguments, call a plain function (:mod:`ingest.stages`), return a plain dict.

``korag.ingest_document`` (queue ``parse``) takes up to ``KORAG_WORKER_BATCH_DOCUMENTS`` queued
documents at once (:class:`workers.batching.Batch`), parses them in a warm parser pool and, on a
worker that also consumes ``embed``, embeds their chunks together and records them; a parse-only
worker sends each parsed document on as ``korag.embed_document`` under the same task id, so a
client waiting on the task gets the final outcome. ``korag.embed_document`` (queue ``embed``)
gathers prepared documents up to ``KORAG_WORKER_BATCH_CHUNKS`` chunks for one model call.

Heavy parts (the model) are built once per worker process, on first use, never at import, from
the settings of the app the worker runs (:mod:`workers.root`).
Transient failures (store or broker briefly unavailable) are retried with backoff; a document
that cannot be parsed fails at once; a document that a worker died on ``max_crashes`` times
ends ``failed`` instead of being redelivered forever.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from celery import shared_task
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from celery.signals import worker_ready
from celery.utils.log import get_task_logger
from qdrant_client.http.exceptions import ResponseHandlingException
from redis.exceptions import ConnectionError as RedisConnectionError

from ingest.embedder import Embedder
from ingest.pipeline import DocumentInfo, Pipeline, Request
from ingest.stages import (
    BATCH_BYTES,
    FORWARDED,
    RELEASED,
    Delivery,
    EmbedOrder,
    InFlight,
    PreparedStore,
    Stage,
    blob_size,
    embed_batch,
    interrupted,
    is_suspect,
    prepare_batch,
    settle_delivery,
)
from korag.errors import StoreBusyError
from korag.services.events import outcome_event
from korag.settings import Settings
from korag.storage.blobs import BlobStore
from korag.storage.registry import DocumentRegistry, new_seq
from korag.storage.store import StoreKeeper
from korag.types import IngestResult
from workers.app import EMBED_QUEUE, LEGACY_QUEUE, PARSE_QUEUE, drop_stale_bindings
from workers.batching import Batch, Message, watch_worker
from workers.root import root_of
from workers.sweeper import sweep

__all__ = ["embed_document", "ingest_blob", "ingest_document", "settle_delivery"]

log = get_task_logger(__name__)

TRANSIENT = (StoreBusyError, ConnectionError, TimeoutError, ResponseHandlingException, RedisConnectionError)


def ingest_blob(
    settings: Settings,
    embedder: Embedder,
    blob: str,
    filename: str,
    source: str,
    doc_id: str,
    info: DocumentInfo,
    request: Request | None = None,
    stores: StoreKeeper | None = None,
) -> dict:
    """One queued document from its blob to the end, alone (the batch tasks below do the same for
    many at once). A task stopped by its soft time limit ends the document ``failed`` with the reason."""
    stores = stores if stores is not None else StoreKeeper(settings, wait_s=10)
    with stores.session() as store:
        pipeline = Pipeline.build(embedder, store, settings)
        settled = settle_delivery(pipeline.registry, doc_id, request, settings.max_crashes)
        if settled is not None:
            return settled.to_json()
        if request is not None and not request.seq:  # a message sent without its sequence number
            current = pipeline.registry.get(doc_id)
            request = replace(request, seq=current.seq if current is not None and current.seq else new_seq())
        try:
            data = BlobStore(settings.blobs_path).get(blob)
        except FileNotFoundError as exc:
            return IngestResult(source, doc_id, "failed", error=str(exc)).to_json()
        try:
            result = pipeline.ingest_bytes(data, filename, source, doc_id, info, blob=blob, request=request).to_json()
            store.maintain()  # bounded index building on the embedded engine, when a segment filled up
            return result
        except SoftTimeLimitExceeded:
            reason = f"stopped after {settings.task_soft_time_limit} s (KORAG_TASK_SOFT_TIME_LIMIT)"
            if request is not None:
                pipeline.fail(doc_id, request, reason)
            return IngestResult(source, doc_id, "failed", error=reason).to_json()


RETRY = dict(autoretry_for=TRANSIENT, retry_backoff=True, retry_backoff_max=60, retry_jitter=True, max_retries=8)
EMBED_TASK = "korag.embed_document"


def _consumed(task) -> set[str]:
    """The queues this worker consumes (``-Q``; all of them by default). The task's own app: the
    one the worker runs (``korag worker`` builds its own)."""
    return set(task.app.amqp.queues.consume_from)


def _delivery(kwargs: dict[str, Any], retries: int) -> Delivery:
    """The document a parse message names; ``ValueError`` for metadata an older korag allowed."""
    meta = kwargs.get("meta") or {}
    info = DocumentInfo(tenant=kwargs.get("tenant"), meta=tuple(meta.items()))
    request, seq = kwargs.get("request"), kwargs.get("seq")
    own = Request(request, seq if seq is not None else 0, attempt=f"{request}:{retries}") if request is not None else None
    return Delivery(kwargs["blob"], kwargs["filename"], kwargs["source"], kwargs["doc_id"], info, own)


def _backoff(retries: int) -> float:
    return random.uniform(0, min(60, 2 ** retries))


def _announce(task, batch: Batch, outcomes: dict[int, Any]) -> None:
    """Webhook events (KORAG_WEBHOOK_URL) for the documents this batch finished."""
    hooks = root_of(task.app).webhooks
    if hooks is None:
        return
    for index, message in enumerate(batch.messages):
        outcome = outcomes.get(index)
        event = outcome_event(outcome, message.kwargs.get("tenant")) if isinstance(outcome, IngestResult) else None
        if event is not None:
            hooks.emit(*event)


def _settle(task, batch: Batch, outcomes: dict[int, Any], error: BaseException | None) -> dict:
    """Settle every message of the batch; the lead's result is returned (or raised) to Celery."""
    _announce(task, batch, outcomes)
    for index, message in enumerate(batch.messages[1:], start=1):
        outcome = outcomes.get(index)
        if outcome == FORWARDED:
            batch.handed_on(message)
        elif outcome == RELEASED:
            continue  # unsettled: back to the front of its queue, for a task of its own
        elif isinstance(outcome, IngestResult):
            batch.done(message, outcome.to_json())
        else:  # cut short: a new attempt of its own
            batch.again(message, error if error is not None else RuntimeError("batch ended early"),
                        _backoff(message.retries))
    lead = outcomes.get(0)
    if lead == FORWARDED:
        raise Ignore()  # korag.embed_document reports the outcome under this task id
    if isinstance(lead, IngestResult):
        return lead.to_json()
    if isinstance(error, SoftTimeLimitExceeded) or error is None:
        raise task.retry(countdown=_backoff(task.request.retries or 0))
    raise error


def _cut_short(stage: Stage, docs: dict[int, InFlight], outcomes: dict[int, Any]) -> None:
    """A time limit ended the batch: a document alone fails with the reason; several count one
    interruption each (so each runs alone next time) and are sent again."""
    reason = f"stopped after {stage.settings.task_soft_time_limit} s (KORAG_TASK_SOFT_TIME_LIMIT)"
    left = {i: d for i, d in docs.items() if i not in outcomes}
    for i, result in interrupted(stage, left, reason, alone=len(docs) == 1).items():
        if result is not None:
            outcomes[i] = result


@shared_task(bind=True, name="korag.ingest_document", **RETRY)
def ingest_document(
    self,
    blob: str,
    filename: str,
    source: str,
    doc_id: str,
    tenant: str | None = None,
    meta: dict[str, Any] | None = None,
    request: str | None = None,
    seq: int | None = None,
) -> dict:
    root = root_of(self.app)
    settings = root.settings
    consumed = _consumed(self)
    kwargs = {"blob": blob, "filename": filename, "source": source, "doc_id": doc_id, "tenant": tenant,
              "meta": meta, "request": request, "seq": seq}
    stage = root.stage()
    with Batch(self.app, self, kwargs) as batch:
        if not is_suspect(stage, doc_id):  # a document that took a worker down before runs alone
            batch.take([q for q in (PARSE_QUEUE, LEGACY_QUEUE) if q in consumed], settings.worker_batch_documents - 1,
                       weight=lambda kw: blob_size(settings, kw.get("blob")), budget=BATCH_BYTES)
        log.info("ingesting %d document(s), %s first (blob %s)", len(batch.messages), source, blob[:12])
        outcomes: dict[int, Any] = {}
        deliveries: dict[int, Delivery] = {}
        for index, message in enumerate(batch.messages):
            try:
                deliveries[index] = _delivery(message.kwargs, message.retries)
            except (ValueError, KeyError, TypeError) as exc:  # a message from an older korag, or malformed
                outcomes[index] = IngestResult(str(message.kwargs.get("source")), str(message.kwargs.get("doc_id")),
                                               "failed", error=str(exc))
        order = list(deliveries)

        def forward(position: int, prepared: EmbedOrder) -> None:
            self.app.send_task(EMBED_TASK, kwargs=prepared.to_json(), task_id=batch.messages[order[position]].task_id)

        found: dict[int, Any] = {}
        error: BaseException | None = None
        try:
            prepare_batch(stage, [deliveries[i] for i in order], found, EMBED_QUEUE in consumed, forward,
                          releasable=lambda position: order[position] != 0)
        except SoftTimeLimitExceeded as exc:
            error = exc
            outcomes.update({order[p]: r for p, r in found.items()})
            _cut_short(stage, {i: InFlight(d.doc_id, d.source, d.request.id if d.request else None,
                                           d.request.seq if d.request else 0) for i, d in deliveries.items()}, outcomes)
        except Exception as exc:
            error = exc
        outcomes.update({order[p]: r for p, r in found.items()})
        return _settle(self, batch, outcomes, error)


@shared_task(bind=True, name=EMBED_TASK, **RETRY)
def embed_document(self, prepared: str, doc_id: str, source: str, chunks: int = 0, seq: int = 0,
                   tenant: str | None = None) -> dict:
    root = root_of(self.app)
    settings = root.settings
    kwargs = {"prepared": prepared, "doc_id": doc_id, "source": source, "chunks": chunks, "seq": seq, "tenant": tenant}
    stage = root.stage()
    with Batch(self.app, self, kwargs) as batch:
        if not is_suspect(stage, doc_id):
            batch.take([EMBED_QUEUE], settings.worker_batch_chunks, weight=lambda kw: int(kw.get("chunks") or 0),
                       budget=settings.worker_batch_chunks)
        orders = [(_order(m), f"{m.kwargs.get('prepared')}:e{m.retries}") for m in batch.messages]
        outcomes: dict[int, Any] = {}
        error: BaseException | None = None
        try:
            embed_batch(stage, orders, outcomes, releasable=lambda index: index != 0)
        except SoftTimeLimitExceeded as exc:
            error = exc
            _cut_short(stage, {i: InFlight(o.doc_id, o.source, o.key, o.seq) for i, (o, _) in enumerate(orders)},
                       outcomes)
            for i, (order, _) in enumerate(orders):
                if isinstance(outcomes.get(i), IngestResult):
                    PreparedStore.from_settings(settings).delete(order.key)
        except Exception as exc:  # what is unfinished is sent again
            error = exc
        return _settle(self, batch, outcomes, error)


def _order(message: Message) -> EmbedOrder:
    kw = message.kwargs
    return EmbedOrder(str(kw.get("prepared")), str(kw.get("doc_id")), str(kw.get("source")), int(kw.get("chunks") or 0),
                      int(kw.get("seq") or 0), kw.get("tenant"))


@worker_ready.connect
def _prepare_on_start(sender=None, **_):
    """The worker's consumer serves the batches' events (workers.batching); the bindings an older
    korag left are removed, so a message reaches one queue only (workers.app)."""
    if sender is not None:
        watch_worker(sender)
        try:
            dropped = drop_stale_bindings(sender.app)
        except Exception as error:  # noqa: BLE001 - never stop the worker for it
            log.warning("could not check the queues' bindings on the broker: %s", error)
            return
        if dropped:
            log.warning("removed %d queue binding(s) an older korag left on exchange 'celery' (routing key "
                        "'celery' copied a message into every queue)", dropped)


@worker_ready.connect
def _sweep_on_start(sender=None, **_):
    """Documents left unfinished by a crash are sent again when a worker comes up."""
    if sender is None:
        return
    root = root_of(sender.app)
    try:
        with root.stores.session() as store:
            swept = sweep(DocumentRegistry(store.client, store.collection), sender.app, root.settings)
        if swept:
            log.warning("re-queued %d unfinished document(s)", len(swept))
    except Exception:  # a sweep is a courtesy at start-up; never stop the worker for it
        log.exception("sweep at start-up failed")
