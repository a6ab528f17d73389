"""Background ingest for a long-running process that owns the embedded store (``korag serve``).

Uploads are recorded ``queued`` under a request of their own (:func:`korag.services.lifecycle.queue_request`,
as the Celery client does), then one thread runs them, started from their blobs
(:class:`ingest.starters.FromBlob`), through :class:`ingest.batch.BatchIngest`:
the warm parser pool and cross-document embedding of ``korag ingest``. Each job runs *as its
queued request*, exactly like a worker delivery, so a newer upload or a deletion made while it
waited supersedes it instead of being undone by it. Callers get a ``concurrent.futures.Future``
per document.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ingest.batch import BatchIngest
from ingest.pipeline import Pending, Pipeline
from ingest.starters import FromBlob
from korag.services.lifecycle import has_content, queue_request, recover
from korag.storage.blobs import BlobStore
from korag.storage.disk import DiskFullError
from korag.storage.registry import DELETED, SUPERSEDED, lost_reason
from korag.types import DocumentInfo, IngestResult, Request

log = logging.getLogger("korag.serve")


@dataclass
class Job:
    doc_id: str
    source: str
    filename: str
    blob: str
    info: DocumentInfo
    request: Request
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None  # when its batch began


@dataclass(frozen=True)
class _Upload(FromBlob):
    """A job's document: its bytes in the blob store, taken as its queued request. A full disk
    or a blob gone with its request still owning the document fails it, recorded (nobody sends
    it again)."""

    check_disk: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def start(self, pipeline: Pipeline) -> IngestResult | Pending:
        try:
            if self.check_disk is not None:
                self.check_disk()  # the store's files are memory-mapped: a full disk would kill the process
            return super().start(pipeline)
        except DiskFullError as exc:
            log.warning("%s: %s", self.source, exc)
            return _record_failure(pipeline, self.doc_id, self.source, self._own, str(exc))
        except Exception as exc:  # noqa: BLE001 - the store failed: this document alone fails
            return _failed(pipeline, self.doc_id, self.source, self._own, exc)

    def missing(self, pipeline: Pipeline, exc: FileNotFoundError) -> IngestResult:
        """Its blob went with a deletion or a newer version, or was lost while it owned the document."""
        current = pipeline.registry.get(self.doc_id, include_deleted=True)
        if current is None or current.request != self._own.id or current.status == DELETED:
            return IngestResult(self.source, self.doc_id, "failed", error=lost_reason(current, started=False))
        return _failed(pipeline, self.doc_id, self.source, self._own, exc)

    @property
    def _own(self) -> Request:
        if self.request is None:
            raise ValueError(f"{self.source}: a queued job runs as its queued request")
        return self.request


class _QueuedBatch(BatchIngest):
    """BatchIngest whose failures are recorded: a queued job is not sent again by anyone."""

    def __init__(self, pipeline: Pipeline, workers: int | None) -> None:
        super().__init__(pipeline, workers=workers, batch_chunks=64)  # short model calls: searches wait less

    def _guard(self, pending: Pending, step: Callable[[], Any]) -> Any:
        record = pending.record
        try:
            return step()
        except Exception as exc:  # noqa: BLE001 - a store or model error costs this document only
            return _failed(self.pipeline, record.doc_id, record.source, pending.own, exc)


def _failed(pipeline: Pipeline, doc_id: str, source: str, request: Request, exc: Exception) -> IngestResult:
    """An unexpected error failed the document: recorded with the error's name and text."""
    log.exception("%s: ingest failed", source)
    return _record_failure(pipeline, doc_id, source, request, f"{type(exc).__name__}: {exc}")


def _record_failure(pipeline: Pipeline, doc_id: str, source: str, request: Request, reason: str) -> IngestResult:
    try:
        pipeline.fail(doc_id, request, reason)
    except Exception:  # noqa: BLE001 - the store is down: the record stays unfinished; the next start fails it
        log.exception("%s: cannot record the failure", source)
    return IngestResult(source, doc_id, "failed", error=reason)


