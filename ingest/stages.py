"""The queue path's two stages as plain functions over passed-in parts (Celery tasks stay thin).

- **prepare** (:func:`prepare_batch`): a batch of queued deliveries — settle each (superseded,
  already done, a crash to count), take the document (``parsing``), then parse, chunk and compute
  keyword terms for all of them in a warm parser pool (one process per core, the guard's time and
  memory limits). A worker that also embeds goes straight on to :func:`embed_ready`; a parse-only
  worker leaves each document as a JSON file beside the blobs (:class:`PreparedStore`), records
  it ``queued`` and hands it to an embed worker.
- **embed** (:func:`embed_batch`): a batch of prepared documents — one model call over the chunks
  of them all, then each is upserted and recorded ``indexed`` under the registry's ownership rules
  (:meth:`Pipeline.finish`: a request that lost the document deletes what it wrote).

**Crashes.** A document found mid-flight by a redelivery of the same attempt (or by the sweeper)
counts one interruption, for every document that was mid-flight with it. A document that was
interrupted before (``crashes > 0``, a *suspect*) is never batched again: it runs alone, after the
batch is finished (or, when the caller can hand it back to its queue, in a task of its own:
:data:`RELEASED`), so that the next crash is blamed on it alone and ``KORAG_MAX_CRASHES`` ends it.

Documents are started from their task messages (:class:`ingest.starters.FromBlob`) and parsed,
embedded, written and recorded by the one ingest engine of the CLI and the embedded service
(:class:`ingest.batch.BatchIngest`: :meth:`~ingest.batch.BatchIngest.parse` in the parse stage,
:meth:`~ingest.batch.BatchIngest.embed` wherever the model is); what is here is queue-shaped:
forwarding to embed workers, prepared files, redeliveries and crashes.

Each document's :data:`Outcome` lands in ``results`` (by batch index) as it finishes, so that a
caller whose batch was cut short (an exception, a time limit) knows which documents still need
a delivery.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.batch import BatchIngest
from ingest.embedder import Embedder
from ingest.pipeline import Pending, Pipeline
from ingest.sparse import SparseVector
from ingest.starters import FromBlob
from korag.errors import DocumentError
from korag.messages import EmbedMessage
from korag.settings import Settings
from korag.storage.blobs import BlobStore
from korag.storage.registry import (
    DELETED,
    MID_FLIGHT,
    DocumentRecord,
    DocumentRegistry,
    lost_reason,
    note_interruption,
    this_process,
)
from korag.storage.store import StoreKeeper
from korag.types import Chunk, DocumentInfo, IngestResult, Request

log = logging.getLogger("korag.ingest")

STORE_WAIT_S = 60.0  # an embedded store is shared by the workers in turn
BATCH_BYTES = 256 * 1024 * 1024  # the documents one parse task holds in memory (the first is always taken)


# -- outcomes, ready and prepared documents --------------------------------------------------------
@dataclass(frozen=True)
class Forwarded:
    """The document went on to an embed worker with ``message``, which reports its outcome."""

    message: EmbedMessage


@dataclass(frozen=True)
class Released:
    """A suspect handed back to the queue, to run alone in a task of its own."""


RELEASED = Released()

Outcome = IngestResult | Forwarded | Released  # a queued document's, per batch index


@dataclass
class Ready:
    """A parsed document this request owns, waiting for its vectors."""

    pending: Pending
    chunks: list[Chunk]
    sparse: list[SparseVector]
    blob: str | None = None

    @property
    def suspect(self) -> bool:
        """It was interrupted before (a worker died with it in hand): it runs alone."""
        return self.pending.record.crashes > 0


_KEY = re.compile(r"^[0-9a-f]{32}$")


class PreparedStore:
    """Prepared documents (chunks, keyword vectors, who owns them) as JSON files under
    ``<blobs>/prepared/``, where parse and embed workers both reach them. One file per request,
    written atomically, removed once the request reached an outcome."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def from_settings(cls, settings: Settings) -> "PreparedStore":
        return cls(settings.blobs_path / "prepared")

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"not a request id: {key!r}")
        return self.root / f"{key}.json"

    def exists(self, key: str | None) -> bool:
        return key is not None and _KEY.match(key) is not None and self._path(key).exists()

    def put(self, ready: Ready, settings_key: str) -> EmbedMessage:
        """Write a parsed document's file; returns the message that hands it to an embed worker."""
        pending, record = ready.pending, ready.pending.record
        data = {
            "doc_id": record.doc_id, "source": record.source, "filename": pending.filename, "blob": ready.blob,
            "content_hash": pending.content_hash, "tenant": pending.info.tenant, "meta": dict(pending.info.meta),
            "request": pending.own.id, "seq": pending.own.seq, "settings_key": settings_key,
            # input_ids: the chunker's token ids, so the embed worker does not tokenize again
            # (the same model on both sides: settings_key)
            "chunks": [{"text": c.text, "index": c.index, "section": c.section, "header": c.header,
                        "page_number": c.page_number, "element_types": list(c.element_types),
                        "ocr_confidence": c.ocr_confidence, "parent": c.parent, "overlap_chars": c.overlap_chars,
                        "input_ids": list(c.input_ids) if c.input_ids is not None else None} for c in ready.chunks],
            "sparse": [[list(s.indices), list(s.values)] for s in ready.sparse],
        }
        path = self._path(pending.own.id)
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return EmbedMessage(prepared=pending.own.id, doc_id=record.doc_id, source=record.source,
                            tenant=pending.info.tenant, chunks=len(ready.chunks), seq=pending.own.seq)

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def blob_size(settings: Settings, digest: Any) -> int:
    """Bytes of a queued document's blob; 0 when it is not there (its task reports that)."""
    return BlobStore(settings.blobs_path).size(str(digest))


