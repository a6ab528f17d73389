"""The client side of the queue: put a document's bytes in the blob store, record it as
``queued``, send a task naming the blob, and (optionally) wait for the worker's result."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath

from celery import Celery
from celery.exceptions import OperationalError
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult

from ingest.pipeline import read_document, unreadable
from korag.errors import KoragError
from korag.messages import EMBED_TASK, INGEST_TASK, EmbedMessage, IngestMessage
from korag.services.lifecycle import queue_request, release_upload
from korag.storage.blobs import BlobStore
from korag.storage.registry import SUPERSEDED, DocumentRegistry, this_process
from korag.types import DocumentInfo, IngestResult, doc_id_for

BROKER_PROBE_S = 3.0


class BrokerUnreachableError(KoragError):
    """KORAG_BROKER_URL names a broker that does not answer. A setup error: nothing was queued."""


def check_broker(app: Celery, timeout_s: float = BROKER_PROBE_S) -> None:
    """Connect to the broker once, within ``timeout_s``, before anything is recorded as queued."""
    connection = app.connection_for_write(connect_timeout=timeout_s)
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout_s)
    except Exception as exc:  # kombu OperationalError, socket errors, a malformed URL
        raise BrokerUnreachableError(
            f"the broker {connection.as_uri()} (KORAG_BROKER_URL) does not answer within {timeout_s:g} s "
            f"({type(exc).__name__}: {exc}); nothing was queued. Start it, fix KORAG_BROKER_URL, or unset "
            "it to ingest in-process"
        ) from exc
    finally:
        connection.release()


@dataclass(frozen=True)
class CeleryQueue:
    """The queue as the service sees it, handed in by the service's root: the one place that
    knows it is Celery (the service imports no Celery)."""

    app: Celery

    def check(self, timeout_s: float = BROKER_PROBE_S) -> None:
        check_broker(self.app, timeout_s)

    def send(self, message: IngestMessage, countdown: float | None = None) -> AsyncResult:
        """:func:`send` through this queue's app."""
        return send(self.app, message, countdown)


@dataclass
class Enqueued:
    source: str
    doc_id: str
    task: AsyncResult | None  # None when the document failed before it could be sent
    failure: str | None = None

    def pending_result(self) -> IngestResult:
        if self.task is None:
            return IngestResult(self.source, self.doc_id, "failed", error=self.failure)
        return IngestResult(self.source, self.doc_id, "queued", extra={"task_id": self.task.id})

    def wait(self, timeout: float | None = None) -> IngestResult:
        """The worker's result; after ``timeout`` seconds without one, ``queued`` with an error."""
        return self._wait(timeout, timeout)

    def _wait(self, remaining_s: float | None, total_s: float | None) -> IngestResult:
        if self.task is None:
            return self.pending_result()
        try:
            if remaining_s is not None and remaining_s <= 0 and not self.task.ready():
                raise CeleryTimeoutError()  # Celery reads a timeout of 0 as "wait forever"
            value = self.task.get(timeout=remaining_s, propagate=False)
        except CeleryTimeoutError:
            return IngestResult(
                self.source, self.doc_id, "queued", extra={"task_id": self.task.id},
                error=f"no result within {total_s:g} s: is a worker running? The document stays queued for the "
                      f"workers (korag status {self.doc_id})",
            )
        if self.task.failed():
            return IngestResult(self.source, self.doc_id, "failed", error=f"worker error: {type(value).__name__}: {value}")
        return IngestResult.from_json(value)


def wait_all(sent: Iterable[Enqueued], timeout_s: float) -> Iterator[IngestResult]:
    """Results in order, waiting ``timeout_s`` seconds in all; what has no result by then comes
    back ``queued`` with an error (it stays in the queue for the workers)."""
    deadline = time.monotonic() + timeout_s
    for item in sent:
        yield item._wait(deadline - time.monotonic(), timeout_s)


def send(app: Celery, message: IngestMessage, countdown: float | None = None) -> AsyncResult:
    """Send a document (its blob) to the parse workers."""
    return app.send_task(INGEST_TASK, kwargs=message.to_kwargs(), countdown=countdown)


def send_embed(app: Celery, message: EmbedMessage, countdown: float | None = None,
               task_id: str | None = None) -> AsyncResult:
    """Send a parsed document (its prepared file, named by its request) to the embed workers;
    ``task_id``: the parse task's, when the embed task reports that task's outcome."""
    return app.send_task(EMBED_TASK, kwargs=message.to_kwargs(), countdown=countdown, task_id=task_id)


def enqueue(
    app: Celery,
    blobs: BlobStore,
    registry: DocumentRegistry | None,
    path: str | Path,
    source: str,
    max_file_bytes: int,
    info: DocumentInfo | None = None,
) -> Enqueued:
    """Store the bytes, record the document as queued (when a registry is given), send the task."""
    info = info if info is not None else DocumentInfo()
    doc_id = doc_id_for(source, info.tenant, registry)
    try:
        # pinned until the record refers to it, so a concurrent delete of the same bytes keeps them
        blob, pin = blobs.put_pinned(read_document(path, max_file_bytes), this_process())
    except (OSError, ValueError) as exc:
        return Enqueued(source, doc_id, None, unreadable(exc))
    filename = unicodedata.normalize("NFC", PurePath(path).name)  # macOS spells names in NFD
    request = seq = None
    if registry is None:
        blobs.unpin(pin)
    else:  # the new request owns the document from now on (korag.services.lifecycle); the replaced blob goes
        try:
            claimed = queue_request(registry, doc_id, source, filename, blob, info.tenant, dict(info.meta),
                                    blobs=blobs)
        finally:
            release_upload(blobs, registry, blob, pin)
        if claimed is None:
            return Enqueued(source, doc_id, None, SUPERSEDED)
        request, seq = claimed
    try:
        task = send(app, IngestMessage(blob=blob, filename=filename, source=source, doc_id=doc_id, tenant=info.tenant,
                                       meta=info.meta, request=request, seq=seq))
    except OperationalError as exc:  # the broker went away after check_broker
        raise BrokerUnreachableError(
            f"the broker stopped answering while {source} was being queued ({exc}); documents recorded as queued "
            "are sent again by `korag sweep` (or a worker's start) once it is back"
        ) from exc
    return Enqueued(source, doc_id, task)
