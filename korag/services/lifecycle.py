"""Document operations that need no model: queueing, deletion (with a tombstone, its webhook and
metric), recovering what a dead process left unfinished, and keeping the blob store to what the
registry refers to. Shared by the CLI, the service, the workers and any other way in."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from korag.ids import new_seq
from korag.services.events import Webhooks, deletion_event
from korag.services.telemetry import Metrics
from korag.storage import documents
from korag.storage.blobs import BlobStore
from korag.storage.documents import Deletion
from korag.storage.registry import (
    DELETED,
    MID_FLIGHT,
    UNFINISHED,
    DocumentRecord,
    DocumentRegistry,
    lost_reason,
    note_interruption,
    process_alive,
)
from korag.storage.store import QdrantStore
from korag.types import DocumentState, IngestResult, Lost

log = logging.getLogger("korag.lifecycle")

Alive = Callable[[str], bool | None]  # a process (host:pid) → alive, dead, or None: cannot tell
STALE_S = 3600.0  # a temp file or pin untouched this long has no live writer, whoever wrote it

def queue_request(registry: DocumentRegistry, doc_id: str, source: str, filename: str, blob: str,
                  tenant: str | None, meta: dict, blobs: BlobStore | None = None) -> tuple[str, int] | None:
    """Record a document as ``queued`` under a new request that now owns it (any older request,
    queued or running, is superseded). Returns ``(request id, seq)`` for the task message, or
    None when an even newer request got there first. With ``blobs``, what only the replaced
    request referred to (its blob, its prepared file) is removed."""
    request, seq = uuid.uuid4().hex, new_seq()
    current = registry.get(doc_id, include_deleted=True)
    before = (current.blob, current.request) if current is not None else (None, None)
    record = current if current is not None and current.status != DELETED else DocumentRecord(
        doc_id=doc_id, source=source, status=DocumentState.QUEUED)
    record.status, record.blob, record.filename, record.request, record.seq = DocumentState.QUEUED, blob, filename, request, seq
    record.source, record.tenant, record.meta, record.crashes = source, tenant, dict(meta), 0
    record.attempt, record.owner = None, None
    if not registry.claim(record):
        return None
    if blobs is not None:
        old_blob, old_request = before
        _release_replaced(blobs, registry, old_blob if old_blob != blob else None, old_request)
    return request, seq


def delete_document(store: QdrantStore, registry: DocumentRegistry, doc_id: str,
                    blobs: BlobStore | None = None, *, webhooks: Webhooks | None = None,
                    metrics: Metrics | None = None) -> Deletion:
    """The one deletion of every entry point (``DELETE /documents/{id}``, ``korag delete``):
    :func:`korag.storage.documents.delete_document` (chunks gone, a tombstone left); with
    ``blobs`` the uploaded bytes too (unless another document has the same bytes) and the prepared
    chunks of a queued request; and, for a document the registry knew, the ``document.deleted``
    webhook and the ``deleted`` document metric."""
    record = registry.get(doc_id)
    deletion = documents.delete_document(store, registry, doc_id)
    if blobs is not None and deletion.replaced is not None:
        _release_replaced(blobs, registry, deletion.replaced.blob, deletion.replaced.request)
    if record is not None:
        if metrics is not None:
            metrics.record_document(DocumentState.DELETED)
        if webhooks is not None:
            webhooks.emit(*deletion_event(doc_id, record.source, record.tenant, deletion.deleted_chunks))
    return deletion


# -- blob retention ---------------------------------------------------------------------------------
def _stale(owner: str, age_s: float) -> bool:
    """A temp file or pin whose writer is gone: its process ended (this host) or it is old."""
    return age_s > STALE_S or process_alive(owner) is False


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def release_blob(blobs: BlobStore, registry: DocumentRegistry, digest: str | None) -> bool:
    """Remove blob ``digest`` when nothing needs it any more: no live writer pins it and no record
    refers to it. Pins are read before records (a writer claims its record before it unpins), all
    under the store's lock, so an upload of the same bytes never loses its blob. Returns whether
    it was removed."""
    if not digest or not blobs.has(digest):
        return False
    with blobs.lock():
        for pin, owner in list(blobs.pins(digest)):
            if not _stale(owner, _age(pin)):
                return False
            blobs.unpin(pin)
        if registry.refers_to_blob(digest):
            return False
        return blobs.remove(digest)


def release_upload(blobs: BlobStore, registry: DocumentRegistry, digest: str | None, pin: Path | None) -> bool:
    """An upload's request is over (its record claimed, or the request refused or failed): drop
    its pin, and its blob when no record refers to it."""
    blobs.unpin(pin)
    return release_blob(blobs, registry, digest)


def _release_replaced(blobs: BlobStore, registry: DocumentRegistry, digest: str | None, request: str | None) -> None:
    """A record stopped referring to ``digest`` and ``request`` (a new version or a deletion took over)."""
    if request is not None:
        drop_prepared(blobs, request)
    release_blob(blobs, registry, digest)


def drop_prepared(blobs: BlobStore, request: str) -> None:
    """The prepared chunks a parse worker left for ``request`` (``<blobs>/prepared/<request>.json``)."""
    if request.isalnum():
        (blobs.prepared / f"{request}.json").unlink(missing_ok=True)


@dataclass(frozen=True)
class Swept:
    blobs: int = 0
    prepared: int = 0
    temp_files: int = 0


def sweep_blobs(blobs: BlobStore, registry: DocumentRegistry) -> Swept:
    """At start: remove what no record refers to and no live writer holds: temp files and pins of
    dead writers, prepared files of requests that own nothing, blobs of no record."""
    temps = 0
    for path, owner, age in list(blobs.temp_files()):
        if _stale(owner, age):
            path.unlink(missing_ok=True)
            temps += 1
    with blobs.lock():
        pinned = set()
        for pin, owner in list(blobs.pins()):
            if _stale(owner, _age(pin)):
                blobs.unpin(pin)
            else:
                pinned.add(pin.name.partition(".")[0])
        referenced, requests = set(), set()  # pins were read first: a writer claims its record before it unpins
        for record in registry.all():  # tombstones refer to nothing
            referenced.add(record.blob)
            if record.status in UNFINISHED:
                requests.add(record.request)
        removed = sum(blobs.remove(d) for d in list(blobs.digests()) if d not in referenced and d not in pinned)
    prepared = 0
    if blobs.prepared.is_dir():
        for path in list(blobs.prepared.glob("*.json")):
            if path.stem not in requests:
                path.unlink(missing_ok=True)
                prepared += 1
    if removed or prepared or temps:
        log.info("blob store: removed %d blob(s), %d prepared file(s) and %d temp file(s) no document refers to",
                 removed, prepared, temps)
    return Swept(removed, prepared, temps)


def interrupted(owner: str | None = None) -> str:
    """The error of a document whose ingest ended without an outcome (its process died, or
    stopped); ``owner``: the in-process ingest's ``host:pid``, when known."""
    pid = f" (pid {owner.rpartition(':')[2]})" if owner else ""
    return f"interrupted: the korag process ingesting it{pid} ended before it finished; ingest it again"


