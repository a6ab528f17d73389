"""Find documents left unfinished (queued, parsing, embedding) longer than any task may run,
and send them again, or, without a broker or stored content, mark them failed. A document
found mid-flight counts as one interruption of its worker (see ``note_interruption``). A
document already parsed (its prepared file is there) goes straight back to the embed queue.

What is sent again waits ``RESEND_DELAY_S`` before it runs: the sweep runs as a worker starts,
and a worker that took a document which may crash it again at once would not answer a health
check (``celery inspect ping``; a solo worker is deaf while it runs a task) until it finished."""

from __future__ import annotations

import time

from celery import Celery

from ingest.stages import PreparedStore
from korag.messages import EmbedMessage, IngestMessage
from korag.services.lifecycle import reap_dead_owners
from korag.services.queue_client import send, send_embed
from korag.settings import Settings
from korag.storage.registry import (
    MID_FLIGHT,
    UNFINISHED,
    DocumentRecord,
    DocumentRegistry,
    note_interruption,
)

RESEND_DELAY_S = 5.0


def sweep(registry: DocumentRegistry, app: Celery | None, settings: Settings, now: float | None = None) -> list[DocumentRecord]:
    cutoff = (now if now is not None else time.time()) - settings.sweep_age_s
    prepared = PreparedStore.from_settings(settings)
    swept = reap_dead_owners(registry)  # an in-process ingest that died: no need to wait
    for status in UNFINISHED:
        for record in registry.all(status):
            if record.updated_at > cutoff:
                continue
            if record.status in MID_FLIGHT and note_interruption(registry, record, settings.max_crashes):
                swept.append(record)  # now failed: it took a worker down every time
                continue
            if app is not None and record.blob and record.filename:
                record.status = "queued"
                if not registry.write(record):
                    continue
                parsed = prepared.get(record.request) if prepared.exists(record.request) else None
                if parsed is not None:
                    send_embed(app, EmbedMessage(prepared=record.request, doc_id=record.doc_id, source=record.source,
                                                 tenant=record.tenant, chunks=len(parsed["chunks"]),
                                                 seq=record.seq or 0), countdown=RESEND_DELAY_S)
                else:
                    send(app, IngestMessage(blob=record.blob, filename=record.filename, source=record.source,
                                            doc_id=record.doc_id, tenant=record.tenant,
                                            meta=tuple(record.meta.items()), request=record.request, seq=record.seq),
                         countdown=RESEND_DELAY_S)
            else:
                record.status = "failed"
                record.error = "interrupted: the process ingesting it ended before it finished; ingest it again"
                if not registry.write(record):
                    continue
            swept.append(record)
    return swept
