"""Deleting a document from storage: its chunks, and its record replaced by a tombstone. The one
deletion every way in goes through (the service and the CLI add the blob release, webhook and
metric on top, in :mod:`korag.services`; the LangChain store calls it directly)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from korag.ids import new_seq
from korag.storage.registry import DELETED, DocumentRecord, DocumentRegistry
from korag.storage.store import QdrantStore


@dataclass(frozen=True)
class Deletion:
    doc_id: str
    known: bool  # the registry knew the document
    deleted_chunks: int
    replaced: DocumentRecord | None = None  # the record the tombstone replaced (its blob, its request)


def delete_document(store: QdrantStore, registry: DocumentRegistry, doc_id: str) -> Deletion:
    """Delete a document and every chunk of it. The deletion is a request like an ingest: it
    takes the document over and leaves a tombstone, so an ingest already queued or running for
    it finds itself superseded and cannot bring the document back. An ingest made after the
    deletion is newer and indexes the document again. Uploaded bytes are the caller's
    (:func:`korag.services.lifecycle.delete_document` releases them)."""
    current = registry.get(doc_id, include_deleted=True)
    known = current is not None and current.status != DELETED
    seq = new_seq()
    if current is not None:
        tombstone = DocumentRecord(doc_id=doc_id, source=current.source, status=DELETED, tenant=current.tenant,
                                   request=uuid.uuid4().hex, seq=seq, created_at=current.created_at)
        if not registry.claim(tombstone):  # a newer ingest started after this deletion: it wins
            return Deletion(doc_id, known, 0)
    deleted = store.delete_document(doc_id, before_seq=seq)
    return Deletion(doc_id, known or deleted > 0, deleted, current)
