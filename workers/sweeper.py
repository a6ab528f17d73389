"""Find documents left unfinished (queued, parsing, embedding) longer than any task may run,
and send them again, or, without a broker or stored content, mark them failed."""

from __future__ import annotations

import time

from celery import Celery

from korag.registry import UNFINISHED, DocumentRecord, DocumentRegistry
from korag.settings import Settings
from workers.client import send


def sweep(registry: DocumentRegistry, app: Celery | None, settings: Settings, now: float | None = None) -> list[DocumentRecord]:
    cutoff = (now if now is not None else time.time()) - settings.sweep_age_s
    swept = []
    for status in UNFINISHED:
        for record in registry.all(status):
            if record.updated_at > cutoff:
                continue
            if app is not None and record.blob and record.filename:
                record.status = "queued"
                registry.put(record)
                send(app, record.blob, record.filename, record.source, record.doc_id, record.tenant, record.meta)
            else:
                record.status = "failed"
                record.error = "interrupted: the process ingesting it ended before it finished; ingest it again"
                registry.put(record)
            swept.append(record)
    return swept
