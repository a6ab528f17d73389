"""Durable per-document state: one payload-only Qdrant collection beside the chunks.

It lives in the same Qdrant (embedded directory or server) as the chunks, so it survives a
restart of any process and is visible to every worker and client, with no further service.

States: queued → parsing → embedding → indexed, or failed (with the reason). A record also
keeps what is needed to run the document again (blob digest, file name, tenant, metadata).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from qdrant_client import QdrantClient, models

UNFINISHED = ("queued", "parsing", "embedding")
STATES = (*UNFINISHED, "indexed", "failed")
_NAMESPACE = uuid.UUID("9a3c9a48-2f57-4d0e-8d0f-6b6f7261670c")


@dataclass
class DocumentRecord:
    doc_id: str
    source: str
    status: str
    tenant: str | None = None
    version: int = 0  # increments each time new content is indexed
    content_hash: str | None = None  # of the indexed version
    chunks: int = 0
    error: str | None = None
    crashes: int = 0  # deliveries that found the document mid-flight (a worker died on it)
    request: str | None = None  # the queued request being worked on; redeliveries carry the same id
    blob: str | None = None
    filename: str | None = None
    meta: dict[str, str] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    indexed_at: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATES:
            raise ValueError(f"unknown document status {self.status!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "DocumentRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})


class DocumentRegistry:
    def __init__(self, client: QdrantClient, collection: str) -> None:
        self.client = client
        self.collection = f"{collection}-documents"

    @staticmethod
    def _id(doc_id: str) -> str:
        return str(uuid.uuid5(_NAMESPACE, doc_id))

    def ensure(self) -> None:
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(self.collection, vectors_config={})

    def get(self, doc_id: str) -> DocumentRecord | None:
        if not self.client.collection_exists(self.collection):
            return None
        found = self.client.retrieve(self.collection, [self._id(doc_id)], with_payload=True)
        return DocumentRecord.from_payload(found[0].payload) if found else None

    def put(self, record: DocumentRecord) -> DocumentRecord:
        self.ensure()
        record.updated_at = time.time()
        self.client.upsert(
            self.collection,
            points=[models.PointStruct(id=self._id(record.doc_id), vector={}, payload=record.to_json())],
            wait=True,
        )
        return record

    def update(self, doc_id: str, **changes: Any) -> DocumentRecord:
        record = self.get(doc_id)
        if record is None:
            raise KeyError(doc_id)
        for key, value in changes.items():
            if not hasattr(record, key):
                raise AttributeError(key)
            setattr(record, key, value)
        if record.status not in STATES:
            raise ValueError(f"unknown document status {record.status!r}")
        return self.put(record)

    def delete(self, doc_id: str) -> None:
        if self.client.collection_exists(self.collection):
            self.client.delete(self.collection, points_selector=[self._id(doc_id)], wait=True)

    def all(self, status: str | None = None) -> Iterator[DocumentRecord]:
        if not self.client.collection_exists(self.collection):
            return
        condition = (
            models.Filter(must=[models.FieldCondition(key="status", match=models.MatchValue(value=status))])
            if status is not None
            else None
        )
        offset = None
        while True:
            points, offset = self.client.scroll(self.collection, scroll_filter=condition, limit=256, offset=offset)
            for point in points:
                yield DocumentRecord.from_payload(point.payload or {})
            if offset is None:
                return


MID_FLIGHT = ("parsing", "embedding")


def note_interruption(registry: DocumentRegistry, record: DocumentRecord, max_crashes: int) -> bool:
    """``record`` was found mid-flight by someone who knows no worker is on it any more (a new
    delivery, or the sweeper): its last worker died. Count that once; past ``max_crashes``,
    fail the document. Returns True when it gave up."""
    record.crashes += 1
    gave_up = record.crashes >= max_crashes
    if gave_up:
        record.status = "failed"
        record.error = (
            f"gave up after {record.crashes} interrupted attempts: a worker died while processing this document "
            "each time (out of memory or a crash in a native library)"
        )
    else:
        record.status = "queued"
    registry.put(record)
    return gave_up