def worker_owned(record: DocumentRecord) -> bool:
    """Held by a queue worker's delivery (it records its ``attempt``), not by an in-process ingest."""
    return record.attempt is not None


def stalled(record: DocumentRecord, alive: Alive = process_alive) -> bool:
    """Mid-flight (parsing, embedding) under a process that is gone: nobody is working on it.
    ``alive``: owner → True, False, or None when it cannot be told (then it is not stalled)."""
    return record.status in MID_FLIGHT and record.owner is not None and alive(record.owner) is False


def reap_dead_owners(registry: DocumentRegistry) -> list[DocumentRecord]:
    """Documents an in-process ingest on this machine left mid-flight when its process died
    (killed, out of memory): nothing else can be working on them, so they are failed now
    instead of waiting for the sweep age. Returns them. A dead queue worker's documents are
    not failed: :func:`recover` sends them again."""
    reaped = []
    for status in MID_FLIGHT:
        for record in list(registry.all(status)):
            if worker_owned(record) or not stalled(record):
                continue
            record.status, record.error = DocumentState.FAILED, interrupted(record.owner)
            if registry.write(record):
                reaped.append(record)
    return reaped


def has_content(record: DocumentRecord) -> bool:
    """The record names the bytes (a blob and a file name) it can be ingested again from."""
    return bool(record.blob and record.filename)


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover` did: documents recorded ``queued`` again, for the caller to send again,
    and documents it failed. Only records whose write took effect (still owned by the request
    they were found under) are listed."""

    resend: tuple[DocumentRecord, ...] = ()
    failed: tuple[DocumentRecord, ...] = ()


def recover(registry: DocumentRegistry, *, max_crashes: int, resendable: Callable[[DocumentRecord], bool],
            stale_after_s: float | None = None, now: float | None = None, alive: Alive = process_alive) -> Recovery:
    """The one routine that decides what became of documents left unfinished, for every kind of
    process that recovers them (a worker's start and ``korag sweep`` through
    :func:`workers.sweeper.sweep`, ``korag serve``'s embedded queue at its start); the callers
    only send again what it queued (each its own way: the same request to Celery, a new request
    in-process).

    - mid-flight under an in-process ingest on this machine whose process died: failed at once;
    - otherwise unfinished and not updated for ``stale_after_s`` seconds (None: every unfinished
      document, for a process that holds the store alone, so nothing else can be working on it):
      lost. So is one mid-flight under a worker process that ``alive`` says is gone
      (:func:`stalled`), however young: a dead worker's documents go back within a sweep, not
      after the age (a document whose owner is alive, or cannot be told, waits for the age).
      One found mid-flight counts one interruption of its worker
      (:func:`korag.storage.registry.note_interruption`): past ``max_crashes`` it is failed;
      else it is recorded ``queued`` again when ``resendable`` (its content can be sent again),
      and failed when not.

    Two processes recovering at once would both find a lost document and send it twice (the
    compare-and-set is on the owning request, which a recovery does not change): the workers'
    periodic sweeps take turns (:mod:`workers.heartbeat`)."""
    failed = reap_dead_owners(registry)
    cutoff = None if stale_after_s is None else (now if now is not None else time.time()) - stale_after_s
    found = {record.doc_id: record for status in UNFINISHED for record in registry.all(status)}  # one snapshot
    resend = []
    for record in found.values():
        if cutoff is not None and record.updated_at > cutoff and not stalled(record, alive):
            continue  # maybe still running
        record.owner = None  # nobody holds it any more; the next delivery names its own process
        if record.status in MID_FLIGHT and note_interruption(registry, record, max_crashes):
            failed.append(record)  # it took a worker down every time
            continue
        if resendable(record):
            record.status = DocumentState.QUEUED
            if registry.write(record):
                resend.append(record)
        else:
            record.status, record.error = DocumentState.FAILED, interrupted()
            if registry.write(record):
                failed.append(record)
    return Recovery(tuple(resend), tuple(failed))


def registry_outcome(record: DocumentRecord | None, source: str, doc_id: str, request: str | None,
                     before: tuple[int, str | None]) -> IngestResult | None:
    """What became of the ingest ``request`` of a document, as the registry tells it (``record``:
    the registry's record now, tombstones included): the registry is the truth, whatever a
    queue's result said. None while the request still owns the document unfinished. ``before``:
    the indexed version and content hash when the request was made, to tell ``unchanged``."""
    if record is None or record.status == DELETED or record.request != request:
        # no record at all: deleted and its tombstone gone
        why = Lost.DELETED_WHILE_INGESTING if record is None else lost_reason(record, started=True)
        return IngestResult(source, doc_id, "failed", error=why)
    if record.status == DocumentState.FAILED:
        return IngestResult(source, doc_id, "failed", error=record.error)
    if record.status == DocumentState.INDEXED:
        same = (record.version, record.content_hash) == before
        return IngestResult(source, doc_id, "unchanged" if same else "indexed", chunks=record.chunks)
    return None
