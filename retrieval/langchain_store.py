"""``KoragVectorStore``: a LangChain ``VectorStore`` whose writes go through korag's pipeline.

A LangChain ``Document`` becomes a korag document: parsed as plain text, chunked to the model's
budget (never truncated), embedded with the passage prefix, given its Kiwi BM25 keyword vector
and a registry record. Searches are korag's (hybrid by default). Returned ``Document``s carry the
LangChain id and metadata they were added with; a document longer than one chunk comes back as
several ``Document``s (its chunks) with the same id.

Identity: the LangChain id (given, or derived from the text and metadata) maps to a korag
``doc_id`` (derived from tenant and id). korag's ``source`` is ``metadata["source"]`` when given,
otherwise ``langchain:<id>``. Metadata is kept twice in each chunk's payload: exactly, as JSON
(``langchain_metadata``, what search returns), and key by key as strings for ``filter``
(korag's metadata values are strings; keys korag owns, like ``source`` or ``page_number``, and
keys Qdrant cannot filter on, like ``a.b``, are kept in the JSON copy only). Values that JSON
cannot hold come back as their ``str()``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from pathlib import PurePath
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from ingest.embedder import Embedder
from ingest.pipeline import Pipeline
from korag.errors import DocumentError
from korag.ids import legacy_id, structured_id
from korag.rules import RESERVED_FIELDS, source_problem
from korag.settings import Settings
from korag.storage.documents import delete_document
from korag.storage.registry import DocumentRecord, DocumentRegistry
from korag.storage.store import QdrantStore
from korag.types import DocumentInfo, SearchResult, StoredChunk
from retrieval.langchain_embeddings import KoragEmbeddings
from retrieval.search import Retriever

LANGCHAIN_ID = "langchain_id"
LANGCHAIN_METADATA = "langchain_metadata"
# Payload keys korag writes itself (korag's reserved metadata fields, and this module's two);
# LangChain metadata under these names is kept only in the JSON copy.
KORAG_KEYS = RESERVED_FIELDS | {LANGCHAIN_ID, LANGCHAIN_METADATA}
_PATH_CHARACTERS = re.compile(r'[.\[\]"]')
_NAMESPACE = uuid.UUID("3f1d9c7a-5b2e-4e61-9a37-6b6f7261670d")


def filterable(key: str) -> bool:
    """A LangChain metadata key korag can store and filter on: not korag's own, not empty, and
    without the characters Qdrant reads as a path into nested fields (``.``, ``[``, ``]``, ``"``)."""
    return bool(key.strip()) and key not in KORAG_KEYS and _PATH_CHARACTERS.search(key) is None


def _metadata_json(metadata: dict[str, Any]) -> str:
    return json.dumps(metadata, ensure_ascii=False, sort_keys=True, default=str)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


class KoragVectorStore(VectorStore):
    def __init__(self, pipeline: Pipeline, retriever: Retriever, *, tenant: str | None = None,
                 mode: str | None = None, korag_metadata: bool = False) -> None:
        """``tenant``: every document added is that tenant's, every search and lookup stays in it.
        ``mode``: dense, sparse or hybrid (default: the retriever's). ``korag_metadata``: add korag's
        chunk metadata (doc_id, chunk_index, section, ...) to returned documents under ``"korag"``."""
        self.pipeline = pipeline
        self.retriever = retriever
        self.store: QdrantStore = retriever.store
        self.registry = DocumentRegistry(self.store.client, self.store.collection)
        self.tenant = tenant
        self.mode = mode
        self.korag_metadata = korag_metadata

    @classmethod
    def from_settings(cls, embedder: Embedder, store: QdrantStore, settings: Settings, **kwargs: Any) -> "KoragVectorStore":
        pipeline = Pipeline.build(embedder, store, settings)  # creates the collection if needed
        return cls(pipeline, Retriever.from_settings(embedder, store, settings), **kwargs)

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, store: QdrantStore | None = None,
                   settings: Settings | None = None, **kwargs: Any) -> "KoragVectorStore":
        if not isinstance(embedding, KoragEmbeddings) or store is None or settings is None:
            raise TypeError("KoragVectorStore.from_texts needs embedding=KoragEmbeddings(embedder), "
                            "store=<korag QdrantStore> and settings=<korag Settings>")
        vector_store = cls.from_settings(embedding.embedder, store, settings, **kwargs)
        vector_store.add_texts(texts, metadatas, ids=ids)
        return vector_store

    @property
    def embeddings(self) -> Embeddings:
        return KoragEmbeddings(self.retriever.embedder)

    # -- identity -------------------------------------------------------------------------------
    def doc_id(self, langchain_id: str) -> str:
        """korag's doc_id for a LangChain id, injective in (tenant, id): two tenants' ids never
        collide, whatever characters they hold. A document an older korag stored under its legacy
        id (``tenant NUL id``) keeps it when the record's tenant and LangChain id are exactly these."""
        def same(record: DocumentRecord) -> bool:
            return record.tenant == self.tenant and record.meta.get(LANGCHAIN_ID) == langchain_id

        return self.registry.keep_legacy(legacy_id(_NAMESPACE, self.tenant, langchain_id),
                                         structured_id(_NAMESPACE, self.tenant, langchain_id), same)

    @staticmethod
    def content_id(text: str, metadata: dict[str, Any]) -> str:
        """The id of a document added without one: the same text and metadata, the same id."""
        return str(uuid.uuid5(_NAMESPACE, text + "\x00" + _metadata_json(metadata)))

    # -- writes ---------------------------------------------------------------------------------
    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                  ids: list[str | None] | None = None, **kwargs: Any) -> list[str]:
        """Ingest each text as a korag document. Every document is attempted; if any fails,
        a ``DocumentError`` names each failed id and its reason after the others are indexed."""
        if kwargs:
            raise TypeError(f"KoragVectorStore.add_texts does not take {', '.join(sorted(kwargs))}")
        texts = list(texts)
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        given = list(ids) if ids is not None else [None for _ in texts]
        if not len(texts) == len(metadatas) == len(given):
            raise ValueError(f"{len(texts)} texts, {len(metadatas)} metadatas and {len(given)} ids: they must match")
        added, failures = [], []
        for text, metadata, lc_id in zip(texts, metadatas, given):
            metadata = dict(metadata) if metadata is not None else {}
            lc_id = str(lc_id) if lc_id is not None else self.content_id(text, metadata)
            error = self._add(lc_id, text, metadata)
            if error is None:
                added.append(lc_id)
            else:
                failures.append(f"{lc_id!r}: {error}")
        if failures:
            raise DocumentError("KoragVectorStore.add_texts",
                                f"{len(failures)} of {len(texts)} documents were not indexed: " + "; ".join(failures))
        return added

    def _add(self, lc_id: str, text: str, metadata: dict[str, Any]) -> str | None:
        if not text.strip():
            return "page_content is empty: there is no text to index"
        source = _as_text(metadata["source"]) if metadata.get("source") is not None else f"langchain:{lc_id}"
        problem = source_problem(source)
        if problem is not None:
            return problem
        doc_id = self.doc_id(lc_id)
        info = DocumentInfo(tenant=self.tenant, meta=self._payload_meta(lc_id, metadata))
        record = self.registry.get(doc_id)
        if record is not None and record.source != source:
            # The pipeline keeps a document's source when its bytes are unchanged: move it by re-adding.
            self._delete(doc_id)
        name = PurePath(source).name or "document"
        filename = name if name.lower().endswith(".txt") else f"{name}.txt"  # parsed as plain text
        result = self.pipeline.ingest_bytes(text.encode("utf-8"), filename, source, doc_id=doc_id, info=info)
        return result.error if result.status == "failed" else None

    @staticmethod
    def _payload_meta(lc_id: str, metadata: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        pairs = [(LANGCHAIN_ID, lc_id), (LANGCHAIN_METADATA, _metadata_json(metadata))]
        for key, value in metadata.items():
            key = _as_text(key)
            if filterable(key) and value is not None:
                pairs.append((key, _as_text(value)))
        return tuple(pairs)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Remove the documents (every chunk and the registry record); unknown ids are ignored."""
        if ids is None:
            raise ValueError("KoragVectorStore.delete needs the ids of the documents to delete")
        for lc_id in ids:
            self._delete(self.doc_id(str(lc_id)))
        return True

    def _delete(self, doc_id: str) -> None:
        delete_document(self.store, self.registry, doc_id)

    # -- reads ----------------------------------------------------------------------------------
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        found = []
        for lc_id in dict.fromkeys(str(i) for i in ids):
            chunks = sorted(self.store.iter_chunks({"doc_id": self.doc_id(lc_id)}),
                            key=lambda c: c.metadata.get("chunk_index", 0))
            found.extend(self._document(c) for c in chunks)
        return found

    def similarity_search_with_score(self, query: str, k: int = 4, filter: dict[str, Any] | None = None,
                                     mode: str | None = None, **kwargs: Any) -> list[tuple[Document, float]]:
        """Chunks best first with korag's score (cosine in dense mode, fused rank score in hybrid)."""
        if kwargs:
            raise TypeError(f"KoragVectorStore search does not take {', '.join(sorted(kwargs))}")
        results = self.retriever.search(query, k, self._filters(filter), mode=mode if mode is not None else self.mode,
                                        tenant=self.tenant)
        return [(self._document(r), r.score) for r in results]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None,
                                    **kwargs: Any) -> list[Document]:
        """Dense search with a query vector made by ``self.embeddings.embed_query``."""
        if kwargs:
            raise TypeError(f"KoragVectorStore search does not take {', '.join(sorted(kwargs))}")
        filters = self._filters(filter) or {}
        if self.tenant is not None:
            filters["tenant"] = self.tenant
        if not self.store.exists():
            return []
        results = self.store.search(np.asarray(embedding, dtype=np.float32), k, filters or None, mode="dense")
        return [self._document(r) for r in results]

    def _filters(self, filter: dict[str, Any] | None) -> dict[str, Any] | None:
        """LangChain metadata is stored as strings: compare with strings (korag's own keys as given)."""
        if filter is None:
            return None
        out: dict[str, Any] = {}
        for key, value in filter.items():
            if key in KORAG_KEYS:
                out[key] = value
            elif isinstance(value, (list, tuple, set)):
                out[key] = [_as_text(v) for v in value]
            else:
                out[key] = _as_text(value)
        return out

    def _document(self, chunk: SearchResult | StoredChunk) -> Document:
        stored = chunk.metadata
        if LANGCHAIN_METADATA in stored:
            metadata = json.loads(stored[LANGCHAIN_METADATA])
            lc_id = stored.get(LANGCHAIN_ID)
        else:  # a file ingested by `korag ingest` into the same collection
            metadata = dict(stored)
            lc_id = stored.get("doc_id")
        if self.korag_metadata:
            metadata["korag"] = {k: v for k, v in stored.items() if k not in (LANGCHAIN_ID, LANGCHAIN_METADATA)}
        return Document(page_content=chunk.text, metadata=metadata, id=lc_id)
