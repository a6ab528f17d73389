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
from korag.registry import DocumentRegistry
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


def give_up_after_crashes(registry: DocumentRegistry, doc_id: str, max_crashes: int) -> IngestResult | None:
    """A delivery that finds its document mid-flight means the last worker on it died.
    Count it; past the limit, fail the document instead of trying again."""
    record = registry.get(doc_id)
    if record is None or record.status not in ("parsing", "embedding"):
        return None
    record.crashes += 1
    if record.crashes >= max_crashes:
        record.status = "failed"
        record.error = (
            f"gave up after {record.crashes} interrupted attempts: a worker died while processing this document "
            "each time (out of memory or a crash in a native library)"
        )
        registry.put(record)
        return IngestResult(record.source, doc_id, "failed", error=record.error)
    registry.put(record)
    log.warning("document %s was interrupted %d time(s); trying again", doc_id, record.crashes)
    return None


def ingest_blob(
    settings: Settings, embedder: Embedder, blob: str, filename: str, source: str, doc_id: str, info: DocumentInfo
) -> dict:
    """The plain function behind the task: read the blob, run the pipeline, return the result."""
    with store_session(settings, wait_s=10) as store:
        pipeline = Pipeline.build(embedder, store, settings)
        gave_up = give_up_after_crashes(pipeline.registry, doc_id, settings.max_crashes)
        if gave_up is not None:
            return gave_up.to_json()
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
) -> dict:
    log.info("ingesting %s (blob %s)", source, blob[:12])
    info = DocumentInfo(tenant=tenant, meta=tuple((meta or {}).items()))
    return ingest_blob(_settings(), _embedder(), blob, filename, source, doc_id, info)


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
