"""The ingestion pipeline as plain functions over passed-in parts: parse → chunk → embed → upsert,
with the document's state kept in the registry at each step.

One document on its own goes through :meth:`Pipeline.ingest_bytes`; many (the CLI, the
embedded service, the Celery stages) through :mod:`ingest.batch` and :mod:`ingest.stages`, which
start documents from :mod:`ingest.starters` and call the same steps: :meth:`Pipeline.begin`,
:meth:`Pipeline.reject`, :meth:`Pipeline.mark_embedding`, :meth:`Pipeline.embed_and_settle`,
:meth:`Pipeline.settle_many`.

Every run is a :class:`Request` that must own the document in the registry (the newest request
wins, see :mod:`korag.storage.registry`). Each state write is a compare-and-set on the request; chunks
carry the request's sequence number (``ingest_seq``) and point ids derived from the request, so
versions never overwrite each other. Only the owner, after recording its version as indexed,
removes chunks of *older* requests; a request that lost the document removes its own chunks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import stat
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from ingest.chunking import Chunker, ChunkingOptions
from ingest.embedder import Embedder
from ingest.parsing import OcrOptions, parse_document, warm_up
from ingest.parsing.guard import run_guarded
from ingest.sentences import kiwi
from ingest.sparse import SparseEncoder, SparseVector
from korag.errors import DocumentError, InputTooLongError
from korag.rules import RESERVED_FIELDS, normalize_source
from korag.settings import Settings
from korag.storage.registry import (
    DELETED,
    DocumentRecord,
    DocumentRegistry,
    lost_reason,
    this_process,
)
from korag.storage.store import SEQ_FIELD, QdrantStore, point_id
from korag.types import Chunk, DocumentInfo, IngestResult, Request, doc_id_for

log = logging.getLogger("korag.ingest")


def too_large(size: int, limit: int) -> str:
    """The reason given for a file over KORAG_MAX_FILE_BYTES, by the pipeline and the queue client."""
    return f"file of {size} bytes is over the limit of {limit} bytes (KORAG_MAX_FILE_BYTES)"


def read_document(path: str | Path, max_file_bytes: int) -> bytes:
    """A file's bytes. Raises ``ValueError`` with the reason for what korag does not read (not a
    regular file: reading a FIFO would block, a device never ends; over the size limit) and
    ``OSError`` when it cannot be read."""
    status = os.stat(path)
    if not stat.S_ISREG(status.st_mode):
        raise ValueError("not a regular file (a directory, FIFO, socket or device)")
    if status.st_size > max_file_bytes:
        raise ValueError(too_large(status.st_size, max_file_bytes))
    return Path(path).read_bytes()


def unreadable(exc: OSError | ValueError) -> str:
    """The reason a document failed in :func:`read_document`."""
    return str(exc) if isinstance(exc, ValueError) else f"cannot read file: {exc.strerror or exc}"


def chunker_for(embedder: Embedder, settings: Settings) -> Chunker:
    options = ChunkingOptions(overlap_tokens=settings.chunk_overlap_tokens, embed_header=settings.embed_section_header)
    return Chunker(embedder.passage_budget, options, embedder.section_budget)


@dataclass
class Pending:
    """A document a request owns and still has to parse, embed and record (see :meth:`Pipeline.begin`)."""

    record: DocumentRecord
    own: Request
    filename: str
    content_hash: str
    info: DocumentInfo
    in_process: bool
    data: bytes = b""  # until it is parsed
    stored: int = 0  # chunks of this version written so far, window by window (Pipeline.store_part)
    ocr: bool = False  # some chunk written so far was read by OCR (its version's key then holds the OCR options)

    @contextmanager
    def failing_on_error(self, pipeline: "Pipeline") -> Iterator[None]:
        """An unexpected error of an in-process request is recorded (nobody will retry it), then raised."""
        try:
            yield
        except Exception as exc:
            if self.in_process:
                pipeline.fail(self.record.doc_id, self.own, f"{type(exc).__name__}: {exc}")
            raise


@dataclass(frozen=True)
class ParseLimits:
    max_file_bytes: int
    timeout_s: float
    memory_bytes: int
    isolated: bool = True
    ocr: OcrOptions = OcrOptions()

    @classmethod
    def from_settings(cls, settings: Settings) -> "ParseLimits":
        ocr = OcrOptions(settings.ocr, settings.ocr_languages, settings.ocr_dpi, settings.ocr_max_pages,
                         settings.parse_memory_mb)
        return cls(settings.max_file_bytes, settings.parse_timeout_s, settings.parse_memory_mb * 1024 * 1024,
                   settings.parse_isolated, ocr)


def settings_key(embedder: Embedder, chunker: Chunker, sparse: SparseEncoder, ocr: OcrOptions | None = None) -> str:
    """A digest of everything that shapes the stored chunks and vectors: model, token limit and
    prefix, chunking options, keyword tags, compound terms, header weight and BM25
    parameters, and for a document read by OCR (``ocr`` given) the OCR mode, languages, DPI and
    page cap. Same bytes + same key = same chunks."""
    shape = {
        "model": embedder.info.name,
        "max_input_tokens": embedder.info.max_input_tokens,
        "prefix": embedder.passage_budget.prefix,
        "chunking": [chunker.options.overlap_tokens, chunker.options.embed_header, chunker.options.min_section_tokens],
        "sparse": [sorted(sparse.tags), sparse.k1, sparse.b, sparse.avg_terms, sparse.compounds,
                   sparse.header_repeat],
    }
    if chunker.section_budget.max_input_tokens != embedder.info.max_input_tokens:
        # chunks cut below the model's limit record their section runs (Chunk.parent); chunks at the
        # limit are each their own run, so a store from before runs were recorded is still current
        shape["section_tokens"] = chunker.section_budget.max_input_tokens
    if ocr is not None:
        shape["ocr"] = [ocr.mode, ocr.languages, ocr.dpi, ocr.max_pages]
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def _no_step(step: str) -> None:
    return None


def _run_step(pending: Pending, step: Callable[[], IngestResult]) -> IngestResult:
    return step()


@dataclass
class Pipeline:
    embedder: Embedder
    store: QdrantStore
    registry: DocumentRegistry
    chunker: Chunker
    sparse: SparseEncoder
    limits: ParseLimits
    on_step: Callable[[str], None] = field(default=_no_step)  # called after each step (tests interleave here)
    window_chunks: int = 1024  # a document's chunks embedded and written at a time (finish_windows)

    def __post_init__(self) -> None:
        self.settings_key = settings_key(self.embedder, self.chunker, self.sparse)
        # a version with OCR'd text is current only while the OCR options are the same too; a text
        # document's key leaves them out, so changing them re-reads scanned documents and no others
        self.ocr_settings_key = settings_key(self.embedder, self.chunker, self.sparse, self.limits.ocr)

    @classmethod
    def build(cls, embedder: Embedder, store: QdrantStore, settings: Settings) -> "Pipeline":
        store.ensure_collection(embedder.info.name, embedder.info.dimension)
        registry = DocumentRegistry(store.client, store.collection)
        registry.ensure()
        return cls(embedder, store, registry, chunker_for(embedder, settings), SparseEncoder.from_settings(settings),
                   ParseLimits.from_settings(settings), window_chunks=settings.worker_batch_chunks)

    def ingest_path(
        self, path: str | Path, source: str | None = None, doc_id: str | None = None, info: DocumentInfo | None = None
    ) -> IngestResult:
        info = info if info is not None else DocumentInfo()
        source = source if source is not None else normalize_source(str(path))
        doc_id = doc_id if doc_id is not None else doc_id_for(source, info.tenant, self.registry)
        started = self.begin_file(path, source, doc_id, info)
        return started if isinstance(started, IngestResult) else self.run(started)

    def begin_file(self, path: str | Path, source: str, doc_id: str, info: DocumentInfo) -> IngestResult | Pending:
        """:meth:`begin` for a file on disk, under a new in-process request: its bytes and its name
        (NFC: macOS spells names in NFD), or its ``failed`` outcome when it cannot be read."""
        data = self.read(path, source, doc_id)
        if isinstance(data, IngestResult):
            return data
        return self.begin(data, unicodedata.normalize("NFC", PurePath(path).name), source, doc_id, info)

    def read(self, path: str | Path, source: str, doc_id: str) -> bytes | IngestResult:
        """A file's bytes, or its ``failed`` outcome: not a regular file, over the size limit, unreadable."""
        try:
            return read_document(path, self.limits.max_file_bytes)
        except (OSError, ValueError) as exc:
            return IngestResult(source, doc_id, "failed", error=unreadable(exc))

    def ingest_bytes(
        self, data: bytes, filename: str, source: str, doc_id: str | None = None, info: DocumentInfo | None = None,
        blob: str | None = None, request: Request | None = None,
    ) -> IngestResult:
        """Index one document. These bytes already stored the way the current settings would
        store them: ``unchanged``, nothing written (a change of metadata only is written to the
        stored chunks without embedding again). A document that cannot be ingested comes back
        ``failed`` with the reason, and whatever was indexed before stays. ``request``: the queued
        request this delivery runs (it must own the document); None: a new in-process request.
        Store or model failures propagate (they are not the document's fault, and a retry may succeed)."""
        started = self.begin(data, filename, source, doc_id, info, blob, request)
        return started if isinstance(started, IngestResult) else self.run(started)

    def run(self, started: Pending) -> IngestResult:
        """A document :meth:`begin` took, to its outcome in this process: parsed (guarded),
        embedded and written a window at a time, recorded."""
        with started.failing_on_error(self):
            try:
                chunks, sparse = self._prepare(started.data, started.filename, started.record.source)
            except (DocumentError, InputTooLongError) as exc:
                return self.reject(started, exc.reason if isinstance(exc, DocumentError) else str(exc))
            started.data = b""  # parsed: the bytes are not needed any more
            return self.embed_and_settle(started, chunks, sparse, self.window_chunks)

    def begin(
        self, data: bytes, filename: str, source: str, doc_id: str | None = None, info: DocumentInfo | None = None,
        blob: str | None = None, request: Request | None = None,
    ) -> IngestResult | Pending:
        """Everything before parsing: the ``unchanged`` decision, taking ownership, the size
        limit. Returns the outcome when there is nothing to parse, else the :class:`Pending`
        document, recorded as ``parsing``."""
        info = info if info is not None else DocumentInfo()
        doc_id = doc_id if doc_id is not None else doc_id_for(source, info.tenant, self.registry)
        content_hash = hashlib.sha256(data).hexdigest()
        described = {**dict(info.meta), "source": source, "filename": filename}  # what the stored chunks must say
        in_process = request is None
        own = request if request is not None else Request.new()

        current = self.registry.get(doc_id, include_deleted=True)
        stored_meta = self._stored_meta(current, content_hash)
        if in_process and stored_meta == described and current.status == "indexed":
            return IngestResult(source, doc_id, "unchanged", chunks=current.chunks)

        record = self._take(current, own, doc_id, source, filename, info, blob, in_process)
        if record is None:
            return self._superseded(source, doc_id)
        pending = Pending(record, own, filename, content_hash, info, in_process, data)
        with pending.failing_on_error(self):
            if stored_meta is not None:
                return self._settle_stored(record, stored_meta, described)
            if in_process and (current is None or current.status == DELETED):
                # A new document: the claim itself wrote it as ``parsing`` and read back that this
                # request owns it, so a second write would change nothing (a takeover shows at the next one).
                log.info("%s: %s", source, "parsing")
                self.on_step("parsing")
            elif not self._state(record, "parsing"):
                return self._superseded(source, doc_id)
            if len(data) > self.limits.max_file_bytes:
                return self.reject(pending, self._too_large(len(data)))
        return pending

    def reject(self, pending: Pending, reason: str) -> IngestResult:
        """The document cannot be ingested: ``failed`` with the reason; the indexed version stays
        (windows of this version already written are removed)."""
        record = pending.record
        if pending.stored:
            self.store.delete_version(record.doc_id, pending.own.seq)
        if not self._state(record, "failed", error=reason):
            return self._superseded(record.source, record.doc_id)
        return IngestResult(record.source, record.doc_id, "failed", error=reason)

    def finish(self, pending: Pending, chunks: list[Chunk], sparse: list[SparseVector], vectors: Any,
               token_counts: list[int]) -> IngestResult:
        """Write the chunks (the document's last window, after :meth:`store_part` wrote the ones
        before), record the version as indexed, then delete older versions."""
        record, own = pending.record, pending.own
        doc_id, source = record.doc_id, record.source
        total = pending.stored + len(chunks)
        ids, payloads = self._points(pending, chunks, token_counts, total)
        self.store.upsert(ids, vectors, payloads, sparse)
        self.on_step("upserted")
        recorded = self._state(record, "indexed", version=record.version + 1, content_hash=pending.content_hash,
                               chunks=total, error=None, crashes=0, indexed_at=time.time(), indexed_seq=own.seq,
                               settings_key=self._key(pending))
        if not recorded:  # a newer request took over: what this one wrote is nobody's version
            self.store.delete_version(doc_id, own.seq)
            return self._superseded(source, doc_id)
        self.store.delete_older_versions(doc_id, own.seq)  # write new, then delete old
        self.on_step("cleaned")
        return IngestResult(source, doc_id, "indexed", chunks=total)

    def store_part(self, pending: Pending, chunks: list[Chunk], sparse: list[SparseVector], vectors: Any,
                   token_counts: list[int], total: int) -> IngestResult | None:
        """Write one window of a document's ``total`` chunks, before its last one: a long document
        is embedded and written a window at a time, so memory follows the window, not the
        document. The record is left as it is until :meth:`finish` of the last window records the
        version, so readers keep the indexed version until every window is stored. Returns the
        outcome instead when a newer request (or a deletion) took the document over meanwhile:
        what this request wrote is then removed."""
        record, own = pending.record, pending.own
        if not self.registry.owns(record.doc_id, own.id):
            self.store.delete_version(record.doc_id, own.seq)
            return self._superseded(record.source, record.doc_id)
        ids, payloads = self._points(pending, chunks, token_counts, total)
        self.store.upsert(ids, vectors, payloads, sparse)
        pending.stored += len(chunks)
        return None

    def finish_windows(self, pending: Pending, chunks: list[Chunk], sparse: list[SparseVector], window: int,
                       embed: Callable[[list[Chunk]], tuple[Any, list[int]]] | None = None) -> IngestResult:
        """Embed and write a document ``window`` chunks at a time (:meth:`store_part`), the last
        window through :meth:`finish`. ``embed``: the model call (default: the embedder's).
        :class:`InputTooLongError` is raised to the caller, which rejects the document."""
        embed = embed if embed is not None else self.embedder.embed_passages
        last = max(0, (len(chunks) - 1) // window * window)  # where the last window starts
        for start in range(0, last, window):
            part = slice(start, start + window)
            vectors, token_counts = embed(chunks[part])
            lost = self.store_part(pending, chunks[part], sparse[part], vectors, token_counts, len(chunks))
            if lost is not None:
                return lost
        vectors, token_counts = embed(chunks[last:])
        return self.finish(pending, chunks[last:], sparse[last:], vectors, token_counts)

    def _points(self, pending: Pending, chunks: list[Chunk], token_counts: list[int],
                total: int) -> tuple[list[str], list[dict[str, Any]]]:
        """Point ids and payloads of some of a version's ``total`` chunks."""
        record, own = pending.record, pending.own
        pending.ocr = pending.ocr or any(c.ocr_confidence is not None for c in chunks)
        payloads = [self._payload(chunk, tokens, record.doc_id, record.source, pending.filename, pending.content_hash,
                                  total, pending.info, own.seq) for chunk, tokens in zip(chunks, token_counts)]
        return [point_id(record.doc_id, c.index, own.id) for c in chunks], payloads

    def _key(self, pending: Pending) -> str:
        """The settings key of the version ``pending`` wrote (see :func:`settings_key`)."""
        return self.ocr_settings_key if pending.ocr else self.settings_key

    def finish_many(self, batch: list[tuple[Pending, list[Chunk], list[SparseVector], Any, list[int]]]) -> list[IngestResult]:
        """:meth:`finish` for many documents, ``(pending, chunks, sparse, vectors, token_counts)``
        each: one upsert of all their chunks and one registry write (see
        :meth:`DocumentRegistry.write_many`) instead of one of each per document; the same order
        (write new, record, then delete old) and the same outcome per document. An error is
        raised for the whole batch: the caller finishes the documents one by one instead (point
        ids and records are the same, so what was written is rewritten, not duplicated)."""
        ids: list[str] = []
        payloads: list[dict[str, Any]] = []
        sparse_all: list[SparseVector] = []
        for pending, chunks, sparse, _, token_counts in batch:
            some_ids, some_payloads = self._points(pending, chunks, token_counts, pending.stored + len(chunks))
            ids.extend(some_ids)
            payloads.extend(some_payloads)
            sparse_all.extend(sparse)
        vectors = np.concatenate([np.asarray(item[3]) for item in batch]) if batch else np.zeros((0, 0))
        self.store.upsert(ids, vectors, payloads, sparse_all)
        now = time.time()
        indexed = []  # new records, kept apart until written: a failed batch leaves the old ones as they were
        for pending, chunks, *_ in batch:
            self.on_step("upserted")
            log.info("%s: %s", pending.record.source, "indexed")
            indexed.append(replace(pending.record, status="indexed", version=pending.record.version + 1,
                                   content_hash=pending.content_hash, chunks=pending.stored + len(chunks), error=None,
                                   crashes=0, indexed_at=now, indexed_seq=pending.own.seq, settings_key=self._key(pending)))
        recorded = self.registry.write_many(indexed)
        results = []
        for (pending, chunks, *_), record, owned in zip(batch, indexed, recorded):
            pending.record = record
            own = pending.own
            if not owned:  # a newer request took over: what this one wrote is nobody's version
                self.store.delete_version(record.doc_id, own.seq)
                results.append(self._superseded(record.source, record.doc_id))
                continue
            self.on_step("indexed")
            self.store.delete_older_versions(record.doc_id, own.seq)  # write new, then delete old
            self.on_step("cleaned")
            results.append(IngestResult(record.source, record.doc_id, "indexed", chunks=record.chunks))
        return results

    def mark_embedding(self, pendings: list[Pending]) -> list[IngestResult | None]:
        """Record ``embedding`` for documents about to be embedded, on every path (one document,
        a batch, a queued stage), in one registry write. Per document: None while this request
        still owns it, else its outcome (a newer request or a deletion took it over)."""
        if len(pendings) == 1:
            return [self.advance(pendings[0], "embedding")]
        for pending in pendings:
            pending.record.status = "embedding"
        owned = self.registry.write_many([pending.record for pending in pendings])
        out: list[IngestResult | None] = []
        for pending, mine in zip(pendings, owned):
            record = pending.record
            if mine:
                log.info("%s: %s", record.source, "embedding")
                self.on_step("embedding")
            out.append(None if mine else self._superseded(record.source, record.doc_id))
        return out

    def embed_and_settle(self, pending: Pending, chunks: list[Chunk], sparse: list[SparseVector], window: int,
                         embed: Callable[[list[Chunk]], tuple[Any, list[int]]] | None = None) -> IngestResult:
        """One parsed document to its outcome on its own: ``embedding``, then embedded and written
        ``window`` chunks at a time (:meth:`finish_windows`); a chunk the model cannot take fails it."""
        (lost,) = self.mark_embedding([pending])
        if lost is not None:
            return lost
        try:
            return self.finish_windows(pending, chunks, sparse, window, embed)
        except InputTooLongError as exc:
            return self.reject(pending, str(exc))

    def settle_many(self, parts: list[tuple[Pending, list[Chunk], list[SparseVector], Any, list[int]]],
                    guard: Callable[[Pending, Callable[[], IngestResult]], IngestResult] | None = None
                    ) -> list[IngestResult]:
        """Write and record embedded documents (:meth:`finish_many`); when writing them at once
        fails, each on its own through ``guard(pending, step)`` (default: run it, an error is
        raised), so that a store error costs the document it belongs to."""
        try:
            return self.finish_many(parts)
        except Exception:  # noqa: BLE001 - the store failed somewhere: find where, one by one
            log.warning("writing %d documents at once failed; writing them one by one", len(parts), exc_info=True)
        guard = guard if guard is not None else _run_step
        return [guard(pending, functools.partial(self.finish, pending, chunks, sparse, vectors, counts))
                for pending, chunks, sparse, vectors, counts in parts]

    def advance(self, pending: Pending, status: str, **changes: Any) -> IngestResult | None:
        """Record the next state of a document this request works on (``embedding``; ``queued``
        when it waits for an embed worker). Returns its outcome instead when a newer request or a
        deletion took the document over meanwhile."""
        if self._state(pending.record, status, **changes):
            return None
        return self._superseded(pending.record.source, pending.record.doc_id)

    def fail(self, doc_id: str, request: Request, reason: str) -> None:
        """End ``request`` as failed (if it still owns the document) and remove what it wrote.
        For a task stopped by its time limit, or an in-process run that hit an unexpected error."""
        record = self.registry.get(doc_id, include_deleted=True)
        self.store.delete_version(doc_id, request.seq)
        if record is not None and record.request == request.id and record.status != DELETED:
            record.status, record.error = "failed", reason
            self.registry.write(record)

    # -- steps --------------------------------------------------------------------------------
    def _stored_meta(self, record: DocumentRecord | None, content_hash: str) -> dict[str, Any] | None:
        """The caller's metadata, source and file name on the stored chunks when exactly these
        bytes, processed the way the current settings would, are stored (every chunk present);
        None otherwise."""
        if record is None or record.status == DELETED or record.content_hash != content_hash:
            return None
        if record.settings_key not in (self.settings_key, self.ocr_settings_key) or not record.chunks:
            return None
        if self.store.count_version(record.doc_id, content_hash, record.indexed_seq) != record.chunks:
            return None  # chunks lost (collection deleted or damaged): ingest again
        sample = self.store.version_metadata(record.doc_id, content_hash, record.indexed_seq)
        sample = sample or {}
        return {**{k: v for k, v in sample.items() if k not in RESERVED_FIELDS},
                "source": sample.get("source"), "filename": sample.get("filename")}

    def _take(self, current: DocumentRecord | None, own: Request, doc_id: str, source: str, filename: str,
              info: DocumentInfo, blob: str | None, in_process: bool) -> DocumentRecord | None:
        """The record this request works on, owned by it; None when a newer request owns the document."""
        if in_process:
            record = current if current is not None and current.status != DELETED else None
            if record is None:
                record = DocumentRecord(doc_id=doc_id, source=source, status="parsing")
                if current is not None:  # a tombstone: start the document afresh
                    record.created_at = time.time()
            record.request, record.seq, record.owner, record.attempt = own.id, own.seq, this_process(), None
            record.source, record.filename, record.tenant, record.meta = source, filename, info.tenant, dict(info.meta)
            record.blob = blob if blob is not None else record.blob
            return record if self.registry.claim(record) else None
        if current is None or current.request != own.id or current.status == DELETED:
            return None
        current.attempt, current.owner = own.attempt, this_process()  # a worker's process: told dead by its beat
        return current

    def _settle_stored(self, record: DocumentRecord, stored: dict[str, Any], described: dict[str, Any]) -> IngestResult:
        """These bytes are stored: only the description (metadata, source, file name) may change."""
        changed = stored != described
        if changed:
            self.store.update_metadata(record.doc_id, described, [k for k in stored if k not in described])
        meta = {k: v for k, v in described.items() if k not in ("source", "filename")}
        record.status, record.error, record.crashes, record.meta = "indexed", None, 0, meta
        if not self.registry.write(record):
            return self._superseded(record.source, record.doc_id)
        return IngestResult(record.source, record.doc_id, "indexed" if changed else "unchanged", chunks=record.chunks)

    def _prepare(self, data: bytes, filename: str, source: str) -> tuple[list[Chunk], list[SparseVector]]:
        """Parse, chunk and compute keyword vectors, in a guarded child process (time and memory
        limits) unless isolation is off: a pathological document costs one failed document."""
        if not self.limits.isolated:
            return self.prepare(data, filename, source)
        self.warm_up_for_fork()
        return run_guarded(lambda: self.prepare(data, filename, source), source, self.limits.timeout_s,
                           self.limits.memory_bytes)

    @staticmethod
    def warm_up_for_fork() -> None:
        """Load the parsers and Kiwi once in this process, so every forked parser inherits them."""
        warm_up()
        kiwi()

    def prepare(self, data: bytes, filename: str, source: str) -> tuple[list[Chunk], list[SparseVector]]:
        analysed = self.chunker.chunk_with_terms(parse_document(data, filename, source, self.limits.ocr),
                                                 self.sparse.terms_of, self.sparse.header_repeat)
        chunks = [chunk for chunk, _ in analysed]
        sparse = [self.sparse.encode_terms(terms) for _, terms in analysed]  # from the chunker's Kiwi pass
        return chunks, sparse

    def _state(self, record: DocumentRecord, status: str, **changes: Any) -> bool:
        """Write the record's new state if this request still owns the document."""
        log.info("%s: %s", record.source, status)
        record.status = status
        for key, value in changes.items():
            setattr(record, key, value)
        owned = self.registry.write(record)
        if owned:
            self.on_step(status)
        return owned

    def _superseded(self, source: str, doc_id: str) -> IngestResult:
        why = lost_reason(self.registry.get(doc_id, include_deleted=True), started=True)
        log.info("%s: %s", source, why)
        return IngestResult(source, doc_id, "failed", error=why)

    def _too_large(self, size: int) -> str:
        return too_large(size, self.limits.max_file_bytes)

    def _payload(
        self,
        chunk: Chunk,
        tokens: int,
        doc_id: str,
        source: str,
        filename: str,
        content_hash: str,
        total: int,
        info: DocumentInfo,
        seq: int,
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            **dict(info.meta),
            "doc_id": doc_id,
            "source": source,
            "filename": filename,
            "chunk_index": chunk.index,
            "parent_index": chunk.parent if chunk.parent is not None else chunk.index,
            "overlap_chars": chunk.overlap_chars,
            "chunk_count": total,
            "token_count": tokens,
            "content_hash": content_hash,
            "embedding_model": self.embedder.info.name,
            "element_types": list(chunk.element_types),
            SEQ_FIELD: seq,
        }
        if chunk.page_number is not None:
            metadata["page_number"] = chunk.page_number
        if chunk.section is not None:
            metadata["section"] = chunk.section
        if chunk.ocr_confidence is not None:
            metadata["ocr"] = True
            metadata["ocr_confidence"] = chunk.ocr_confidence
        if info.tenant is not None:
            metadata["tenant"] = info.tenant
        return {"page_content": chunk.text, "metadata": metadata}
