"""Thin tasks: read the typed message (:mod:`korag.messages`), call a plain function
(:mod:`ingest.stages`), return a plain dict.

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
import time
from collections.abc import Callable
from typing import Any

from celery import shared_task
from celery.exceptions import Ignore, OperationalError, SoftTimeLimitExceeded
from celery.signals import worker_ready
from celery.utils.log import get_task_logger
from qdrant_client.http.exceptions import ResponseHandlingException
from redis.exceptions import ConnectionError as RedisConnectionError

from ingest.stages import (
    BATCH_BYTES,
    Forwarded,
    InFlight,
    Outcome,
    PreparedStore,
    Released,
    Stage,
    blob_size,
    embed_batch,
    interrupted,
    is_suspect,
    prepare_batch,
)
from ingest.starters import FromBlob
from korag.errors import StoreBusyError
from korag.messages import EMBED_TASK, INGEST_TASK, EmbedMessage, IngestMessage
from korag.services.queue_client import send_embed
from korag.types import IngestResult
from workers.app import EMBED_QUEUE, LEGACY_QUEUE, PARSE_QUEUE, drop_stale_bindings
from workers.batching import Batch, watch_worker
from workers.heartbeat import keep_alive
from workers.root import root_of

__all__ = ["embed_document", "ingest_document"]

log = get_task_logger(__name__)

TRANSIENT = (StoreBusyError, ConnectionError, TimeoutError, ResponseHandlingException, RedisConnectionError)




BROKER_DOWN = (OperationalError, *TRANSIENT)
HANDOVER_RETRY_S = 600.0  # how long a parse worker keeps trying to hand a document to the embed queue


def hand_over(send: Callable[[], object], source: str, retry_s: float = HANDOVER_RETRY_S) -> None:
    """Send a parsed document (recorded ``queued``, its prepared file written) on to the embed
    queue, trying again with backoff while the broker does not take it: a broker that restarts
    meanwhile (from its append-only file, or empty) gets the message once it is back, instead
    of the document staying ``queued`` with no message anywhere. The parse message stays
    unacknowledged all the while, so a worker that dies here leaves it to be delivered again.
    After ``retry_s`` seconds the error is raised; the workers' periodic sweep then sends the
    document again once it is ``KORAG_SWEEP_AFTER_S`` old."""
    deadline = time.monotonic() + retry_s
    delay = 1.0
    while True:
        try:
            send()
            return
        except BROKER_DOWN as error:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s: the embed queue did not take it (%s: %s); trying again in %.0f s", source,
                        type(error).__name__, error, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


RETRY = dict(autoretry_for=TRANSIENT, retry_backoff=True, retry_backoff_max=60, retry_jitter=True, max_retries=8)


def _consumed(task) -> set[str]:
    """The queues this worker consumes (``-Q``; all of them by default). The task's own app: the
    one the worker runs (``korag worker`` builds its own)."""
    return set(task.app.amqp.queues.consume_from)


def _backoff(retries: int) -> float:
    return random.uniform(0, min(60, 2 ** retries))


def _announce(task, batch: Batch, outcomes: dict[int, Outcome]) -> None:
    """Webhook events (KORAG_WEBHOOK_URL) for the documents this batch finished."""
    hooks = root_of(task.app).webhooks
    if hooks is None:
        return
    for index, message in enumerate(batch.messages):
        outcome = outcomes.get(index)
        if isinstance(outcome, IngestResult):
            hooks.report(outcome, message.kwargs.get("tenant"))


def _settle(task, batch: Batch, outcomes: dict[int, Outcome], error: BaseException | None) -> dict:
    """Settle every message of the batch; the lead's result is returned (or raised) to Celery."""
    _announce(task, batch, outcomes)
    for index, message in enumerate(batch.messages[1:], start=1):
        outcome = outcomes.get(index)
        if isinstance(outcome, Forwarded):
            batch.handed_on(message)
        elif isinstance(outcome, Released):
            continue  # unsettled: back to the front of its queue, for a task of its own
        elif isinstance(outcome, IngestResult):
            batch.done(message, outcome.to_json())
        else:  # cut short: a new attempt of its own
            batch.again(message, error if error is not None else RuntimeError("batch ended early"),
                        _backoff(message.retries))
    lead = outcomes.get(0)
    if isinstance(lead, Forwarded):
        raise Ignore()  # korag.embed_document reports the outcome under this task id
    if isinstance(lead, IngestResult):
        return lead.to_json()
    if isinstance(error, SoftTimeLimitExceeded) or error is None:
        raise task.retry(countdown=_backoff(task.request.retries or 0))
    raise error


