"""Where a document comes from, and how it is taken: a *starter* reads the document's bytes and
takes it for its request (:meth:`Pipeline.begin`), and every ingest path runs what it started
through the same steps (:mod:`ingest.batch` for the CLI and the embedded service,
:mod:`ingest.stages` for the Celery workers).

- :class:`FromFile`: a file the CLI names; a new in-process request.
- :class:`FromBlob`: a queued request whose bytes are in the blob store: an upload the embedded
  service queued, or a ``korag.ingest_document`` message (:meth:`FromBlob.of`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from ingest.pipeline import Pending, Pipeline
from korag.ids import new_seq
from korag.messages import IngestMessage
from korag.storage.blobs import BlobStore
from korag.types import DocumentInfo, IngestResult, Request, doc_id_for


class Starter(Protocol):
    """One document to ingest: ``start`` takes it (recorded ``parsing``) or says its outcome."""

    source: str

    def start(self, pipeline: Pipeline) -> IngestResult | Pending: ...


@dataclass(frozen=True)
class FromFile:
    """A file on disk, ingested by this process under a new request of its own."""

    path: Path
    source: str
    info: DocumentInfo = field(default_factory=DocumentInfo)

    def start(self, pipeline: Pipeline) -> IngestResult | Pending:
        doc_id = doc_id_for(self.source, self.info.tenant, pipeline.registry)
        try:
            return pipeline.begin_file(self.path, self.source, doc_id, self.info)
        except Exception as exc:  # noqa: BLE001 - the store failed for this document: it alone fails
            return IngestResult(self.source, doc_id, "failed", error=f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class FromBlob:
    """A queued request's document, its bytes in the blob store. ``request``: the request that
    owns it (None: a message from a korag before requests, run as a new in-process request)."""

    blobs: BlobStore = field(compare=False, repr=False)
    blob: str
    filename: str
    source: str
    doc_id: str
    info: DocumentInfo = field(default_factory=DocumentInfo)
    request: Request | None = None

    @classmethod
    def of(cls, message: IngestMessage, retries: int, blobs: BlobStore) -> "FromBlob":
        """The document a ``korag.ingest_document`` message names, as delivery ``retries`` of it
        (a retry after a transient error is a new attempt, not a crash). ``ValueError`` for
        metadata an older korag allowed."""
        info = DocumentInfo(tenant=message.tenant, meta=message.meta)
        request = message.request
        own = Request(request, message.seq or 0, attempt=f"{request}:{retries}") if request is not None else None
        return cls(blobs, message.blob, message.filename, message.source, message.doc_id, info, own)

    def start(self, pipeline: Pipeline) -> IngestResult | Pending:
        """Read the blob and take the document (``parsing``); a blob that is gone: :meth:`missing`."""
        request = self.request
        if request is not None and not request.seq:  # a message sent without its sequence number
            current = pipeline.registry.get(self.doc_id)
            request = replace(request, seq=current.seq if current is not None and current.seq else new_seq())
        try:
            data = self.blobs.get(self.blob)
        except FileNotFoundError as exc:
            return self.missing(pipeline, exc)
        return pipeline.begin(data, self.filename, self.source, self.doc_id, self.info, blob=self.blob,
                              request=request)

    def missing(self, pipeline: Pipeline, exc: FileNotFoundError) -> IngestResult:
        """The outcome when the blob is gone: failed with the reason, not recorded (a worker's
        delivery; the embedded service records it, :mod:`korag.services.ingest_queue`)."""
        return IngestResult(self.source, self.doc_id, "failed", error=str(exc))
