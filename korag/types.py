"""Plain data passed between the layers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

from korag.ids import document_id, new_seq
from korag.rules import check_meta, check_tenant, value_problem


class DocumentState(StrEnum):
    """Where a document is in its lifecycle, as the registry stores it (the member *is* the stored
    string, so payloads and JSON read the same): queued → parsing → embedding → indexed, or
    failed; ``deleted`` is a tombstone, hidden from listings."""

    QUEUED = "queued"
    PARSING = "parsing"
    EMBEDDING = "embedding"
    INDEXED = "indexed"
    FAILED = "failed"
    DELETED = "deleted"

    @property
    def unfinished(self) -> bool:
        """Still on its way to an outcome (queued or mid-flight)."""
        return self in (DocumentState.QUEUED, DocumentState.PARSING, DocumentState.EMBEDDING)

    @property
    def mid_flight(self) -> bool:
        """Taken by a worker or an in-process ingest: if it stays so, that one died."""
        return self in (DocumentState.PARSING, DocumentState.EMBEDDING)


class Lost(StrEnum):
    """Why a request no longer owns its document: the error of its ``failed`` result. The result is
    this member itself (not a copy of its text), so whoever reports outcomes tells a lost request
    (no event: the winner reports its own) from a real failure by type, never by reading text."""

    SUPERSEDED = "superseded by a newer ingest of this document"
    DELETED_WHILE_INGESTING = "deleted while it was being ingested"
    DELETED_BEFORE_INGESTING = "deleted before it was ingested"


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough for the embedding model, with its provenance."""

    text: str
    index: int
    section: str | None = None  # heading path, "장 > 절"
    header: str | None = None  # what of the section is embedded in front of the text
    page_number: int | None = None
    element_types: tuple[str, ...] = ()
    # read by OCR (scanned page or image): Tesseract's mean word confidence (0-100) of its page, the
    # lowest where it spans OCR'd pages; None: its text came from the document itself
    ocr_confidence: float | None = None
    # Section context (parent-child retrieval): the index of the first chunk of the run of
    # consecutive chunks of this section that together fit the model's limit, the unit a
    # ``context="section"`` search returns; None: the chunk is its own. ``overlap_chars``: how many
    # leading characters of ``text`` repeat the end of the previous chunk (the overlap), so the
    # run's text is stitched from the stored chunks without repeating them.
    parent: int | None = None
    overlap_chars: int = 0
    # The model's token ids of the embedded input (prefix + header + text, special tokens), when
    # the chunker has them: it tokenized that exact string to check the limit, and the embedder
    # takes them instead of tokenizing again. Not part of the chunk's identity.
    input_ids: tuple[int, ...] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError("a chunk needs text")
        if self.index < 0:
            raise ValueError("chunk index must be >= 0")


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as it lives in the store: its point id, text and payload metadata."""

    id: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class SearchResult:
    id: str
    score: float
    text: str
    metadata: dict[str, Any]

    @property
    def source(self) -> str:
        return str(self.metadata.get("source", ""))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "text": self.text, "metadata": self.metadata}


Status = Literal["indexed", "unchanged", "failed", "queued", "superseded"]


@dataclass
class IngestResult:
    """One document's outcome; ``to_json`` is the `korag ingest --json` line contract."""

    source: str
    doc_id: str
    status: Status
    chunks: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A request that a newer ingest of its document took over did not fail: whoever built
        # the result (pipeline, worker stage, service, queue client) reports it ``superseded``,
        # so a Celery result, a `korag ingest` line or a metric read later does not alarm anyone.
        if self.error is Lost.SUPERSEDED and self.status == "failed":
            self.status = "superseded"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "doc_id": self.doc_id,
            "status": self.status,
            "chunks": self.chunks,
            "error": None if self.error is None else str(self.error),
        }

    @property
    def lost(self) -> bool:
        """The request lost its document to a newer request or a deletion (see :class:`Lost`)."""
        return isinstance(self.error, Lost)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "IngestResult":
        return cls(
            source=data["source"],
            doc_id=data["doc_id"],
            status=data["status"],
            chunks=int(data.get("chunks") or 0),
            error=_lost_or_text(data.get("error")),
        )


_LOST = {member.value: member for member in Lost}


def _lost_or_text(error: Any) -> Any:
    """A result read back from JSON (a Celery result) is told lost by type again (:attr:`IngestResult.lost`)."""
    return _LOST.get(error, error) if isinstance(error, str) else error


# -- who a document is and which request ingests it (every way in: CLI, service, queue) ------------
class KnowsIds(Protocol):
    """What keeps a document's id stable across korag versions (the document registry)."""

    def doc_id_for(self, source: str, tenant: str | None) -> str: ...


def doc_id_for(source: str, tenant: str | None = None, registry: KnowsIds | None = None) -> str:
    """Stable document id derived from the tenant and the source name the caller gave, injective
    (:func:`korag.ids.document_id`). With the ``registry``, a document stored under the id of
    an older korag keeps it (``korag.storage.registry.DocumentRegistry.doc_id_for``); every ingest path passes it."""
    return registry.doc_id_for(source, tenant) if registry is not None else document_id(source, tenant)


@dataclass(frozen=True)
class Request:
    """One ingest of one document: its id (point ids derive from it, so a redelivery rewrites the
    same points), its sequence number (newer wins) and, for a queued delivery, which attempt
    this is (``request:retries``: a retry after a transient error is not a crash)."""

    id: str
    seq: int
    attempt: str | None = None

    @classmethod
    def new(cls) -> "Request":
        return cls(uuid.uuid4().hex, new_seq())


@dataclass(frozen=True)
class DocumentInfo:
    """Who a document belongs to and what the caller said about it, stored with every chunk."""

    tenant: str | None = None
    meta: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # Keys must be filterable and not korag's own fields (korag.rules.RESERVED_FIELDS).
        check_tenant(self.tenant)
        check_meta(self.meta)
        for key, value in self.meta:
            _check_meta_value(key, value)


def _check_meta_value(key: str, value: Any) -> None:
    """A metadata value is a string, number or boolean that the store keeps as given and a filter
    can match (korag.rules.value_problem: no NaN, Infinity, lone surrogate or number beyond
    64 bits, which failed in the store or came back as a float no filter matched); ValueError
    naming the key otherwise, before anything is read or written."""
    if not isinstance(value, (str, int, float)):
        kind = "null" if value is None else type(value).__name__
        raise ValueError(f"metadata {key!r}: a value must be a string, number or boolean, not {kind}")
    for what, problem in (("key", value_problem(key)), ("value", value_problem(value, stored=True))):
        if problem is not None:
            raise ValueError(f"metadata {key!r}: the {what} {problem}")
