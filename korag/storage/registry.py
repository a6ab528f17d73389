"""Durable per-document state: one payload-only Qdrant collection beside the chunks.

It lives in the same Qdrant (embedded directory or server) as the chunks, so it survives a
restart of any process and is visible to every worker and client, with no further service.

States: queued → parsing → embedding → indexed, or failed (with the reason). A record also
keeps what is needed to run the document again (blob digest, file name, tenant, metadata).

**Ownership.** Every ingest (and every deletion) is a *request* with a sequence number taken
when it was made (``new_seq``: nanoseconds). The newest request owns the document:
:meth:`DocumentRegistry.claim` takes ownership only from an older request, and every later
write of the owner is a compare-and-set on its request id (:meth:`DocumentRegistry.write`), done
by Qdrant itself with a conditional upsert (``update_filter``), so it holds across processes and
machines. A request that lost ownership learns it at its next write and stops; it never
overwrites the newer request's record. A deletion is a request too: it leaves a *tombstone*
record (status ``deleted``, hidden from listings) so that messages already queued for the
document find themselves superseded instead of bringing it back.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from qdrant_client import QdrantClient, models

from korag.ids import DOCUMENT_NAMESPACE, document_id, legacy_id
from korag.types import DocumentState, Lost

UNFINISHED = tuple(s for s in DocumentState if s.unfinished)
MID_FLIGHT = tuple(s for s in DocumentState if s.mid_flight)
DELETED = DocumentState.DELETED  # a tombstone: the document was deleted; hidden from get() and all()
STATES = tuple(s for s in DocumentState if s is not DELETED)  # what a listing can show
_NAMESPACE = uuid.UUID("9a3c9a48-2f57-4d0e-8d0f-6b6f7261670c")
def this_process() -> str:
    """Who runs an in-process ingest: ``host:pid``, so a later run can tell it died."""
    return f"{socket.gethostname()}:{os.getpid()}"


def process_alive(owner: str | None) -> bool | None:
    """Is the process named by :func:`this_process` still running? None: cannot tell (another host)."""
    if not owner:
        return None
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class DocumentRecord:
    doc_id: str
    source: str
    status: DocumentState  # a plain stored string is turned into its member
    tenant: str | None = None
    version: int = 0  # increments each time new content is indexed
    content_hash: str | None = None  # of the indexed version
    chunks: int = 0
    error: str | None = None
    crashes: int = 0  # deliveries that found the document mid-flight (a worker died on it)
    request: str | None = None  # the request that owns the document (newest wins)
    seq: int | None = None  # the owning request's sequence number
    attempt: str | None = None  # "request:retries" of the delivery working on it (a retry is not a crash)
    owner: str | None = None  # host:pid of an in-process ingest, to tell a dead one
    indexed_seq: int | None = None  # ingest_seq of the indexed version's chunks
    settings_key: str | None = None  # the chunk-shaping settings the indexed version was made with
    blob: str | None = None
    filename: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    indexed_at: float | None = None

    def __post_init__(self) -> None:
        try:
            self.status = DocumentState(self.status)
        except ValueError:
            raise ValueError(f"unknown document status {self.status!r}") from None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": str(self.status)}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "DocumentRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})


def _match(key: str, value: Any) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


class DocumentRegistry:
    def __init__(self, client: QdrantClient, collection: str) -> None:
        self.client = client
        self.collection = f"{collection}-documents"
        self._ensured = False

    @staticmethod
    def _id(doc_id: str) -> str:
        return str(uuid.uuid5(_NAMESPACE, doc_id))

    def ensure(self) -> None:
        if self._ensured:
            return
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(self.collection, vectors_config={})
        self._ensured = True

    # -- reads ------------------------------------------------------------------------------------
    def get(self, doc_id: str, include_deleted: bool = False) -> DocumentRecord | None:
        if not self._ensured and not self.client.collection_exists(self.collection):
            return None
        found = self.client.retrieve(self.collection, [self._id(doc_id)], with_payload=True)
        if not found:
            return None
        record = DocumentRecord.from_payload(found[0].payload)
        return record if include_deleted or record.status != DELETED else None

    def refers_to_blob(self, digest: str) -> bool:
        """Does any record (of any status, a queued newer version included) refer to blob ``digest``?"""
        if not self.client.collection_exists(self.collection):
            return False
        found, _ = self.client.scroll(self.collection, limit=1, with_payload=False,
                                      scroll_filter=models.Filter(must=[_match("blob", digest)]))
        return bool(found)

    def all(self, status: DocumentState | str | None = None) -> Iterator[DocumentRecord]:
        if not self.client.collection_exists(self.collection):
            return
        condition = models.Filter(must=[_match("status", str(status))]) if status is not None else None
        offset = None
        while True:
            points, offset = self.client.scroll(self.collection, scroll_filter=condition, limit=256, offset=offset)
            for point in points:
                record = DocumentRecord.from_payload(point.payload or {})
                if record.status != DELETED:
                    yield record
            if offset is None:
                return

    # -- writes -----------------------------------------------------------------------------------
    def _upsert(self, record: DocumentRecord, condition: models.Filter | None) -> None:
        self.ensure()
        record.updated_at = time.time()
        self.client.upsert(
            self.collection,
            points=[models.PointStruct(id=self._id(record.doc_id), vector={}, payload=record.to_json())],
            update_filter=condition,
            wait=True,
        )

    def put(self, record: DocumentRecord) -> DocumentRecord:
        """Unconditional write: for records no request owns (tests, migration)."""
        self._upsert(record, None)
        return record

    def claim(self, record: DocumentRecord) -> bool:
        """Make ``record.request`` (with ``record.seq``) the owner, unless a newer request
        already owns the document. Returns whether it now owns it."""
        if record.request is None or record.seq is None:
            raise ValueError("a claim needs a request id and a sequence number")
        older = models.Filter(should=[
            models.FieldCondition(key="seq", range=models.Range(lt=record.seq)),
            models.IsEmptyCondition(is_empty=models.PayloadField(key="seq")),
            models.IsNullCondition(is_null=models.PayloadField(key="seq")),
        ])
        self._upsert(record, older)
        return self.owns(record.doc_id, record.request)

    def write(self, record: DocumentRecord) -> bool:
        """Compare-and-set: write ``record`` only while its request still owns the document.
        Returns False (and writes nothing) when a newer request took it over. A record no request
        owns (written by a korag before requests existed) is written as it is."""
        if record.request is None:
            self._upsert(record, None)
            return True
        self._upsert(record, models.Filter(must=[_match("request", record.request)]))
        return self.owns(record.doc_id, record.request)

    def write_many(self, records: list[DocumentRecord]) -> list[bool]:
        """:meth:`write` for many records in two calls instead of two per record: one conditional
        upsert in which each record's point is replaced only while its own request still owns
        it (a ``should`` of per-point conditions: the point's id and its request), then one
        read back. Returns, per record, whether it was written."""
        owned = [r for r in records if r.request is not None]
        for record in records:
            if record.request is None:  # written by a korag before requests existed: as it is
                self._upsert(record, None)
        if owned:
            self.ensure()
            now = time.time()
            for record in owned:
                record.updated_at = now
            condition = models.Filter(should=[
                models.Filter(must=[models.HasIdCondition(has_id=[self._id(r.doc_id)]), _match("request", r.request)])
                for r in owned
            ])
            self.client.upsert(
                self.collection,
                points=[models.PointStruct(id=self._id(r.doc_id), vector={}, payload=r.to_json()) for r in owned],
                update_filter=condition,
                wait=True,
            )
        current = self.get_many([r.doc_id for r in owned])
        return [record.request is None or (current.get(record.doc_id) is not None
                                            and current[record.doc_id].request == record.request)
                for record in records]

    def get_many(self, doc_ids: list[str]) -> dict[str, DocumentRecord]:
        """The records of ``doc_ids`` that exist (tombstones included), in one call."""
        if not doc_ids or (not self._ensured and not self.client.collection_exists(self.collection)):
            return {}
        found = self.client.retrieve(self.collection, [self._id(d) for d in dict.fromkeys(doc_ids)], with_payload=True)
        records = (DocumentRecord.from_payload(point.payload) for point in found)
        return {record.doc_id: record for record in records}

    def doc_id_for(self, source: str, tenant: str | None = None) -> str:
        """The id of tenant's document ``source``: the legacy id a stored document of exactly this
        tenant and source already has (so its record, chunks and id keep working, nothing is
        rewritten), else :func:`document_id`."""
        legacy = legacy_id(DOCUMENT_NAMESPACE, tenant, source)
        return self.keep_legacy(legacy, document_id(source, tenant),
                                lambda record: record.tenant == tenant and record.source == source)

    def keep_legacy(self, legacy: str | None, new: str, same: Callable[[DocumentRecord], bool]) -> str:
        """``legacy`` when a record (a tombstone too) is stored under it and ``same`` says it is
        this document, else ``new``. A legacy id two names share belongs to the one stored first:
        the other gets its new id."""
        if legacy is None:
            return new
        record = self.get(legacy, include_deleted=True)
        return legacy if record is not None and same(record) else new

    def owns(self, doc_id: str, request: str) -> bool:
        current = self.get(doc_id, include_deleted=True)
        return current is not None and current.request == request

    def delete(self, doc_id: str) -> None:
        """Remove the record outright (tombstones included)."""
        if self.client.collection_exists(self.collection):
            self.client.delete(self.collection, points_selector=[self._id(doc_id)], wait=True)


SUPERSEDED = Lost.SUPERSEDED


def lost_reason(current: DocumentRecord | None, started: bool) -> Lost:
    """Why a request no longer owns its document (``current``: the registry's record now, tombstones
    included): the document was deleted (before or while the request ``started`` ingesting it), or
    a newer request took it over."""
    if current is not None and current.status == DELETED:
        return Lost.DELETED_WHILE_INGESTING if started else Lost.DELETED_BEFORE_INGESTING
    return Lost.SUPERSEDED


def note_interruption(registry: DocumentRegistry, record: DocumentRecord, max_crashes: int) -> bool:
    """``record`` was found mid-flight by someone who knows no worker is on it any more (a new
    delivery of the same attempt, or the sweeper): its last worker died. Count that once; past
    ``max_crashes``, fail the document. Returns True when it gave up."""
    record.crashes += 1
    gave_up = record.crashes >= max_crashes
    if gave_up:
        record.status = DocumentState.FAILED
        record.error = (
            f"gave up after {record.crashes} interrupted attempts: a worker died while processing this document "
            "each time (out of memory or a crash in a native library)"
        )
    else:
        record.status = DocumentState.QUEUED
    registry.write(record)
    return gave_up