# -- settling a delivery ----------------------------------------------------------------------------
def settle_delivery(registry: DocumentRegistry, doc_id: str, request: Request | None, max_crashes: int) -> IngestResult | None:
    """Decide whether this delivery should run. Returns the outcome to report instead, when:
    the request was superseded by a newer one (or the document deleted), or already finished (a
    redelivery after a crash or a sweep), or the document has now taken down ``max_crashes``
    workers. Only a redelivery of the *same attempt* that finds the document mid-flight counts
    as a crash; a retry after a transient error is a new attempt."""
    record = registry.get(doc_id, include_deleted=True)
    if record is None or request is None:
        return None
    if record.request != request.id or record.status == DELETED:
        return IngestResult(record.source, doc_id, "failed", error=lost_reason(record, started=False))
    # the same attempt finding its document mid-flight: the last worker on it died
    return _done_or_given_up(registry, record, record.attempt in (None, request.attempt), max_crashes)


def _done_or_given_up(registry: DocumentRegistry, record: DocumentRecord, died_on_it: bool,
                      max_crashes: int) -> IngestResult | None:
    """The outcome of a delivery of the request that owns ``record``, when it is finished already (a
    redelivery after a crash or a sweep) or the document has now taken down ``max_crashes`` workers
    (``died_on_it``: a worker died mid-flight on this delivery); None: go on."""
    if record.status in ("indexed", "failed"):
        status = "unchanged" if record.status == "indexed" else "failed"
        return IngestResult(record.source, record.doc_id, status, chunks=record.chunks, error=record.error)
    if record.status in MID_FLIGHT and died_on_it:
        if note_interruption(registry, record, max_crashes):
            return IngestResult(record.source, record.doc_id, "failed", error=record.error)
        log.warning("document %s was interrupted %d time(s); trying again", record.doc_id, record.crashes)
    return None


