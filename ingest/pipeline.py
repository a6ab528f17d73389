"""The ingestion pipeline as plain functions over passed-in parts: parse → chunk → embed → upsert,
with the document's state kept in the registry at each step.

Celery tasks and the in-process CLI call the same :meth:`Pipeline.ingest_bytes`.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from ingest.chunking import Chunker, ChunkingOptions
from ingest.embedder import Embedder
from ingest.parsing import parse_document, warm_up
from ingest.parsing.guard import run_guarded
from ingest.sparse import SparseEncoder
from ingest.tokens import compose_input
from korag.errors import DocumentError, InputTooLongError
from korag.registry import DocumentRecord, DocumentRegistry
from korag.settings import Settings
from korag.store import QdrantStore, point_id
from korag.types import Chunk, IngestResult

log = logging.getLogger("korag.ingest")
_DOC_NAMESPACE = uuid.UUID("0d0c5f7e-8a43-4f3f-a9a2-6b6f7261670b")


def doc_id_for(source: str, tenant: str | None = None) -> str:
    """Stable document id derived from the tenant and the source name the caller gave."""
    return uuid.uuid5(_DOC_NAMESPACE, source if tenant is None else f"{tenant}\x00{source}").hex


def too_large(size: int, limit: int) -> str:
    """The reason given for a file over KORAG_MAX_FILE_BYTES, by the pipeline and the queue client."""
    return f"file of {size} bytes is over the limit of {limit} bytes (KORAG_MAX_FILE_BYTES)"


def chunker_for(embedder: Embedder, settings: Settings) -> Chunker:
    options = ChunkingOptions(overlap_tokens=settings.chunk_overlap_tokens, embed_header=settings.embed_section_header)
    return Chunker(embedder.passage_budget, options)


@dataclass(frozen=True)
class DocumentInfo:
    """Who a document belongs to and what the caller said about it, stored with every chunk."""

    tenant: str | None = None
    meta: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        reserved = {"doc_id", "source", "chunk_index", "tenant", "content_hash"}
        clash = reserved.intersection(k for k, _ in self.meta)
        if clash:
            raise ValueError(f"--meta cannot set reserved field(s): {', '.join(sorted(clash))}")


@dataclass(frozen=True)
class ParseLimits:
    max_file_bytes: int
    timeout_s: float
    memory_bytes: int
    isolated: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> "ParseLimits":
        return cls(settings.max_file_bytes, settings.parse_timeout_s, settings.parse_memory_mb * 1024 * 1024,
                   settings.parse_isolated)


@dataclass
class Pipeline:
    embedder: Embedder
    store: QdrantStore
    registry: DocumentRegistry
    chunker: Chunker
    sparse: SparseEncoder
    limits: ParseLimits

    @classmethod
    def build(cls, embedder: Embedder, store: QdrantStore, settings: Settings) -> "Pipeline":
        store.ensure_collection(embedder.info.name, embedder.info.dimension)
        registry = DocumentRegistry(store.client, store.collection)
        registry.ensure()
        return cls(embedder, store, registry, chunker_for(embedder, settings), settings.sparse_encoder(),
                   ParseLimits.from_settings(settings))

    def ingest_path(
        self, path: str | Path, source: str | None = None, doc_id: str | None = None, info: DocumentInfo | None = None
    ) -> IngestResult:
        info = info if info is not None else DocumentInfo()
        source = source if source is not None else str(path)
        doc_id = doc_id if doc_id is not None else doc_id_for(source, info.tenant)
        try:
            size = Path(path).stat().st_size
            if size > self.limits.max_file_bytes:
                raise DocumentError(source, self._too_large(size))
            data = Path(path).read_bytes()
        except OSError as exc:
            return IngestResult(source, doc_id, "failed", error=f"cannot read file: {exc.strerror or exc}")
        except DocumentError as exc:
            return IngestResult(source, doc_id, "failed", error=exc.reason)
        return self.ingest_bytes(data, PurePath(path).name, source, doc_id, info)

    def ingest_bytes(
        self, data: bytes, filename: str, source: str, doc_id: str | None = None, info: DocumentInfo | None = None,
        blob: str | None = None,
    ) -> IngestResult:
        """Index one document. Same content as the indexed version: ``unchanged``, nothing written.
        A document that cannot be ingested comes back ``failed`` with the reason, and whatever
        was indexed before stays. Store or model failures propagate (they are not the document's
        fault, and a retry may succeed)."""
        info = info if info is not None else DocumentInfo()
        doc_id = doc_id if doc_id is not None else doc_id_for(source, info.tenant)
        content_hash = hashlib.sha256(data).hexdigest()
        record = self.registry.get(doc_id)
        if record is not None and record.content_hash == content_hash:
            # content_hash is only set once a version's chunks are all written (and cleared
            # before the next write starts), so these exact chunks are stored.
            if record.status != "indexed":
                self._state(record, "indexed", error=None)
            return IngestResult(source, doc_id, "unchanged", chunks=record.chunks)
        known = record is not None  # only a known document can have chunks to replace
        if record is None:
            record = DocumentRecord(doc_id=doc_id, source=source, status="parsing")
        record.source, record.filename, record.tenant, record.meta = source, filename, info.tenant, dict(info.meta)
        record.blob = blob if blob is not None else record.blob
        self._state(record, "parsing")
        try:
            if len(data) > self.limits.max_file_bytes:
                raise DocumentError(source, self._too_large(len(data)))
            chunks = self.chunker.chunk(self._parse(data, filename, source))
            self._state(record, "embedding")
            vectors, token_counts = self.embedder.embed_passages(chunks)
        except (DocumentError, InputTooLongError) as exc:
            reason = exc.reason if isinstance(exc, DocumentError) else str(exc)
            self._state(record, "failed", error=reason)
            return IngestResult(source, doc_id, "failed", error=reason)
        sparse = [self.sparse.encode_document(compose_input("", c.header, c.text)) for c in chunks]
        payloads = [
            self._payload(chunk, tokens, doc_id, source, filename, content_hash, len(chunks), info)
            for chunk, tokens in zip(chunks, token_counts)
        ]
        self._state(record, "embedding", content_hash=None)  # from here the stored chunks may be a mix
        self.store.upsert([point_id(doc_id, c.index) for c in chunks], vectors, payloads, sparse)
        if known:
            self.store.delete_other_versions(doc_id, content_hash)
        self._state(record, "indexed", version=record.version + 1, content_hash=content_hash, chunks=len(chunks),
                    error=None, crashes=0, indexed_at=time.time())
        return IngestResult(source, doc_id, "indexed", chunks=len(chunks))

    def _parse(self, data: bytes, filename: str, source: str):
        if not self.limits.isolated:
            return parse_document(data, filename, source)
        warm_up()
        return run_guarded(lambda: parse_document(data, filename, source), source, self.limits.timeout_s,
                           self.limits.memory_bytes)

    def _state(self, record: DocumentRecord, status: str, **changes: Any) -> None:
        log.info("%s: %s", record.source, status)
        record.status = status
        for key, value in changes.items():
            setattr(record, key, value)
        self.registry.put(record)

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
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            **dict(info.meta),
            "doc_id": doc_id,
            "source": source,
            "filename": filename,
            "chunk_index": chunk.index,
            "chunk_count": total,
            "token_count": tokens,
            "content_hash": content_hash,
            "embedding_model": self.embedder.info.name,
            "element_types": list(chunk.element_types),
        }
        if chunk.page_number is not None:
            metadata["page_number"] = chunk.page_number
        if chunk.section is not None:
            metadata["section"] = chunk.section
        if info.tenant is not None:
            metadata["tenant"] = info.tenant
        return {"page_content": chunk.text, "metadata": metadata}
