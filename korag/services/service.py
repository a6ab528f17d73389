"""What ``korag serve`` does, as plain methods over passed-in parts (no web framework here):
accept uploads, report documents, delete them, list chunks, search. The parts (model, store,
queue) are built by the service's composition root (``korag serve``: :mod:`korag.cli.serve`);
nothing here reads the environment or knows Celery.

**Embedded mode** (no broker): the service owns the embedded store for its lifetime (opened
once) and ingests in a background thread through the CLI's batch ingest
(:mod:`korag.services.ingest_queue`); searches are answered meanwhile. **Distributed mode**
(``KORAG_BROKER_URL`` and ``KORAG_QDRANT_URL``): uploads go to the blob store and the Celery queue,
any number of service replicas share the Qdrant server.

Tenants: every method takes the caller's tenant (``None``: all tenants, for an open service or
an admin key). A document of another tenant is reported as missing, never as forbidden.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingest.embedder import Embedder
from ingest.parsing.ocr import availability as ocr_availability
from ingest.pipeline import Pipeline
from korag.errors import KoragError
from korag.messages import IngestMessage
from korag.rules import check_source, normalize_source
from korag.services.ingest_queue import IngestQueue, Job
from korag.services.lifecycle import delete_document, queue_request, registry_outcome, stalled, sweep_blobs
from korag.services.liveness import Liveness, owner_alive
from korag.services.schemas import (
    ChunkList,
    ChunkOut,
    Deleted,
    DocumentList,
    DocumentStatus,
    Explain,
    Ranks,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from korag.settings import Settings
from korag.storage.blobs import BlobStore
from korag.storage.disk import check_disk
from korag.storage.query_filter import parse_filter
from korag.storage.registry import (
    MID_FLIGHT,
    STATES,
    SUPERSEDED,
    UNFINISHED,
    DocumentRecord,
    DocumentRegistry,
)
from korag.storage.store import SEQ_FIELD, QdrantStore
from korag.types import DocumentInfo, DocumentState, IngestResult, doc_id_for
from retrieval.search import Retriever

if TYPE_CHECKING:
    from korag.services.queue_client import CeleryQueue

log = logging.getLogger("korag.serve")


class BadRequest(KoragError):
    """The request cannot be served as given (a bad cursor, metadata ...): 4xx with the reason."""


@dataclass
class Upload:
    """A file received into the blob store."""

    source: str
    filename: str
    blob: str
    size: int


@dataclass
class Submitted:
    """One uploaded document on its way: ``result`` when already final, ``future`` (embedded)
    or ``request`` (distributed) while queued."""

    source: str
    doc_id: str
    blob: str
    result: IngestResult | None = None
    future: Future | None = None
    request: str | None = None
    before: tuple[int, str | None] = (0, None)  # version and content hash before this upload

    def queued(self) -> IngestResult:
        return IngestResult(self.source, self.doc_id, "queued")


def _encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"cursor {cursor[:40]!r} is not one this service gave out") from exc


class Service:
    def __init__(self, settings: Settings, embedder: Embedder, store: QdrantStore, *, celery: CeleryQueue | None = None,
                 metrics=None, webhooks=None) -> None:
        self.settings = settings
        self.embedder = embedder
        self.store = store
        self.celery = celery
        self.metrics = metrics
        self.webhooks = webhooks
        self.blobs = BlobStore(settings.blobs_path)
        model = metrics.embedder(self.embedder) if metrics is not None else self.embedder
        self.pipeline = Pipeline.build(model, store, settings)
        if metrics is not None:
            self.pipeline.on_step = metrics.step_hook()
        self.registry: DocumentRegistry = self.pipeline.registry
        self.retriever = Retriever.from_settings(self.embedder, store, settings)
        if metrics is not None and self.retriever.reranker is not None:
            self.retriever.reranker.on_rerank = metrics.observe_rerank
        self.queue: IngestQueue | None = None
        # the workers' beats (distributed mode), to tell a stalled document from a working one
        self.liveness = Liveness.from_url(settings.broker_url) if celery is not None else None
        if celery is None:
            self.queue = IngestQueue(self.pipeline, self.blobs, settings.parse_workers, on_result=self._finished,
                                     check_disk=lambda: check_disk(settings))
        if metrics is not None:
            metrics.set_queue_depth(self.queue_depth)
            metrics.set_stalled(self.stalled_count)

    @property
    def mode(self) -> str:
        return "embedded" if self.celery is None else "distributed"

    def start(self) -> None:
        # Warm the query path (Kiwi's dictionary, the model's first forward) before /readyz says ready,
        # so the first search does not pay seconds of loading.
        self.retriever.sparse.encode_query("준비")
        self.embedder.embed_queries(["준비"])
        sweep_blobs(self.blobs, self.registry)  # what deleted documents and refused or broken uploads left
        if self.queue is not None:
            self.queue.start()
            recovered = self.queue.recover(self.settings.max_crashes)
            if recovered:
                log.info("queued again %d document(s) a previous run left unfinished", len(recovered))

    def close(self) -> None:
        if self.queue is not None:
            self.queue.close(timeout=60)
        if self.webhooks is not None:
            self.webhooks.close()
        if self.liveness is not None:
            self.liveness.close()
        self.store.client.close()

    # -- health ---------------------------------------------------------------------------------
    def broken(self) -> str | None:
        """Why this process cannot serve again until it is restarted (for ``/healthz``), or None."""
        return self.store.lost()

    def checks(self) -> dict[str, str]:
        """``ok`` or the reason, per part the service needs."""
        out = {"model": f"ok ({self.embedder.info.name})"}
        try:
            self.store.exists()
            out["store"] = "ok"
        except Exception as exc:  # noqa: BLE001 - a health check reports any failure, it never raises
            out["store"] = f"{type(exc).__name__}: {exc}"
        if self.celery is not None:
            try:
                self.celery.check(timeout_s=1.0)
                out["broker"] = "ok"
            except Exception as exc:  # noqa: BLE001 - a health check reports any failure, it never raises
                out["broker"] = str(exc)
        if self.queue is not None:
            out["ingest"] = "ok" if self.queue._thread.is_alive() else "the ingest thread stopped"
        return out

    def queue_depth(self) -> int:
        if self.queue is not None:
            return self.queue.depth
        return sum(1 for _ in self.registry.all(DocumentState.QUEUED))

    # -- ingest ---------------------------------------------------------------------------------
    def submit(self, uploads: list[Upload], tenant: str | None, meta: dict[str, Any]) -> list[Submitted]:
        info = DocumentInfo(tenant=tenant, meta=tuple(meta.items()))  # ValueError names a bad key
        out = []
        for upload in uploads:
            doc_id = doc_id_for(upload.source, tenant, self.registry)
            current = self.registry.get(doc_id)
            before = (current.version, current.content_hash) if current is not None else (0, None)
            item = Submitted(upload.source, doc_id, upload.blob, before=before)
            if self.queue is not None:
                job = self.queue.submit(doc_id, upload.source, upload.filename, upload.blob, info)
                if isinstance(job, Job):
                    item.future = job.future
                else:
                    item.result = job
            else:
                self._send(item, current, upload, info)
            if self.metrics is not None and item.result is None:
                self.metrics.record_document("queued")
            out.append(item)
        return out

    def _send(self, item: Submitted, current: DocumentRecord | None, upload: Upload, info: DocumentInfo) -> None:
        meta = dict(info.meta)
        if (current is not None and current.status in UNFINISHED and current.blob == upload.blob
                and current.meta == meta and current.filename == upload.filename and current.tenant == info.tenant):
            item.request = current.request  # the same upload is already on its way: wait for that one
            return
        claimed = queue_request(self.registry, item.doc_id, upload.source, upload.filename, upload.blob,
                                info.tenant, meta, blobs=self.blobs)
        if claimed is None:
            item.result = IngestResult(upload.source, item.doc_id, "failed", error=SUPERSEDED)
            return
        item.request = claimed[0]
        request, seq = claimed
        self.celery.send(IngestMessage(blob=upload.blob, filename=upload.filename, source=upload.source,
                                       doc_id=item.doc_id, tenant=info.tenant, meta=info.meta, request=request, seq=seq))

    def outcome(self, item: Submitted) -> IngestResult:
        """The document's final result, or ``queued`` while it has none."""
        if item.result is not None:
            return item.result
        if item.future is not None:
            return item.future.result() if item.future.done() else item.queued()
        record = self.registry.get(item.doc_id, include_deleted=True)
        result = registry_outcome(record, item.source, item.doc_id, item.request, item.before)
        return result if result is not None else item.queued()

    def _finished(self, job: Job, result: IngestResult) -> None:
        """The ingest thread finished a document: metrics and events."""
        if self.metrics is not None:
            self.metrics.record_result(result)
            if job.started_at is not None:  # a batch interleaves documents: time each one whole
                self.metrics.observe_stage("queue", job.started_at - job.queued_at)
                self.metrics.observe_stage("ingest", time.monotonic() - job.started_at)
        if self.webhooks is not None:
            self.webhooks.report(result, job.info.tenant)

    # -- documents ------------------------------------------------------------------------------
    def _visible(self, record: DocumentRecord | None, tenant: str | None) -> DocumentRecord | None:
        if record is None or (tenant is not None and record.tenant != tenant):
            return None
        return record

    def stalled(self, record: DocumentRecord) -> bool:
        """Mid-flight under a worker process that is gone (:func:`korag.services.lifecycle.stalled`)."""
        return stalled(record, lambda owner: owner_alive(self.liveness, owner))

    def stalled_count(self) -> int:
        return sum(self.stalled(r) for status in MID_FLIGHT for r in self.registry.all(status))

    def document(self, doc_id: str, tenant: str | None) -> DocumentStatus | None:
        record = self._visible(self.registry.get(doc_id), tenant)
        return DocumentStatus.of(record, self.stalled(record)) if record is not None else None

    def documents(self, tenant: str | None, status: str | None = None, source_prefix: str | None = None,
                  limit: int = 100, cursor: str | None = None, newest_first: bool = False) -> DocumentList:
        """Oldest first (created_at, then doc_id), or newest first; ``next_cursor`` continues after
        the last one, in the same order."""
        if status is not None and status not in STATES:
            raise BadRequest(f"unknown status {status!r}; use one of {', '.join(STATES)}")
        after = None
        if cursor is not None:
            after = _decode_cursor(cursor)
            if not (isinstance(after, list) and len(after) == 2 and isinstance(after[0], (int, float))
                    and isinstance(after[1], str)):
                raise BadRequest(f"cursor {cursor[:40]!r} is not one this service gave out")
            after = (float(after[0]), after[1])
        records = [r for r in self.registry.all(status)
                   if (tenant is None or r.tenant == tenant)
                   and (source_prefix is None or r.source.startswith(source_prefix))
                   and (after is None or ((r.created_at, r.doc_id) < after if newest_first
                                          else (r.created_at, r.doc_id) > after))]
        records.sort(key=lambda r: (r.created_at, r.doc_id), reverse=newest_first)
        page = records[:limit]
        more = len(records) > limit
        next_cursor = _encode_cursor([page[-1].created_at, page[-1].doc_id]) if more and page else None
        return DocumentList(documents=[DocumentStatus.of(r, self.stalled(r)) for r in page], next_cursor=next_cursor)

    def ocr(self) -> str:
        """:func:`ingest.parsing.ocr.availability` for this service's settings. In distributed mode
        the workers parse: this says what this machine has (they should have the same)."""
        return ocr_availability(self.pipeline.limits.ocr)

    def delete(self, doc_id: str, tenant: str | None) -> Deleted | None:
        if self._visible(self.registry.get(doc_id), tenant) is None:
            return None
        deletion = delete_document(self.store, self.registry, doc_id, blobs=self.blobs,  # its bytes go too
                                   webhooks=self.webhooks, metrics=self.metrics)
        return Deleted(doc_id=doc_id, deleted_chunks=deletion.deleted_chunks)

    def chunks(self, doc_id: str, tenant: str | None, limit: int = 100, cursor: str | None = None) -> ChunkList | None:
        """The indexed version's chunks in order; ``next_cursor`` continues after the last one."""
        record = self._visible(self.registry.get(doc_id), tenant)
        if record is None:
            return None
        start = 0
        if cursor is not None:
            start = _decode_cursor(cursor)
            if not isinstance(start, int) or isinstance(start, bool) or start < 0:
                raise BadRequest(f"cursor {cursor[:40]!r} is not one this service gave out")
        if not self.store.exists() or record.indexed_seq is None:
            return ChunkList(chunks=[], next_cursor=None)
        found = [c for c in self.store.iter_chunks({"doc_id": doc_id, SEQ_FIELD: record.indexed_seq})
                 if isinstance(c.metadata.get("chunk_index"), int) and c.metadata["chunk_index"] >= start]
        found.sort(key=lambda c: c.metadata["chunk_index"])
        page = found[:limit]
        more = len(found) > limit
        next_cursor = _encode_cursor(page[-1].metadata["chunk_index"] + 1) if more and page else None
        return ChunkList(chunks=[ChunkOut.of(c) for c in page], next_cursor=next_cursor)

    # -- search ---------------------------------------------------------------------------------
    def search(self, request: SearchRequest, tenant: str | None) -> SearchResponse:
        """Raises korag.storage.query_filter.FilterError (a bad filter) and ValueError (a bad query)."""
        where = parse_filter(request.filter)
        mode = request.mode if request.mode is not None else self.retriever.mode
        started = time.perf_counter()
        response = self.retriever.search_with_notes(request.query, k=request.k, mode=mode, tenant=tenant,
                                                    where=where, context=request.context)
        took = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.observe_search(mode, took)
        ranks: dict[str, Ranks] | None = None
        explain = None
        if request.explain:
            depth = max(self.retriever.fusion.prefetch, request.k)
            ranks = self._ranks(request.query, depth, tenant, where, [r.id for r in response.results])
            explain = Explain(terms=self.retriever.sparse.query_terms(request.query), mode=mode, candidates=depth)
        hits = [SearchHit.of(r, ranks.get(r.id) if ranks is not None else None) for r in response.results]
        took_ms = round((time.perf_counter() - started) * 1000, 2)
        return SearchResponse(query=request.query, results=hits, notice=response.notice, took_ms=took_ms,
                              explain=explain)

    def _ranks(self, query: str, depth: int, tenant: str | None, where, ids: list[str]) -> dict[str, Ranks]:
        """Each result's rank in the dense and the keyword channel alone, over ``depth`` candidates (chunks:
        a section result's id is that of its best chunk)."""
        out = {i: Ranks() for i in ids}
        for channel in ("dense", "sparse"):
            try:
                found = self.retriever.search(query, k=depth, mode=channel, tenant=tenant, where=where,
                                              context="chunk")
            except (KoragError, ValueError):  # e.g. no keyword vectors in an old collection
                continue
            for rank, result in enumerate(found, start=1):
                if result.id in out:
                    setattr(out[result.id], channel, rank)
        return out


def clean_source(source: str) -> str:
    """A caller's source id as korag stores it (NFC, ``dir/..`` collapsed); ValueError when empty
    or when it holds a character no source may hold (:func:`korag.rules.source_problem`)."""
    if not source.strip():
        raise ValueError("source is empty: give the document's stable id, or leave it out to use the file name")
    cleaned = normalize_source(source)
    check_source(cleaned)
    return cleaned