# -- the prepare stage ------------------------------------------------------------------------------
@dataclass
class Stage:
    """What both stages need: settings, the model (or at least its tokenizer), the blobs."""

    settings: Settings
    embedder: Embedder
    on_embedded: Callable[[int, int], None] | None = None  # (chunks, documents) per model call

    stores: StoreKeeper | None = None  # a worker's, kept across tasks; None: opened per use

    @contextmanager
    def pipeline(self) -> Iterator[Pipeline]:
        stores = self.stores if self.stores is not None else StoreKeeper(self.settings, STORE_WAIT_S)
        with stores.session() as store:
            yield Pipeline.build(self.embedder, store, self.settings)

    @property
    def blobs(self) -> BlobStore:
        return BlobStore(self.settings.blobs_path)

    def engine(self, pipeline: Pipeline) -> BatchIngest:
        """The one ingest engine, for a queued task: errors go back to the task (Celery retries
        it), model calls of ``KORAG_WORKER_BATCH_CHUNKS`` chunks, the parsers' Kiwi kept (the
        next task forks its parsers again)."""
        return BatchIngest(pipeline, workers=self.settings.parse_workers, overlap=False,
                           window_chunks=self.settings.worker_batch_chunks, contain_errors=False,
                           on_embedded=self.on_embedded)


def _never(index: int) -> bool:
    return False


def is_suspect(stage: Stage, doc_id: str) -> bool:
    """The document was interrupted before: it runs alone (a batch task takes nothing else)."""
    with stage.pipeline() as pipeline:
        record = pipeline.registry.get(doc_id)
    return record is not None and record.crashes > 0


def prepare_batch(stage: Stage, deliveries: list[FromBlob], results: dict[int, Outcome], embed_here: bool,
                  forward: Callable[[int, EmbedMessage], None] | None = None,
                  releasable: Callable[[int], bool] = _never) -> None:
    """Run queued deliveries through parsing and on: to the end when ``embed_here`` (this worker
    holds the model), else to :class:`PreparedStore` and ``forward(index, message)`` (an embed
    worker's queue; the outcome is then :class:`Forwarded`). Suspects are :data:`RELEASED` where
    ``releasable(index)``, else run alone after the others."""
    if not embed_here and forward is None:
        raise ValueError("a parse-only worker needs somewhere to forward documents (forward)")
    suspects: list[int] = []
    copies = _copies([(d.doc_id, d.request.id if d.request is not None else None) for d in deliveries])
    with stage.pipeline() as pipeline:
        for i, delivery in enumerate(deliveries):
            if i in copies:
                continue
            settled = settle_delivery(pipeline.registry, delivery.doc_id, delivery.request, stage.settings.max_crashes)
            if settled is not None:
                results[i] = settled
            elif (record := pipeline.registry.get(delivery.doc_id)) is not None and record.crashes > 0:
                if releasable(i):
                    results[i] = RELEASED
                else:
                    suspects.append(i)
    clean = [i for i in range(len(deliveries)) if i not in results and i not in suspects and i not in copies]
    sent: dict[int, EmbedMessage] = {}

    def forwarding(i: int, message: EmbedMessage) -> None:
        if forward is not None:  # checked above: a parse-only worker has one
            forward(i, message)
        sent[i] = message
        results[i] = Forwarded(message)

    try:
        for group in ([clean] if clean else []) + [[i] for i in suspects]:
            _prepare_group(stage, deliveries, group, results, embed_here, forwarding)
    finally:
        for i, original in copies.items():  # each message's task gets its own outcome
            if original in sent:
                forwarding(i, sent[original])
        _share(copies, results)


def _copies(keys: list[Any]) -> dict[int, int]:
    """Messages of one batch that name the same document and request (a redelivery beside the
    original): each such index → the first one's, which alone runs."""
    first: dict[Any, int] = {}
    return {i: first[key] for i, key in enumerate(keys) if first.setdefault(key, i) != i}


def _share(copies: dict[int, int], results: dict[int, Outcome]) -> None:
    for i, original in copies.items():
        if original in results and i not in results:
            results[i] = results[original]


