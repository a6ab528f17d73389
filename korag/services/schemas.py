"""The JSON contract of korag, as Pydantic models shared by the CLI's ``--json`` output and the
HTTP service (``korag serve``), so the two cannot drift apart.

The CLI prints ``model.model_dump()`` of these models; the service returns them (and its
OpenAPI schema is generated from them). Field names are a contract: extend, never rename.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from korag.storage.registry import STATES, DocumentRecord
from korag.types import DocumentState as State
from korag.types import IngestResult, SearchResult, StoredChunk

MAX_QUERY_CHARS = 2000
MAX_K = 100
# korag.storage.query_filter.json_schemas(), which the service adds to its OpenAPI components; the
# service validates with korag.storage.query_filter.parse_filter, which says the same
FILTER_SCHEMA = {"anyOf": [{"$ref": "#/components/schemas/KoragFilter"}, {"type": "null"}]}

Mode = Literal["dense", "sparse", "hybrid"]
Context = Literal["chunk", "section"]  # retrieval.sections.CONTEXTS
IngestStatus = Literal["indexed", "unchanged", "failed", "queued", "superseded"]
DocumentState = Literal["queued", "parsing", "embedding", "indexed", "failed"]


# -- ingest -------------------------------------------------------------------------------------
class IngestOutcome(BaseModel):
    """One document's outcome: a line of ``korag ingest --json``, an item of ``POST /v1/documents``."""

    source: str
    doc_id: str
    status: IngestStatus = Field(description="indexed, unchanged (nothing written), failed (with error), queued, superseded (a newer ingest of the document took over; error says so)")
    chunks: int = 0
    error: str | None = None

    @classmethod
    def of(cls, result: IngestResult) -> "IngestOutcome":
        return cls(source=result.source, doc_id=result.doc_id, status=result.status, chunks=result.chunks,
                   error=result.error)


class IngestResponse(BaseModel):
    """``POST /v1/documents``: 202 while any document is ``queued``, 200 when all are final."""

    documents: list[IngestOutcome]


# -- documents ----------------------------------------------------------------------------------
class Document(BaseModel):
    """A document's record: ``korag docs --json`` / ``korag status DOC_ID --json``. Fields the
    registry adds later pass through unchanged."""

    model_config = ConfigDict(extra="allow")

    doc_id: str
    source: str
    status: DocumentState
    tenant: str | None = None
    version: int = 0
    content_hash: str | None = None
    chunks: int = 0
    error: str | None = None
    crashes: int = 0
    request: str | None = None
    seq: int | None = None
    attempt: str | None = None
    owner: str | None = None
    indexed_seq: int | None = None
    settings_key: str | None = None
    blob: str | None = None
    filename: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    created_at: float
    updated_at: float
    indexed_at: float | None = None
    stalled: bool = Field(False, description="parsing or embedding under a worker process that is gone: nobody is "
                                             "working on it; a worker's next sweep sends it again")

    @classmethod
    def of(cls, record: DocumentRecord, stalled: bool = False) -> "Document":
        return cls(**record.to_json(), stalled=stalled)


class DocumentStatus(Document):
    """``GET /v1/documents/{doc_id}``: the record, and the stage the document is in while unfinished."""

    stage: Literal["queued", "parsing", "embedding"] | None = Field(
        None, description="queued, parsing or embedding while the document is being ingested; null once final")

    @classmethod
    def of(cls, record: DocumentRecord, stalled: bool = False) -> "DocumentStatus":
        stage = record.status if record.status in ("queued", "parsing", "embedding") else None
        return cls(**record.to_json(), stage=stage, stalled=stalled)


class DocumentList(BaseModel):
    documents: list[DocumentStatus]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null on the last page")


class Deleted(BaseModel):
    """``korag delete --json`` / ``DELETE /v1/documents/{doc_id}``."""

    doc_id: str
    deleted_chunks: int


class StatusSummary(BaseModel):
    """``korag status --json``: progress over all documents."""

    total: int
    done: int
    by_status: dict[str, int] = Field(description="count per state: " + ", ".join(STATES))
    backend: str
    stalled: int = Field(0, description="documents parsing or embedding under a worker process that is gone "
                                        "(counted in by_status too)")
    ocr: str | None = Field(None, description="whether scanned pages and images can be read here: off, ready "
                                              "(mode, languages, dpi) or unavailable with what to install")

    @classmethod
    def of(cls, records: Iterable[DocumentRecord], stalled: Callable[[DocumentRecord], bool], backend: str,
           ocr: str) -> "StatusSummary":
        """The summary of ``records``: counts per state, how many are done and how many stalled."""
        counts = {s: 0 for s in STATES}
        stuck = 0
        for record in records:
            counts[record.status] = counts.get(record.status, 0) + 1
            stuck += stalled(record)
        done = counts[State.INDEXED] + counts[State.FAILED]
        return cls(total=sum(counts.values()), done=done, by_status=counts, backend=backend, stalled=stuck, ocr=ocr)