class IngestQueue:
    """``submit`` records documents queued and returns their jobs; one thread ingests them in
    batches. ``on_result(job, result)`` is called for each finished document (events, metrics)."""

    def __init__(self, pipeline: Pipeline, blobs: BlobStore, workers: int | None = None,
                 on_result: Callable[[Job, IngestResult], None] | None = None,
                 check_disk: Callable[[], None] | None = None) -> None:
        self.pipeline = pipeline
        self.blobs = blobs
        self.workers = workers
        self.on_result = on_result
        self.check_disk = check_disk  # raises korag.storage.disk.DiskFullError: the document fails with "disk full"
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._inflight: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="korag-ingest", daemon=True)
        self._busy = 0

    def start(self) -> "IngestQueue":
        self._thread.start()
        return self

    @property
    def depth(self) -> int:
        """Documents waiting or being ingested."""
        return self._queue.qsize() + self._busy

    def submit(self, doc_id: str, source: str, filename: str, blob: str, info: DocumentInfo) -> Job | IngestResult:
        """Queue one document whose bytes are in the blob store. The same bytes with the same
        description already on their way share that job (an upload sent twice is ingested once)."""
        with self._lock:
            running = self._inflight.get(doc_id)
            if (running is not None and not running.future.done() and running.blob == blob
                    and running.info == info and running.filename == filename and running.source == source):
                return running
            claimed = queue_request(self.pipeline.registry, doc_id, source, filename, blob, info.tenant,
                                    dict(info.meta), blobs=self.blobs)
            if claimed is None:
                return IngestResult(source, doc_id, "failed", error=SUPERSEDED)
            job = Job(doc_id, source, filename, blob, info, Request(*claimed))
            self._inflight[doc_id] = job
        self._queue.put(job)
        return job

    def recover(self, max_crashes: int) -> list[Job]:
        """Run again what a previous process left unfinished, as :func:`korag.services.lifecycle.recover`
        decides (every unfinished document: nothing else can hold the embedded store): each
        document whose bytes are in the blob store is queued again under a new request."""
        recovery = recover(self.pipeline.registry, max_crashes=max_crashes,
                           resendable=lambda record: has_content(record) and self.blobs.has(record.blob))
        jobs = []
        for record in recovery.resend:
            job = self.submit(record.doc_id, record.source, record.filename, record.blob,
                              DocumentInfo(tenant=record.tenant, meta=tuple(record.meta.items())))
            if isinstance(job, Job):
                jobs.append(job)
        return jobs

    def close(self, timeout: float | None = None) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    # -- the ingest thread ----------------------------------------------------------------------
    def _take(self) -> list[Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs = [first]
        while len(jobs) < 256:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            jobs.append(job)
        return jobs

    def _run(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            self._busy = len(jobs)
            try:
                self._ingest(jobs)
            except Exception as exc:  # noqa: BLE001 - never let the ingest thread die: fail what is left
                log.exception("ingest thread: batch failed")
                for job in jobs:
                    if not job.future.done():
                        self._finish(job, IngestResult(job.source, job.doc_id, "failed",
                                                       error=f"{type(exc).__name__}: {exc}"))
            self._busy = 0

    def _ingest(self, group: list[Job]) -> None:
        started = time.monotonic()
        for job in group:
            job.started_at = started
        batch = _QueuedBatch(self.pipeline, self.workers)
        uploads = [_Upload(self.blobs, job.blob, job.filename, job.source, job.doc_id, job.info, job.request,
                           check_disk=self.check_disk) for job in group]
        finished = 0
        try:
            for job, result in zip(group, batch.ingest(uploads)):
                self._finish(job, result)
                finished += 1
        except Exception as exc:  # noqa: BLE001 - the model or the store failed for the whole batch
            log.exception("ingest batch failed")
            for job in group[finished:]:
                self._finish(job, _failed(self.pipeline, job.doc_id, job.source, job.request, exc))

    def _finish(self, job: Job, result: IngestResult) -> None:
        with self._lock:
            if self._inflight.get(job.doc_id) is job:
                del self._inflight[job.doc_id]
        if self.on_result is not None:
            try:
                self.on_result(job, result)
            except Exception:
                log.exception("%s: reporting the result failed", job.source)
        job.future.set_result(result)
        self._busy = max(0, self._busy - 1)
