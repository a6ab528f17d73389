"""The client side of the queue: put a document's bytes in the blob store, record it as
``queued``, send a task naming the blob, and (optionally) wait for the worker's result."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path, PurePath

from celery import Celery
from celery.result import AsyncResult

from ingest.pipeline import DocumentInfo, doc_id_for, too_large
from korag.blobs import BlobStore
from korag.registry import DocumentRecord, DocumentRegistry
from korag.types import IngestResult

TASK_NAME = "korag.ingest_document"


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
        if self.task is None:
            return self.pending_result()
        value = self.task.get(timeout=timeout, propagate=False)
        if self.task.failed():
            return IngestResult(self.source, self.doc_id, "failed", error=f"worker error: {type(value).__name__}: {value}")
        return IngestResult.from_json(value)


def send(app: Celery, blob: str, filename: str, source: str, doc_id: str, tenant: str | None,
         meta: dict[str, str], request: str | None = None) -> AsyncResult:
    return app.send_task(
        TASK_NAME,
        kwargs={"blob": blob, "filename": filename, "source": source, "doc_id": doc_id, "tenant": tenant,
                "meta": meta, "request": request},
    )


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
    doc_id = doc_id_for(source, info.tenant)
    try:
        size = Path(path).stat().st_size
        if size > max_file_bytes:
            return Enqueued(source, doc_id, None, too_large(size, max_file_bytes))
        blob = blobs.put(Path(path).read_bytes())
    except OSError as exc:
        return Enqueued(source, doc_id, None, f"cannot read file: {exc.strerror or exc}")
    filename = PurePath(path).name
    request = None
    if registry is not None:
        request = uuid.uuid4().hex
        record = registry.get(doc_id) or DocumentRecord(doc_id=doc_id, source=source, status="queued")
        record.status, record.blob, record.filename, record.request = "queued", blob, filename, request
        record.source, record.tenant, record.meta, record.crashes = source, info.tenant, dict(info.meta), 0
        registry.put(record)
    return Enqueued(source, doc_id, send(app, blob, filename, source, doc_id, info.tenant, dict(info.meta), request))
