"""Thin tasks: decode JSON arguments, call a plain function, return a plain dict.

Heavy parts (the model) are built once per worker process, on first use, never at import.
"""

from __future__ import annotations

from functools import cache

from celery.utils.log import get_task_logger

from ingest.embedder import Embedder
from ingest.pipeline import DocumentInfo, Pipeline
from korag.blobs import BlobStore
from korag.errors import StoreBusyError
from korag.settings import Settings
from korag.store import store_session
from workers.app import app

log = get_task_logger(__name__)


@cache
def _settings() -> Settings:
    configured = getattr(app.conf, "korag_settings", None)
    return configured if configured is not None else Settings()


@cache
def _embedder() -> Embedder:
    return Embedder.load(_settings())


def ingest_blob(
    settings: Settings, embedder: Embedder, blob: str, filename: str, source: str, doc_id: str | None, info: DocumentInfo
) -> dict:
    """The plain function behind the task: read the blob, run the pipeline, return the result."""
    data = BlobStore(settings.blobs_path).get(blob)
    with store_session(settings) as store:
        result = Pipeline.build(embedder, store, settings).ingest_bytes(data, filename, source, doc_id, info)
    return result.to_json()


@app.task(
    name="korag.ingest_document",
    autoretry_for=(StoreBusyError,),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=20,
)
def ingest_document(
    blob: str,
    filename: str,
    source: str,
    doc_id: str | None = None,
    tenant: str | None = None,
    meta: dict[str, str] | None = None,
) -> dict:
    log.info("ingesting %s (blob %s)", source, blob[:12])
    info = DocumentInfo(tenant=tenant, meta=tuple((meta or {}).items()))
    return ingest_blob(_settings(), _embedder(), blob, filename, source, doc_id, info)