# -- chunks and search --------------------------------------------------------------------------
class ChunkOut(BaseModel):
    """A stored chunk: a line of ``korag chunks --json``."""

    id: str
    text: str
    metadata: dict[str, Any]

    @classmethod
    def of(cls, chunk: StoredChunk) -> "ChunkOut":
        return cls(id=chunk.id, text=chunk.text, metadata=chunk.metadata)


class ChunkList(BaseModel):
    chunks: list[ChunkOut]
    next_cursor: str | None = None


class Ranks(BaseModel):
    """Where a result stood in each channel (1 = first); null when the channel did not find it
    within its candidates."""

    dense: int | None = None
    sparse: int | None = None


class SearchHit(BaseModel):
    id: str
    score: float
    text: str
    metadata: dict[str, Any]
    ranks: Ranks | None = Field(None, description="with explain: the result's rank in each channel")

    @classmethod
    def of(cls, result: SearchResult, ranks: Ranks | None = None) -> "SearchHit":
        return cls(id=result.id, score=result.score, text=result.text, metadata=result.metadata, ranks=ranks)


class SearchOutput(BaseModel):
    """``korag search --json``."""

    query: str
    results: list[SearchHit]
    notice: str | None = Field(None, description="set when the query was cut for the dense channel")

    def cli_json(self) -> dict[str, Any]:
        """The CLI's line: results without the service's ``ranks``."""
        data = self.model_dump()
        data["results"] = [{k: v for k, v in r.items() if k != "ranks"} for r in data["results"]]
        return data


class Explain(BaseModel):
    terms: list[str] = Field(description="the query's Kiwi terms, as the keyword channel searched them")
    mode: Mode
    candidates: int = Field(description="candidates taken from each channel to rank the results")


class SearchResponse(SearchOutput):
    """``POST /v1/search``: the CLI's search JSON plus ``took_ms`` (and ``explain`` when asked)."""

    took_ms: float
    explain: Explain | None = None


class SearchRequest(BaseModel):
    """``POST /v1/search``. Strict: ``"k": "5"`` or ``"explain": 0`` are refused, never coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="up to 2,000 characters")
    k: int = Field(5, ge=1, le=MAX_K)
    mode: Mode | None = Field(None, description="default: KORAG_SEARCH_MODE (hybrid)")
    context: Context | None = Field(
        None, description="chunk: the top k chunks; section: the top k runs of consecutive chunks of one section "
                          "(up to the model's limit) that matching chunks belong to, each once, with the score and "
                          "metadata of its best chunk and matched_chunks. Default: KORAG_SEARCH_CONTEXT (chunk)")
    filter: Annotated[dict[str, Any] | None, WithJsonSchema(FILTER_SCHEMA)] = Field(
        None, description='exact matches {"key": value}, or {"and"|"or"|"not": [...]} over {"key", "op", "value"} '
                          "with op eq ne in nin gt gte lt lte exists")
    explain: bool = False

    @field_validator("k", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        """``3.0`` is an integer in JSON (and JSON Schema), so it is 3, as Dify's ``top_k`` takes
        it; ``3.5``, ``"3"`` and ``true`` are still refused."""
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


# -- service ------------------------------------------------------------------------------------
class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = Field(None, description="validation errors: where and why")


class Limits(BaseModel):
    max_file_bytes: int
    max_upload_bytes: int
    max_files: int
    max_query_chars: int = MAX_QUERY_CHARS
    max_k: int = MAX_K
    max_wait_s: float


class Info(BaseModel):
    """``GET /v1/info``."""

    version: str
    mode: Literal["embedded", "distributed"]
    model: str
    dimension: int
    max_input_tokens: int
    search_modes: list[Mode]
    default_search_mode: Mode
    search_contexts: list[Context] = Field(["chunk", "section"], description="what a search can return")
    default_search_context: Context = "chunk"
    file_types: list[str]
    limits: Limits
    backend: str
    tenant: str | None = Field(None, description="the tenant of the key that asked (null: all tenants)")
    ocr: str | None = Field(None, description="whether scanned pages and images can be read by this service: off, "
                                              "ready (mode, languages, dpi) or unavailable with what to install")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    ready: bool
    checks: dict[str, str]