def _prepare_group(stage: Stage, deliveries: list[FromBlob], group: list[int], results: dict[int, Outcome],
                   embed_here: bool, forward: Callable[[int, EmbedMessage], None]) -> None:
    started: dict[int, Pending] = {}
    with stage.pipeline() as pipeline:
        for i in group:
            outcome = deliveries[i].start(pipeline)
            if isinstance(outcome, IngestResult):
                results[i] = outcome
            else:
                started[i] = outcome
    if not started:
        return
    parsed = stage.engine(pipeline).parse(started)  # the store is closed: forked parsers hold no lock
    with stage.pipeline() as pipeline:
        ready: dict[int, Ready] = {}
        for i in sorted(parsed):  # in delivery order, whatever order the parsers finished in
            value, pending = parsed[i], started[i]
            pending.data = b""
            if isinstance(value, DocumentError):
                results[i] = pipeline.reject(pending, value.reason)
            else:
                ready[i] = Ready(pending, value[0], value[1], deliveries[i].blob)
        if embed_here:
            embed_ready(stage, pipeline, ready, results)
            return
        prepared = PreparedStore.from_settings(stage.settings)
        handed: dict[int, EmbedMessage] = {}
        for i, item in ready.items():
            message = prepared.put(item, pipeline.settings_key)
            lost = pipeline.advance(item.pending, "queued", attempt=None, owner=None)
            if lost is not None:
                prepared.delete(message.prepared)
                results[i] = lost
                continue
            handed[i] = message
    for i, message in handed.items():  # the store is closed: a broker that is down holds nobody else up
        forward(i, message)


# -- the embed stage --------------------------------------------------------------------------------
def embed_ready(stage: Stage, pipeline: Pipeline, ready: dict[int, Ready], results: dict[int, Outcome]) -> None:
    """Embed, upsert and record every ready document with the one ingest engine
    (:meth:`BatchIngest.embed`): the others together, in model calls of up to
    ``KORAG_WORKER_BATCH_CHUNKS`` chunks across documents (one over that, a window at a time),
    then each suspect alone."""
    engine = stage.engine(pipeline)
    clean = {i: item for i, item in ready.items() if not item.suspect}
    for group in [clean] + [{i: item} for i, item in ready.items() if item.suspect]:
        if group:
            engine.embed({i: (item.pending, item.chunks, item.sparse) for i, item in group.items()}, results)
    pipeline.store.maintain()  # bounded index building on the embedded engine, when a segment filled up


def take_prepared(pipeline: Pipeline, data: dict[str, Any] | None, message: EmbedMessage, attempt: str,
                  max_crashes: int, where: Path) -> Ready | IngestResult:
    """The prepared document an embed message names, now owned by this attempt; or its outcome:
    superseded, deleted, done already, given up after crashes, or failed because its prepared
    form is missing (``where``: the folder it was looked for in) or was made with other settings."""
    record = pipeline.registry.get(message.doc_id, include_deleted=True)
    if record is None or record.request != message.prepared or record.status == DELETED:
        return IngestResult(message.source, message.doc_id, "failed", error=lost_reason(record, started=False))
    # this attempt finding its document mid-flight: the last embed worker on it died
    settled = _done_or_given_up(pipeline.registry, record, record.attempt == attempt, max_crashes)
    if settled is not None:
        return settled
    record.attempt, record.owner = attempt, this_process()  # a worker's process: told dead by its beat
    seq = int(data["seq"]) if data is not None else record.seq if record.seq is not None else 0
    info = DocumentInfo(tenant=record.tenant, meta=tuple(record.meta.items())) if data is None else \
        DocumentInfo(tenant=data["tenant"], meta=tuple(data["meta"].items()))
    filename = data["filename"] if data is not None else record.filename or ""
    pending = Pending(record, Request(message.prepared, seq, attempt), filename,
                      data["content_hash"] if data is not None else "", info, in_process=False)
    if data is None:
        return pipeline.reject(pending, f"its parsed chunks are not in {where}: parse and embed workers must "
                                        "share KORAG_BLOB_DIR; ingest it again")
    if data.get("settings_key") != pipeline.settings_key:
        return pipeline.reject(pending, "parsed with other settings (model, chunking or keyword tags) than the embed "
                                        "worker's: give every worker the same KORAG_* settings; ingest it again")
    chunks = [Chunk(text=c["text"], index=c["index"], section=c["section"], header=c["header"],
                    page_number=c["page_number"], element_types=tuple(c["element_types"]),
                    ocr_confidence=c.get("ocr_confidence"), parent=c.get("parent"),
                    overlap_chars=c.get("overlap_chars", 0),
                    input_ids=tuple(c["input_ids"]) if c.get("input_ids") is not None else None) for c in data["chunks"]]
    sparse = [SparseVector(indices=list(ix), values=list(vs)) for ix, vs in data["sparse"]]
    return Ready(pending, chunks, sparse, data.get("blob"))


