"""Thin tasks: decode JSON arguments, call a plain function, return a plain dict.

Heavy parts (the model) are built once per worker process, on first use, never at import.
Transient failures (store or broker briefly unavailable) are retried with backoff; a document
that cannot be parsed fails at once; a document that a worker died on ``max_crashes`` times
ends ``failed`` instead of being redelivered forever.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready
from celery.utils.log import get_task_logger
from qdrant_client.http.exceptions import ResponseHandlingException
from redis.exceptions import ConnectionError as RedisConnectionError

from ingest.embedder import Embedder
from ingest.pipeline import DocumentInfo, Pipeline, Request
from korag.blobs import BlobStore
from korag.errors import StoreBusyError
from korag.registry import DELETED, MID_FLIGHT, DocumentRegistry, new_seq, note_interruption
from korag.settings import Settings
from korag.store import store_session
from korag.types import IngestResult
from workers.app import app

log = get_task_logger(__name__)

TRANSIENT = (StoreBusyError, ConnectionError, TimeoutError, ResponseHandlingException, RedisConnectionError)


@cache
def _settings() -> Settings:
    configured = getattr(app.conf, "korag_settings", None)
    return configured if configured is not None else Settings()


@cache
def _embedder() -> Embedder:
    return Embedder.load(_settings())


def settle_delivery(registry: DocumentRegistry, doc_id: str, request: Request | None, max_crashes: int) -> IngestResult | None:
    """Decide whether this delivery should run. Returns the outcome to report instead, when:
    the request was superseded by a newer one (or the document deleted), or already finished (a
    redelivery after a crash or a sweep), or the document has now taken down ``max_crashes``
    workers. Only a redelivery of the *same attempt* that finds the document mid-flight counts
    as a crash; a retry after a transient error is a new attempt."""
    record = registry.get(doc_id, include_deleted=True)
    if record is None or request is None:
        return None
    if record.request != request.id or record.status == DELETED:
        why = "deleted before it was ingested" if record.status == DELETED else "superseded by a newer ingest of this document"
        return IngestResult(record.source, doc_id, "failed", error=why)
    if record.status in ("indexed", "failed"):
        status = "unchanged" if record.status == "indexed" else "failed"
        return IngestResult(record.source, doc_id, status, chunks=record.chunks, error=record.error)
    if record.status in MID_FLIGHT and record.attempt in (None, request.attempt):  # the last worker on it died
        if note_interruption(registry, record, max_crashes):
            return IngestResult(record.source, doc_id, "failed", error=record.error)
        log.warning("document %s was interrupted %d time(s); trying again", doc_id, record.crashes)
    return None


def ingest_blob(
    settings: Settings,
    embedder: Embedder,
    blob: str,
    filename: str,
    source: str,
    doc_id: str,
    info: DocumentInfo,
    request: Request | None = None,
) -> dict:
    """The plain function behind the task: read the blob, run the pipeline, return the result.
    A task stopped by its soft time limit ends the document ``failed`` with the reason."""
    with store_session(settings, wait_s=10) as store:
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


@app.task(
    bind=True,
    name="korag.ingest_document",
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=8,
)
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
    log.info("ingesting %s (blob %s)", source, blob[:12])
    try:
        info = DocumentInfo(tenant=tenant, meta=tuple((meta or {}).items()))
    except ValueError as exc:  # a message queued by an older korag with a now-reserved key
        return IngestResult(source, doc_id, "failed", error=str(exc)).to_json()
    delivery = None
    if request is not None:
        delivery = Request(request, seq if seq is not None else 0, attempt=f"{request}:{self.request.retries or 0}")
    return ingest_blob(_settings(), _embedder(), blob, filename, source, doc_id, info, delivery)


@worker_ready.connect
def _sweep_on_start(sender=None, **_):
    """Documents left unfinished by a crash are sent again when a worker comes up."""
    from workers.sweeper import sweep

    try:
        with store_session(_settings(), wait_s=30) as store:
            swept = sweep(DocumentRegistry(store.client, store.collection), app, _settings())
        if swept:
            log.warning("re-queued %d unfinished document(s)", len(swept))
    except Exception:  # a sweep is a courtesy at start-up; never stop the worker for it
        log.exception("sweep at start-up failed")
