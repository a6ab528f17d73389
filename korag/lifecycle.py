"""Document operations that need no model: deletion (with a tombstone) and telling that an
in-process ingest died. Shared by the CLI, the workers and any other way in."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from korag.registry import (
    DELETED,
    MID_FLIGHT,
    DocumentRecord,
    DocumentRegistry,
    new_seq,
    process_alive,
)
from korag.store import QdrantStore

SUPERSEDED = "superseded by a newer ingest of this document"


def lost_reason(current: DocumentRecord | None, started: bool) -> str:
    """Why a request no longer owns its document (``current``: the registry's record now, tombstones
    included): the document was deleted (before or while the request ``started`` ingesting it), or
    a newer request took it over."""
    if current is not None and current.status == DELETED:
        return "deleted while it was being ingested" if started else "deleted before it was ingested"
    return SUPERSEDED


def queue_request(registry: DocumentRegistry, doc_id: str, source: str, filename: str, blob: str,
                  tenant: str | None, meta: dict) -> tuple[str, int] | None:
    """Record a document as ``queued`` under a new request that now owns it (any older request,
    queued or running, is superseded). Returns ``(request id, seq)`` for the task message, or
    None when an even newer request got there first."""
    request, seq = uuid.uuid4().hex, new_seq()
    current = registry.get(doc_id, include_deleted=True)
    record = current if current is not None and current.status != DELETED else DocumentRecord(
        doc_id=doc_id, source=source, status="queued")
    record.status, record.blob, record.filename, record.request, record.seq = "queued", blob, filename, request, seq
    record.source, record.tenant, record.meta, record.crashes = source, tenant, dict(meta), 0
    record.attempt, record.owner = None, None
    return (request, seq) if registry.claim(record) else None


@dataclass(frozen=True)
class Deletion:
    doc_id: str
    known: bool  # the registry knew the document
    deleted_chunks: int


def delete_document(store: QdrantStore, registry: DocumentRegistry, doc_id: str) -> Deletion:
    """Delete a document and every chunk of it. The deletion is a request like an ingest: it
    takes the document over and leaves a tombstone, so an ingest already queued or running for
    it finds itself superseded and cannot bring the document back. An ingest made after the
    deletion is newer and indexes the document again."""
    current = registry.get(doc_id, include_deleted=True)
    known = current is not None and current.status != DELETED
    seq = new_seq()
    if current is not None:
        tombstone = DocumentRecord(doc_id=doc_id, source=current.source, status=DELETED, tenant=current.tenant,
                                   request=uuid.uuid4().hex, seq=seq, created_at=current.created_at)
        if not registry.claim(tombstone):  # a newer ingest started after this deletion: it wins
            return Deletion(doc_id, known, 0)
    deleted = store.delete_document(doc_id, before_seq=seq)
    return Deletion(doc_id, known or deleted > 0, deleted)


def reap_dead_owners(registry: DocumentRegistry) -> list[DocumentRecord]:
    """Documents an in-process ingest on this machine left mid-flight when its process died
    (killed, out of memory): nothing else can be working on them, so they are failed now
    instead of waiting for the sweep age. Returns them."""
    reaped = []
    for status in MID_FLIGHT:
        for record in registry.all(status):
            if record.owner is None or process_alive(record.owner) is not False:
                continue
            pid = record.owner.rpartition(":")[2]
            record.status = "failed"
            record.error = (f"interrupted: the korag process ingesting it (pid {pid}) ended before it finished; "
                            "ingest it again")
            if registry.write(record):
                reaped.append(record)
    return reaped
