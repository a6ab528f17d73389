"""Thin tasks: decode JSON arguments, call a plain function, return a plain dict.

Heavy parts (the model) are built once per worker process, on first use, never at import.
Transient failures (store or broker briefly unavailable) are retried with backoff; a document
that cannot be parsed fails at once; a document that a worker died on ``max_crashes`` times
ends ``failed`` instead of being redelivered forever.
"""

from __future__ import annotations

from functools import cache

from celery.signals import worker_ready
from celery.utils.log import get_task_logger
from qdrant_client.http.exceptions import ResponseHandlingException
from redis.exceptions import ConnectionError as RedisConnectionError

from ingest.embedder import Embedder
from ingest.pipeline import DocumentInfo, Pipeline
from korag.blobs import BlobStore
from korag.errors import StoreBusyError
from korag.registry import MID_FLIGHT, DocumentRegistry, note_interruption
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


def settle_delivery(registry: DocumentRegistry, doc_id: str, request: str | None, max_crashes: int) -> IngestResult | None:
    """Decide whether this delivery should run. Returns the outcome to report instead, when:
    the request was superseded by a newer one, or already finished (a redelivery after a
    crash or a sweep), or the document has now taken down ``max_crashes`` workers."""
    record = registry.get(doc_id)
    if record is None or request is None:
        return None
    if record.request != request:
        return IngestResult(record.source, doc_id, "failed", error="superseded by a newer ingest of this document")
    if record.status in ("indexed", "failed"):
        status = "unchanged" if record.status == "indexed" else "failed"
        return IngestResult(record.source, doc_id, status, chunks=record.chunks, error=record.error)
    if record.status in MID_FLIGHT:  # the last worker on it died
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
    request: str | None = None,
) -> dict:
    """The plain function behind the task: read the blob, run the pipeline, return the result."""
    with store_session(settings, wait_s=10) as store:
        pipeline = Pipeline.build(embedder, store, settings)
        settled = settle_delivery(pipeline.registry, doc_id, request, settings.max_crashes)
        if settled is not None:
            return settled.to_json()
        try:
            data = BlobStore(settings.blobs_path).get(blob)
        except FileNotFoundError as exc:
            return IngestResult(source, doc_id, "failed", error=str(exc)).to_json()
        return pipeline.ingest_bytes(data, filename, source, doc_id, info, blob=blob).to_json()


@app.task(
    name="korag.ingest_document",
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=8,
)
def ingest_document(
    blob: str,
    filename: str,
    source: str,
    doc_id: str,
    tenant: str | None = None,
    meta: dict[str, str] | None = None,
    request: str | None = None,
) -> dict:
    log.info("ingesting %s (blob %s)", source, blob[:12])
    info = DocumentInfo(tenant=tenant, meta=tuple((meta or {}).items()))
    return ingest_blob(_settings(), _embedder(), blob, filename, source, doc_id, info, request)


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
