"""Send again, through the Celery queue, what :func:`korag.services.lifecycle.recover` finds lost:
documents left unfinished (queued, parsing, embedding) longer than any task may run, or left
mid-flight by a worker process that is gone (:mod:`korag.services.liveness`). Run by every
worker as it starts and then periodically (:mod:`workers.heartbeat`), and by ``korag sweep``.
Which documents are lost, and which of them fail instead (a dead in-process owner, too many
interrupted attempts, no broker or no stored content), is decided there; this module only
re-sends: a document already parsed (its prepared file is there) goes straight back to the embed
queue, the others to the parse queue, each under its own request and with its tenant.

What is sent again waits ``RESEND_DELAY_S`` before it runs: the sweep runs as a worker starts,
and a worker that took a document which may crash it again at once would not answer a health
check (``celery inspect ping``; a solo worker is deaf while it runs a task) until it finished."""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery

from ingest.stages import PreparedStore
from korag.messages import EmbedMessage, IngestMessage
from korag.services.lifecycle import has_content, recover
from korag.services.liveness import Liveness, owner_alive
from korag.services.queue_client import send, send_embed
from korag.settings import Settings
from korag.storage.registry import DocumentRecord, DocumentRegistry

RESEND_DELAY_S = 5.0


def sweep(registry: DocumentRegistry, app: Celery | None, settings: Settings, now: float | None = None,
          liveness: Liveness | None = None) -> list[DocumentRecord]:
    """Recover what is lost and send it again; returns every document it changed (re-sent or
    failed). ``liveness``: the workers' beats, so that a dead worker's documents are lost at once
    (without: only a process on this machine can be told dead)."""
    recovery = recover(registry, max_crashes=settings.max_crashes, stale_after_s=settings.sweep_age_s, now=now,
                       resendable=lambda record: app is not None and has_content(record),
                       alive=lambda owner: owner_alive(liveness, owner))
    resend(app, settings, recovery.resend)
    return [*recovery.failed, *recovery.resend]


def resend(app: Celery, settings: Settings, records: Iterable[DocumentRecord]) -> None:
    """Send each recorded ``queued`` document again under its own request: to the embed queue
    when it was parsed already (its prepared file is there), else to the parse queue. Also used by
    ``korag ingest --wait`` for documents whose message the broker lost with its data."""
    prepared = PreparedStore.from_settings(settings)
    for record in records:
        parsed = prepared.get(record.request) if prepared.exists(record.request) else None
        if parsed is not None:
            send_embed(app, EmbedMessage(prepared=record.request, doc_id=record.doc_id, source=record.source,
                                         tenant=record.tenant, chunks=len(parsed["chunks"]), seq=record.seq or 0),
                       countdown=RESEND_DELAY_S)
        else:
            send(app, IngestMessage(blob=record.blob, filename=record.filename, source=record.source,
                                    doc_id=record.doc_id, tenant=record.tenant, meta=tuple(record.meta.items()),
                                    request=record.request, seq=record.seq),
                 countdown=RESEND_DELAY_S)
