"""The ingestion pipeline as plain functions over passed-in parts: parse → chunk → embed → upsert.

Celery tasks and the in-process CLI call the same :meth:`Pipeline.ingest_bytes`.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from ingest.chunking import Chunker, ChunkingOptions
from ingest.embedder import Embedder
from ingest.parsing import parse_document
from ingest.sparse import SparseEncoder
from ingest.tokens import compose_input
from korag.errors import DocumentError, InputTooLongError
from korag.settings import Settings
from korag.store import QdrantStore, point_id
from korag.types import Chunk, IngestResult

_DOC_NAMESPACE = uuid.UUID("0d0c5f7e-8a43-4f3f-a9a2-6b6f7261670b")


def doc_id_for(source: str, tenant: str | None = None) -> str:
    """Stable document id derived from the tenant and the source name the caller gave."""
    return uuid.uuid5(_DOC_NAMESPACE, source if tenant is None else f"{tenant}\x00{source}").hex


def chunker_for(embedder: Embedder, settings: Settings) -> Chunker:
    options = ChunkingOptions(overlap_tokens=settings.chunk_overlap_tokens, embed_header=settings.embed_section_header)
    return Chunker(embedder.passage_budget, options)


@dataclass(frozen=True)
class DocumentInfo:
    """Who a document belongs to and what the caller said about it, stored with every chunk."""

    tenant: str | None = None
    meta: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        reserved = {"doc_id", "source", "chunk_index", "tenant"}
        clash = reserved.intersection(k for k, _ in self.meta)
        if clash:
            raise ValueError(f"--meta cannot set reserved field(s): {', '.join(sorted(clash))}")


@dataclass
class Pipeline:
    embedder: Embedder
    store: QdrantStore
    chunker: Chunker
    sparse: SparseEncoder
    max_file_bytes: int

    @classmethod
    def build(cls, embedder: Embedder, store: QdrantStore, settings: Settings) -> "Pipeline":
        store.ensure_collection(embedder.info.name, embedder.info.dimension)
        return cls(embedder, store, chunker_for(embedder, settings), settings.sparse_encoder(), settings.max_file_bytes)

    def ingest_path(
        self, path: str | Path, source: str | None = None, doc_id: str | None = None, info: DocumentInfo | None = None
    ) -> IngestResult:
        info = info if info is not None else DocumentInfo()
        source = source if source is not None else str(path)
        doc_id = doc_id if doc_id is not None else doc_id_for(source, info.tenant)
        try:
            size = Path(path).stat().st_size
            if size > self.max_file_bytes:
                raise DocumentError(source, f"file of {size} bytes is over the limit of {self.max_file_bytes} bytes (KORAG_MAX_FILE_BYTES)")
            data = Path(path).read_bytes()
        except OSError as exc:
            return IngestResult(source, doc_id, "failed", error=f"cannot read file: {exc.strerror or exc}")
        except DocumentError as exc:
            return IngestResult(source, doc_id, "failed", error=exc.reason)
        return self.ingest_bytes(data, PurePath(path).name, source, doc_id, info)

    def ingest_bytes(
        self, data: bytes, filename: str, source: str, doc_id: str | None = None, info: DocumentInfo | None = None
    ) -> IngestResult:
        """Index one document. A document that cannot be ingested comes back ``failed`` with the
        reason; store or model failures propagate (they are not the document's fault)."""
        info = info if info is not None else DocumentInfo()
        doc_id = doc_id if doc_id is not None else doc_id_for(source, info.tenant)
        try:
            if len(data) > self.max_file_bytes:
                raise DocumentError(source, f"file of {len(data)} bytes is over the limit of {self.max_file_bytes} bytes (KORAG_MAX_FILE_BYTES)")
            blocks = parse_document(data, filename, source)
            chunks = self.chunker.chunk(blocks)
            vectors, token_counts = self.embedder.embed_passages(chunks)
        except DocumentError as exc:
            return IngestResult(source, doc_id, "failed", error=exc.reason)
        except InputTooLongError as exc:
            return IngestResult(source, doc_id, "failed", error=str(exc))
        sparse = [self.sparse.encode_document(compose_input("", c.header, c.text)) for c in chunks]
        content_hash = hashlib.sha256(data).hexdigest()
        payloads = [
            self._payload(chunk, tokens, doc_id, source, filename, content_hash, len(chunks), info)
            for chunk, tokens in zip(chunks, token_counts)
        ]
        self.store.upsert([point_id(doc_id, c.index) for c in chunks], vectors, payloads, sparse)
        self.store.delete_stale_chunks(doc_id, keep_below=len(chunks))
        return IngestResult(source, doc_id, "indexed", chunks=len(chunks))

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