def embed_batch(stage: Stage, messages: list[tuple[EmbedMessage, str]], results: dict[int, Outcome],
                releasable: Callable[[int], bool] = _never) -> None:
    """Embed prepared documents (``(message, attempt)`` per embed message) across document
    boundaries; each outcome lands in ``results``. Suspects are :data:`RELEASED` where
    ``releasable(index)``, else embedded alone. A prepared file is removed once its request
    reached an outcome."""
    prepared = PreparedStore.from_settings(stage.settings)
    copies = _copies([message.prepared for message, _ in messages])
    with stage.pipeline() as pipeline:
        ready: dict[int, Ready] = {}
        for i, (message, attempt) in enumerate(messages):
            if i in copies:
                continue
            try:
                data = prepared.get(message.prepared)  # before the record: a file gone means an outcome is recorded
            except ValueError as exc:  # a malformed message
                results[i] = IngestResult(message.source, message.doc_id, "failed", error=str(exc))
                continue
            taken = take_prepared(pipeline, data, message, attempt, stage.settings.max_crashes, prepared.root)
            if isinstance(taken, Ready) and taken.suspect and releasable(i):
                results[i] = RELEASED
            elif isinstance(taken, Ready):
                ready[i] = taken
            else:
                results[i] = taken
                prepared.delete(message.prepared)
        try:
            embed_ready(stage, pipeline, ready, results)
        finally:
            for i in ready:
                if i in results:
                    prepared.delete(messages[i][0].prepared)
            _share(copies, results)


# -- a batch cut short --------------------------------------------------------------------------------
@dataclass(frozen=True)
class InFlight:
    """A document of a batch that was stopped before it reached an outcome."""

    doc_id: str
    source: str
    request: str | None
    seq: int


def interrupted(stage: Stage, left: dict[int, InFlight], reason: str, alone: bool) -> dict[int, IngestResult | None]:
    """Documents a time limit stopped. ``alone`` (the batch was this one document): it fails
    with ``reason`` and what it wrote is removed. In a batch of several, nobody can tell which one
    was slow: each counts one interruption (and so runs alone next time); None means send it again."""
    out: dict[int, IngestResult | None] = {}
    with stage.pipeline() as pipeline:
        for i, doc in left.items():
            failed = IngestResult(doc.source, doc.doc_id, "failed", error=reason)
            if doc.request is None:
                out[i] = failed
                continue
            if alone:
                pipeline.fail(doc.doc_id, Request(doc.request, doc.seq), reason)
                out[i] = failed
                continue
            record = pipeline.registry.get(doc.doc_id, include_deleted=True)
            if record is not None and record.request == doc.request and record.status in MID_FLIGHT \
                    and note_interruption(pipeline.registry, record, stage.settings.max_crashes):
                pipeline.store.delete_version(doc.doc_id, doc.seq)
                out[i] = IngestResult(doc.source, doc.doc_id, "failed", error=record.error)
                continue
            out[i] = None
    return out