def _cut_short(stage: Stage, docs: dict[int, InFlight], outcomes: dict[int, Outcome]) -> None:
    """A time limit ended the batch: a document alone fails with the reason; several count one
    interruption each (so each runs alone next time) and are sent again."""
    reason = f"stopped after {stage.settings.task_soft_time_limit} s (KORAG_TASK_SOFT_TIME_LIMIT)"
    left = {i: d for i, d in docs.items() if i not in outcomes}
    for i, result in interrupted(stage, left, reason, alone=len(docs) == 1).items():
        if result is not None:
            outcomes[i] = result


@shared_task(bind=True, name=INGEST_TASK, **RETRY)
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
    keep_alive(self.app)  # a pool's child process beats for the documents it holds
    root = root_of(self.app)
    settings = root.settings
    consumed = _consumed(self)
    kwargs = IngestMessage(blob=blob, filename=filename, source=source, doc_id=doc_id, tenant=tenant,
                           meta=tuple((meta or {}).items()), request=request, seq=seq).to_kwargs()
    stage = root.stage()
    with Batch(self.app, self, kwargs) as batch:
        if not is_suspect(stage, doc_id):  # a document that took a worker down before runs alone
            batch.take([q for q in (PARSE_QUEUE, LEGACY_QUEUE) if q in consumed], settings.worker_batch_documents - 1,
                       weight=lambda kw: blob_size(settings, kw.get("blob")), budget=BATCH_BYTES)
        log.info("ingesting %d document(s), %s first (blob %s)", len(batch.messages), source, blob[:12])
        outcomes: dict[int, Outcome] = {}
        deliveries: dict[int, FromBlob] = {}
        for index, message in enumerate(batch.messages):
            try:
                deliveries[index] = FromBlob.of(IngestMessage.from_kwargs(message.kwargs), message.retries, stage.blobs)
            except (ValueError, KeyError, TypeError) as exc:  # a message from an older korag, or malformed
                outcomes[index] = IngestResult(str(message.kwargs.get("source")), str(message.kwargs.get("doc_id")),
                                               "failed", error=str(exc))
        order = list(deliveries)

        def forward(position: int, prepared: EmbedMessage) -> None:
            hand_over(lambda: send_embed(self.app, prepared, task_id=batch.messages[order[position]].task_id),
                      prepared.source)

        found: dict[int, Outcome] = {}
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
    keep_alive(self.app)
    root = root_of(self.app)
    settings = root.settings
    kwargs = EmbedMessage(prepared=prepared, doc_id=doc_id, source=source, tenant=tenant, chunks=chunks,
                          seq=seq).to_kwargs()
    stage = root.stage()
    with Batch(self.app, self, kwargs) as batch:
        if not is_suspect(stage, doc_id):
            batch.take([EMBED_QUEUE], settings.worker_batch_chunks, weight=lambda kw: int(kw.get("chunks") or 0),
                       budget=settings.worker_batch_chunks)
        outcomes: dict[int, Outcome] = {}
        taken: dict[int, tuple[EmbedMessage, str]] = {}
        for index, message in enumerate(batch.messages):
            try:
                taken[index] = (EmbedMessage.from_kwargs(message.kwargs), f"{message.kwargs['prepared']}:e{message.retries}")
            except (ValueError, KeyError) as exc:  # malformed
                outcomes[index] = IngestResult(str(message.kwargs.get("source")), str(message.kwargs.get("doc_id")),
                                               "failed", error=str(exc))
        order = list(taken)
        found: dict[int, Outcome] = {}
        error: BaseException | None = None
        try:
            embed_batch(stage, [taken[i] for i in order], found, releasable=lambda position: order[position] != 0)
        except SoftTimeLimitExceeded as exc:
            error = exc
            outcomes.update({order[p]: r for p, r in found.items()})
            _cut_short(stage, {i: InFlight(m.doc_id, m.source, m.prepared, m.seq) for i, (m, _) in taken.items()},
                       outcomes)
            for i, (message, _) in taken.items():
                if isinstance(outcomes.get(i), IngestResult):
                    PreparedStore.from_settings(settings).delete(message.prepared)
        except Exception as exc:  # what is unfinished is sent again
            error = exc
        outcomes.update({order[p]: r for p, r in found.items()})
        return _settle(self, batch, outcomes, error)


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
def _pulse_on_start(sender=None, **_):
    """The worker beats and sweeps from now on (:mod:`workers.heartbeat`): documents left
    unfinished by a crash are sent again as it comes up, and periodically after."""
    if sender is not None:
        keep_alive(sender.app, sweeping=True)
