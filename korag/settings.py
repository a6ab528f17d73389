"""The one settings object. Every value can be set with an environment variable ``KORAG_<NAME>``.

Read it once at the edge (CLI, worker start) and pass it down; tests build their own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "nlpai-lab/KoE5"
OCR_LANGUAGES = r"[A-Za-z_]+(\+[A-Za-z_]+)*"  # Tesseract model names joined by + (also checked by ingest.parsing.ocr)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KORAG_", extra="ignore", frozen=True)

    # -- embedding model --
    embedding_model: str = Field(
        DEFAULT_MODEL,
        description="sentence-transformers model name or local directory",
    )
    query_prefix: str = Field("query: ", description="prepended to every query before embedding")
    passage_prefix: str = Field("passage: ", description="prepended to every chunk before embedding")
    embedding_device: str | None = Field(None, description="cpu, cuda, cuda:1 ...; default: cuda when present")
    embedding_batch_size: int = Field(32, ge=1)
    embedding_precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        "auto", description="forward precision; auto: bf16 on CUDA, bf16 on CPUs with native bf16 when it keeps "
        "cosine >= 0.99 vs fp32 (checked at load), else fp32; fp16 CUDA-only, int8 CPU-only")
    embedding_runtime: Literal["auto", "torch", "openvino"] = Field(
        "auto", description="where the forward runs; auto: OpenVINO on CPU when the openvino package is installed "
        "(fp32 or bf16), torch otherwise and always on CUDA")
    embedding_batch_tokens: int | None = Field(
        None, ge=512, description="token budget per batch (padded length x rows); default: 4096 on CPU, 131072 on CUDA")

    # -- chunking --
    chunk_overlap_tokens: int = Field(48, ge=0, description="tokens of trailing sentences repeated in the next chunk")
    chunk_max_tokens: int | None = Field(
        None, ge=16, description="cap below the model's limit; default: the model's max_seq_length"
    )
    embed_section_header: bool = Field(True, description="embed the section title in front of each chunk")

    # -- retrieval --
    search_mode: Literal["dense", "sparse", "hybrid"] = Field("hybrid", description="default channel(s) for search")
    search_context: Literal["chunk", "section"] = Field(
        "chunk", description="what a search returns by default: chunk (the matching chunks) or section (each "
        "matching chunk's run of its section, up to the model's limit, once; useful with KORAG_CHUNK_MAX_TOKENS)")
    fusion_method: Literal["rrf", "dbsf", "convex"] = Field(
        "convex", description="hybrid: how the channels merge; rrf: weighted reciprocal-rank fusion, convex: weighted "
        "sum of min-max-normalised scores, dbsf: Qdrant's distribution-based score fusion (no weights)")
    fusion_dense_weight: float = Field(0.3, ge=0, description="hybrid: weight of the dense channel (rrf, convex)")
    fusion_sparse_weight: float = Field(1.0, ge=0, description="hybrid: weight of the Kiwi BM25 channel (rrf, convex)")
    fusion_k: int = Field(2, ge=1, description="hybrid: RRF rank constant")
    fusion_prefetch: int = Field(50, ge=1, description="hybrid: candidates taken from each channel")
    rerank_model: str | None = Field(
        None, description="a sentence-transformers CrossEncoder (directory or cached name) that re-orders the top "
        "candidates of every search; unset: no re-ranking")
    rerank_candidates: int = Field(30, ge=1, description="results the reranker reads per search (at least k)")
    sparse_avg_terms: float = Field(60.0, gt=0, description="BM25 average chunk length, in content morphemes")
    sparse_tags: str | None = Field(
        None, description="comma-separated Kiwi tags the keyword channel keeps; default: korag's content tags"
    )

    # -- storage --
    data_dir: Path = Field(Path(".korag"), description="embedded Qdrant storage and blob store live here")
    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset = embedded storage in data_dir")
    qdrant_api_key: SecretStr | None = Field(None, description="Qdrant server API key; never shown in reprs or logs")
    edge_upkeep: Literal["inline", "process"] = Field(
        "process", description="embedded store: where HNSW index steps run; process: in child processes, dense "
        "searches over sealed shards plus an exact scan of fresh points, so searches and /healthz never wait for "
        "a step; inline: in the process that holds the store (less memory and disk, but its searches and "
        "/healthz wait for each step: seconds at 100k points)")
    edge_store_process: bool | None = Field(
        None, description="embedded store: owned by a child process that this one calls over a socket, so a "
        "store call that holds the GIL (a search, upsert or shard load: up to seconds at 1M points) never stops "
        "this process's other threads (/healthz, the event loop, parsing); costs a round trip per call and "
        "about a second at start. Unset: on for korag serve, off for the CLI's one-shot commands")
    collection: str = "korag"
    upsert_batch_size: int = Field(256, ge=1)
    blob_dir: Path | None = Field(None, description="content-addressed blob store; default: <data_dir>/blobs")
    min_free_disk_mb: int = Field(
        512, ge=0, description="free space kept on the data and blob directories: below it uploads get 507, "
        "documents fail with 'disk full' and korag serve/ingest do not start; 0: no check")

    # -- queue --
    broker_url: str | None = Field(None, description="redis://host:port/db; unset = ingest in-process")
    result_backend: str | None = Field(None, description="default: the broker URL")
    task_soft_time_limit: int = Field(1800, ge=1, description="seconds before a task is asked to stop")
    task_time_limit: int = Field(2100, ge=1, description="seconds before a task's process is killed")
    visibility_timeout: int = Field(7200, ge=1, description="Redis redelivers unacknowledged tasks after this")
    worker_concurrency: int = Field(1, ge=1)
    worker_batch_documents: int = Field(
        32, ge=1, description="queued documents one worker task takes at once (parsed together, embedded together)")
    worker_batch_chunks: int = Field(
        1024, ge=1, description="chunks per model call across documents, and what an embed task gathers")

    # -- parsing and failures --
    max_file_bytes: int = Field(100 * 1024 * 1024, ge=1, description="files above this size are refused")
    parse_timeout_s: float = Field(300.0, gt=0, description="a document's parsing is stopped after this")
    parse_memory_mb: int = Field(2048, ge=64, description="memory a document's parser may add")
    parse_isolated: bool = Field(True, description="parse in a forked child under the limits above")
    parse_workers: int | None = Field(None, ge=1, description="warm parser processes of a batch ingest; default: one per core")
    ingest_overlap: Literal["auto", "on", "off"] = Field(
        "auto", description="a batch ingest parses while the model embeds (on), or the two take turns (off); "
        "auto: on when the model runs on an accelerator, off when it shares the CPU with the parsers")
    ocr: Literal["auto", "off", "force"] = Field(
        "auto", description="Tesseract OCR of scanned PDF pages and images; auto: only PDF pages without usable text "
        "(a mixed PDF keeps its text layer), force: every PDF page, off: none (images are refused)")
    ocr_languages: str = Field(
        "kor+eng", pattern=f"^{OCR_LANGUAGES}$", description="Tesseract models, joined by +")
    ocr_dpi: int = Field(300, ge=72, le=600, description="resolution scanned PDF pages are rendered at for OCR")
    ocr_max_pages: int = Field(
        100, ge=1, description="pages OCR'd per document; later pages are not read and a warning says so")
    max_crashes: int = Field(3, ge=1, description="deliveries a worker may die on before the document is failed")
    sweep_after_s: float | None = Field(None, gt=0, description="unfinished documents older than this are re-queued; default: task time limit + 60 s")

    # -- service keys and webhooks (korag.services.keys, korag.services.events) --
    api_keys: SecretStr | None = Field(
        None, description='"KEY=TENANT,..." accepted besides <data_dir>/keys.json; tenant * is an admin key')
    webhook_url: str | None = Field(None, description="document.indexed/failed/deleted events are POSTed here")
    webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key of the X-Korag-Signature header")
    webhook_timeout_s: float = Field(10.0, gt=0, description="one delivery attempt gives up after this")
    webhook_max_attempts: int = Field(12, ge=1, description="attempts per event before it is set aside as dead")
    webhook_backoff_s: float = Field(1.0, gt=0, description="wait before the first retry; doubles per attempt")
    webhook_backoff_max_s: float = Field(300.0, gt=0, description="longest wait between two attempts")

    # -- the HTTP service (korag serve) --
    max_upload_bytes: int | None = Field(
        None, ge=1, description="largest upload request body; default: KORAG_MAX_FILE_BYTES + 1 MiB")
    api_max_files: int = Field(100, ge=1, description="files in one upload request")
    cors_origins: str | None = Field(
        None, description="comma-separated origins whose browser pages may call the API (CORS), e.g. "
        "https://app.example.com; * for any; unset: no CORS headers")

    @field_validator("qdrant_url", "broker_url", "result_backend", "embedding_device", "sparse_tags", "webhook_url",
                     "rerank_model")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value if value not in ("", None) else None

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str | None) -> str | None:
        """Each item a browser origin (``scheme://host[:port]``, as the Origin header says it) or ``*``."""
        if value is None:
            return None
        for origin in _items(value):
            if origin != "*" and not re.fullmatch(r"https?://[^/?#\s]+", origin):
                raise ValueError(f"KORAG_CORS_ORIGINS: {origin!r} is not an origin: write scheme://host[:port] with no "
                                 "path (e.g. https://app.example.com), or *")
        return value if _items(value) else None

    @field_validator("qdrant_api_key", "api_keys", "webhook_secret", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        secret = value.get_secret_value() if isinstance(value, SecretStr) else value
        return value if secret not in ("", None) else None

    def model_post_init(self, __context: object) -> None:
        if self.task_time_limit >= self.visibility_timeout:
            raise ValueError(
                f"KORAG_TASK_TIME_LIMIT ({self.task_time_limit}s) must stay below "
                f"KORAG_VISIBILITY_TIMEOUT ({self.visibility_timeout}s), or Redis redelivers "
                "tasks that are still running"
            )
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError("KORAG_TASK_SOFT_TIME_LIMIT must be below KORAG_TASK_TIME_LIMIT")

    @property
    def sweep_age_s(self) -> float:
        return self.sweep_after_s if self.sweep_after_s is not None else self.task_time_limit + 60.0

    @property
    def qdrant_path(self) -> Path:
        return self.data_dir / "qdrant"

    @property
    def blobs_path(self) -> Path:
        return self.blob_dir if self.blob_dir is not None else self.data_dir / "blobs"

    @property
    def cors_origin_list(self) -> list[str]:
        """KORAG_CORS_ORIGINS as a list; empty: CORS off."""
        return _items(self.cors_origins) if self.cors_origins is not None else []

    @property
    def backend_url(self) -> str | None:
        return self.result_backend if self.result_backend is not None else self.broker_url


def _items(text: str) -> list[str]:
    """A comma-separated setting's items, without blanks."""
    return [item.strip() for item in text.split(",") if item.strip()]
