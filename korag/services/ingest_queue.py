"""Background ingest for a long-running process that owns the embedded store (``korag serve``).

Uploads are recorded ``queued`` under a request of their own (:func:`korag.services.lifecycle.queue_request`,
as the Celery client does), then one thread runs them through :class:`ingest.batch.BatchIngest`:
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
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from ingest.batch import BatchIngest
from ingest.pipeline import DocumentInfo, Pending, Pipeline, Request
from korag.services.lifecycle import has_content, queue_request, recover
from korag.storage.blobs import BlobStore
from korag.storage.disk import DiskFullError
from korag.storage.registry import DELETED, SUPERSEDED, lost_reason
from korag.types import IngestResult

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
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None  # when its batch began


class _QueuedBatch(BatchIngest):
    """BatchIngest whose documents are queued requests with their bytes in the blob store."""

    def __init__(self, pipeline: Pipeline, blobs: BlobStore, jobs: dict[str, Job], workers: int | None,
                 check_disk: Callable[[], None] | None = None) -> None:
        super().__init__(pipeline, workers=workers, batch_chunks=64)  # short model calls: searches wait less
        self.blobs = blobs
        self.jobs = jobs
        self.check_disk = check_disk

    def _start(self, path: Path, source: str, info: DocumentInfo) -> IngestResult | Pending:
        job = self.jobs[str(path)]
        try:
            if self.check_disk is not None:
                self.check_disk()  # the store's files are memory-mapped: a full disk would kill the process
            data = self.blobs.get(job.blob)
            return self.pipeline.begin(data, job.filename, source, job.doc_id, info, blob=job.blob,
                                       request=job.request)
        except DiskFullError as exc:
            log.warning("%s: %s", source, exc)
            return self._record_failure(job.doc_id, source, job.request, str(exc))
        except FileNotFoundError as exc:  # its blob went with a deletion or a newer version
            current = self.pipeline.registry.get(job.doc_id, include_deleted=True)
            if current is None or current.request != job.request.id or current.status == DELETED:
                return IngestResult(source, job.doc_id, "failed", error=lost_reason(current, started=False))
            return self._failed(job.doc_id, source, job.request, exc)
        except Exception as exc:  # the store failed: this document alone fails
            return self._failed(job.doc_id, source, job.request, exc)

    def _guard(self, index: int, pending: Pending, step) -> IngestResult:
        record = pending.record
        try:
            return step()
        except Exception as exc:
            return self._failed(record.doc_id, record.source, pending.own, exc)

    def _failed(self, doc_id: str, source: str, request: Request, exc: Exception) -> IngestResult:
        log.exception("%s: ingest failed", source)
        return self._record_failure(doc_id, source, request, f"{type(exc).__name__}: {exc}")

    def _record_failure(self, doc_id: str, source: str, request: Request, reason: str) -> IngestResult:
        try:
            self.pipeline.fail(doc_id, request, reason)
        except Exception:  # the store is down: the record stays unfinished; the next start fails it
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
            groups: dict[object, list[Job]] = {}
            for job in jobs:  # one batch per owner and description (BatchIngest takes one DocumentInfo)
                key: object = job.info
                try:
                    hash(key)
                except TypeError:  # metadata with a list value (recovered from an older record)
                    key = job.key
                groups.setdefault(key, []).append(job)
            for group in groups.values():
                try:
                    self._ingest(group[0].info, group)
                except Exception as exc:  # never let the ingest thread die: fail what is left
                    log.exception("ingest thread: batch failed")
                    for job in group:
                        if not job.future.done():
                            self._finish(job, IngestResult(job.source, job.doc_id, "failed",
                                                           error=f"{type(exc).__name__}: {exc}"))
            self._busy = 0

    def _ingest(self, info: DocumentInfo, group: list[Job]) -> None:
        by_key = {job.key: job for job in group}
        started = time.monotonic()
        for job in group:
            job.started_at = started
        batch = _QueuedBatch(self.pipeline, self.blobs, by_key, self.workers, self.check_disk)
        finished = 0
        try:
            for job, result in zip(group, batch.run([(Path(job.key), job.source) for job in group], info)):
                self._finish(job, result)
                finished += 1
        except Exception as exc:  # the model or the store failed for the whole batch
            log.exception("ingest batch failed")
            for job in group[finished:]:
                self._finish(job, batch._failed(job.doc_id, job.source, job.request, exc))

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
