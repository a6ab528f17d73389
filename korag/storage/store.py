"""The Qdrant store: one code path for the embedded default and a Qdrant server.

qdrant-client's ``QdrantClient`` is already a facade over a local engine (":memory:" or a
directory) and a remote server; korag picks the location from settings and otherwise uses one
API. The collection remembers which embedding model filled it (collection metadata) and refuses
vectors from another model.

Payload layout follows langchain-qdrant: ``page_content`` and ``metadata``.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from korag.errors import ModelMismatchError, StoreBusyError, StoreError
from korag.settings import Settings
from korag.storage.edge.upkeep import after_batch
from korag.storage.edge_client import EdgeClient
from korag.storage.edge_remote import RemoteEdgeClient
from korag.storage.filters import build_filter
from korag.types import SearchResult, StoredChunk

SearchMode = str  # "dense" | "sparse" | "hybrid"
MODES = ("dense", "sparse", "hybrid")

DENSE = "dense"  # the named dense vector; langchain-qdrant reads it with vector_name="dense"
SPARSE = "sparse"  # Kiwi BM25 term weights; Qdrant applies IDF at query time
_POINT_NAMESPACE = uuid.UUID("6f2b1c1e-6d1f-4d38-9b8e-6b6f7261670a")
_INDEXED_FIELDS = ("doc_id", "source")
TENANT_FIELD = "tenant"
SEQ_FIELD = "ingest_seq"  # the sequence number of the request that wrote a chunk
EMBEDDED = (EdgeClient, RemoteEdgeClient)  # the embedded engine, in this process or in a store process


FUSION_METHODS = ("rrf", "dbsf", "convex")


@dataclass(frozen=True)
class Fusion:
    """How hybrid search merges the dense and sparse channels; ``prefetch`` candidates come from each.

    - ``rrf``: weighted reciprocal-rank fusion, done by Qdrant: score = Σ_c 1 / (rank_c / weight_c
      + k − 1), rank from 1 (a weight scales a channel's ranks; weight 0 drops the channel).
    - ``convex``: Σ_c weight_c · min-max-normalised score_c (see :func:`convex_scores`), done here
      from the two channels' own queries, so it runs the same on every Qdrant engine.
    - ``dbsf``: Qdrant's distribution-based score fusion (each channel's scores normalised by
      mean ± 3 standard deviations, then summed); takes no weights and no k.
    """

    dense_weight: float = 0.3
    sparse_weight: float = 1.0
    k: int = 2
    prefetch: int = 50
    method: str = "convex"

    @classmethod
    def from_settings(cls, settings: Settings) -> "Fusion":
        return cls(settings.fusion_dense_weight, settings.fusion_sparse_weight, settings.fusion_k, settings.fusion_prefetch,
                   settings.fusion_method)


def convex_scores(channels: Sequence[tuple[dict[str, float], float]]) -> dict[str, float]:
    """Per point, Σ weight · (score − min) / (max − min) over the (scores, weight) channels that
    returned it: each channel's candidates span 0..1 whatever its score scale (cosine, BM25), and a
    point one channel did not return gets 0 there. A channel whose candidates all score the same
    gives each of them 1."""
    fused: dict[str, float] = {}
    for scores, weight in channels:
        low, high = min(scores.values(), default=0.0), max(scores.values(), default=0.0)
        for pid, score in scores.items():
            fused[pid] = fused.get(pid, 0.0) + weight * ((score - low) / (high - low) if high > low else 1.0)
    return fused


def _result(point: Any, score: float) -> SearchResult:
    payload = point.payload or {}
    return SearchResult(id=str(point.id), score=float(score), text=payload.get("page_content", ""),
                        metadata=payload.get("metadata", {}))


def point_id(doc_id: str, chunk_index: int, request: str | None = None) -> str:
    """Deterministic per request: a redelivered task rewrites the same points instead of adding
    new ones, and two requests for one document (two versions) never write over each other."""
    key = f"{doc_id}:{chunk_index}" if request is None else f"{doc_id}:{request}:{chunk_index}"
    return str(uuid.uuid5(_POINT_NAMESPACE, key))


def _doc(doc_id: str) -> models.FieldCondition:
    return models.FieldCondition(key="metadata.doc_id", match=models.MatchValue(value=doc_id))


def _version(doc_id: str, content_hash: str, seq: int | None) -> models.Filter:
    must = [_doc(doc_id), models.FieldCondition(key="metadata.content_hash", match=models.MatchValue(value=content_hash))]
    if seq is not None:
        must.append(models.FieldCondition(key=f"metadata.{SEQ_FIELD}", match=models.MatchValue(value=seq)))
    return models.Filter(must=must)


def _older_than(seq: int) -> models.Filter:
    """Chunks written by a request older than ``seq`` (or by korag before requests had one)."""
    return models.Filter(should=[
        models.FieldCondition(key=f"metadata.{SEQ_FIELD}", range=models.Range(lt=seq)),
        models.IsEmptyCondition(is_empty=models.PayloadField(key=f"metadata.{SEQ_FIELD}")),
    ])


def open_client(settings: Settings, serving: bool = False) -> Any:
    """A server when KORAG_QDRANT_URL is set (":memory:" for a throwaway local one), else the
    embedded engine under KORAG_DATA_DIR. The embedded engine allows one process per directory;
    it runs in a store process with KORAG_EDGE_STORE_PROCESS, by default when ``serving`` (for
    `korag serve`, whose /healthz and searches must not wait for a store call holding the GIL)."""
    if settings.qdrant_url == ":memory:":
        return QdrantClient(location=":memory:")
    if settings.qdrant_url is not None:
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key is not None else None
        return QdrantClient(url=settings.qdrant_url, api_key=key)
    path = settings.qdrant_path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # KORAG_DATA_DIR is a file, or not writable
        raise StoreError(
            f"embedded Qdrant storage {path} cannot be created: {exc.strerror or exc} (KORAG_DATA_DIR="
            f"{settings.data_dir} must be a writable directory)"
        ) from exc
    # Qdrant Edge. It names `korag migrate` for a directory of the old local mode, and the way out
    # (one `korag serve`, or a Qdrant server) when another process holds the directory.
    try:
        if settings.edge_store_process if settings.edge_store_process is not None else serving:
            return RemoteEdgeClient(path, upkeep=settings.edge_upkeep)
        return EdgeClient(path, upkeep=settings.edge_upkeep)
    except StoreBusyError as exc:
        holder = lock_holder(settings)
        if holder is None:
            raise
        raise StoreBusyError(f"{exc}. It is held by {holder}") from exc


# -- who holds the embedded store ---------------------------------------------------------------------
EDGE_LOCK_FILE = ".lock"  # korag.storage.edge.catalog.Catalog takes an exclusive flock on it while open


@dataclass(frozen=True)
class LockHolder:
    """The process holding the embedded store's directory, as the kernel's lock table names it."""

    pid: int
    argv: tuple[str, ...]
    store_pid: int | None = None  # the store process (KORAG_EDGE_STORE_PROCESS) that holds it for ``pid``

    @property
    def serving(self) -> bool:
        """A `korag serve` holds the store for its whole lifetime: waiting for it is no use (a
        worker or another CLI command holds it for a task or a command, then lets go)."""
        for i, arg in enumerate(self.argv):
            if os.path.basename(arg) in ("korag", "korag.cli") or arg.endswith(
                    (os.path.join("korag", "cli.py"), os.path.join("korag", "cli", "__main__.py"), os.path.join("korag", "cli", "main.py"))):
                return self.argv[i + 1:i + 2] == ("serve",)
        return False

    def __str__(self) -> str:
        command = " ".join(self.argv) if self.argv else "command line not readable"
        own = ", this process" if self.pid == os.getpid() else ""
        through = f", through its store process {self.store_pid}" if self.store_pid is not None else ""
        return f"process {self.pid}{own} (`{command}`){through}"


def _argv(pid: int) -> tuple[str, ...]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return tuple(a.decode(errors="replace") for a in cmdline.read().split(b"\0") if a)
    except OSError:
        return ()


def lock_holder(settings: Settings) -> LockHolder | None:
    """Who holds the embedded store under KORAG_DATA_DIR, read from ``/proc/locks`` (Linux): the
    flock on the lock file names its process. None where that cannot be told (another OS, the
    holder in another PID namespace, the lock released meanwhile)."""
    try:
        st = os.stat(settings.qdrant_path / EDGE_LOCK_FILE)
        with open("/proc/locks", encoding="ascii", errors="replace") as table:
            lines = table.read().splitlines()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 8907 fe:00:2146430 0 EOF"; "1: -> ..." waits
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[5] != device or not fields[4].isdigit():
            continue
        pid = int(fields[4])
        if pid <= 0:
            return None
        argv = _argv(pid)
        if "korag.storage.edge_remote" in argv:  # a store process: its parent is the holder that counts
            try:
                parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # ppid: field 4
            except (OSError, IndexError, ValueError):
                return LockHolder(pid, argv)
            if parent <= 1:  # its server is gone; it is closing the store and exiting
                return LockHolder(pid, argv)
            return LockHolder(parent, _argv(parent), store_pid=pid)
        return LockHolder(pid, argv)
    return None


def backend_of(client: Any) -> str:
    """Which engine a store runs on, for `korag status`."""
    if isinstance(client, RemoteEdgeClient):
        return f"qdrant-edge (embedded, {client.path}, in store process {client.pid})"
    if isinstance(client, EdgeClient):
        return f"qdrant-edge (embedded, {client.path})"
    options = client.init_options  # qdrant-client's record of how it was opened (public)
    if options.get("location") == ":memory:":
        return "qdrant-client in-memory engine (tests)"
    if options.get("path") is not None:
        return f"qdrant-client local mode ({options['path']})"
    where = options.get("url") if options.get("url") is not None else options.get("host")
    return f"qdrant server ({where if where is not None else options.get('location')})"


def _sparse(vector: Any) -> models.SparseVector:
    return models.SparseVector(indices=list(vector.indices), values=list(vector.values))


def _filter(filters: dict[str, Any] | None) -> models.Filter | None:
    """Typed: ``{"page_number": "3"}`` matches a stored 3 and a stored "3" (korag.rules)."""
    return build_filter(filters)


def _and(*filters: models.Filter | None) -> models.Filter | None:
    given = [f for f in filters if f is not None]
    if len(given) <= 1:
        return given[0] if given else None
    return models.Filter(must=given)


class QdrantStore:
    def __init__(self, client: QdrantClient, collection: str, upsert_batch_size: int = 256) -> None:
        self.client = client
        self.collection = collection
        self.upsert_batch_size = upsert_batch_size

    # -- collection -----------------------------------------------------------------------------
    def ensure_collection(self, model_name: str, dimension: int) -> None:
        """Create on first use; afterwards refuse a different model or dimension."""
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(
                self.collection,
                vectors_config={DENSE: models.VectorParams(size=dimension, distance=models.Distance.COSINE)},
                sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                metadata={"embedding_model": model_name, "dimension": dimension},
            )
            with warnings.catch_warnings():  # the local engine ignores payload indexes and says so
                warnings.simplefilter("ignore")
                for field in _INDEXED_FIELDS:
                    self.client.create_payload_index(
                        self.collection, f"metadata.{field}", models.PayloadSchemaType.KEYWORD
                    )
                self.client.create_payload_index(
                    self.collection, f"metadata.{SEQ_FIELD}", models.PayloadSchemaType.INTEGER
                )
                self.client.create_payload_index(
                    self.collection,
                    f"metadata.{TENANT_FIELD}",
                    models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
                )
            return
        self.check_model(model_name, dimension)

    def check_model(self, model_name: str, dimension: int) -> None:
        info = self.client.get_collection(self.collection)
        recorded = (info.config.metadata or {}).get("embedding_model")
        vectors = info.config.params.vectors
        size = vectors[DENSE].size if isinstance(vectors, dict) and DENSE in vectors else None
        if recorded != model_name or size != dimension:
            raise ModelMismatchError(
                f"collection {self.collection!r} was filled by embedding model {recorded!r} "
                f"({size} dimensions); this process uses {model_name!r} ({dimension} dimensions). "
                "Vectors of different models cannot be compared: set KORAG_EMBEDDING_MODEL back, "
                "or use another KORAG_COLLECTION (or delete this one and re-ingest)"
            )

    @property
    def backend(self) -> str:
        return backend_of(self.client)

    def maintain(self) -> None:
        """Index upkeep after an ingest batch: bounded index building on the embedded engine
        (see korag.storage.edge.upkeep); nothing on a server or the in-memory engine."""
        after_batch(self.client)

    def exists(self) -> bool:
        return self.client.collection_exists(self.collection)

    def lost(self) -> str | None:
        """Why this store cannot be used again without restarting the process (its store
        process exited: ``RemoteEdgeClient.lost``), or None; asks nothing of the store."""
        return self.client.lost if isinstance(self.client, RemoteEdgeClient) else None

    def check(self) -> None:
        """Read the collection's description (and, embedded, load its shard) once: a damaged or
        unreadable store is a StoreError now, before a command spends a minute loading the model."""
        if self.exists():
            self.client.get_collection(self.collection)

    # -- writes ---------------------------------------------------------------------------------
    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
        sparse: Sequence[Any] | None = None,
    ) -> None:
        """``sparse``: per point an object with ``indices`` and ``values`` (BM25 weights)."""
        if not (len(ids) == len(vectors) == len(payloads)) or (sparse is not None and len(sparse) != len(ids)):
            raise ValueError("ids, vectors, payloads and sparse vectors differ in length")
        if isinstance(self.client, EMBEDDED):  # Qdrant Edge: no pydantic models on the way (2-3x faster)
            for start in range(0, len(ids), self.upsert_batch_size):
                end = start + self.upsert_batch_size
                self.client.upsert_plain(self.collection, list(ids[start:end]), {DENSE: vectors[start:end]},
                                         list(payloads[start:end]),
                                         {SPARSE: list(sparse[start:end])} if sparse is not None else None)
            return
        points = []
        for i, (pid, vec, payload) in enumerate(zip(ids, vectors, payloads)):
            vector: dict[str, Any] = {DENSE: vec.tolist()}
            if sparse is not None and sparse[i].indices:
                vector[SPARSE] = models.SparseVector(indices=sparse[i].indices, values=sparse[i].values)
            points.append(models.PointStruct(id=pid, vector=vector, payload=payload))
        for start in range(0, len(points), self.upsert_batch_size):
            self.client.upsert(self.collection, points=points[start : start + self.upsert_batch_size], wait=True)

    def delete_older_versions(self, doc_id: str, seq: int) -> None:
        """After a request's version is recorded as indexed: remove the document's chunks written
        by older requests. Chunks of a newer request are never touched."""
        selector = models.Filter(must=[_doc(doc_id), _older_than(seq)])
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=selector), wait=True)

    def delete_version(self, doc_id: str, seq: int) -> None:
        """Remove the chunks one request wrote (it lost the document to a newer request)."""
        selector = models.Filter(must=[_doc(doc_id), models.FieldCondition(
            key=f"metadata.{SEQ_FIELD}", match=models.MatchValue(value=seq))])
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=selector), wait=True)

    def count_version(self, doc_id: str, content_hash: str, seq: int | None) -> int:
        """Chunks stored for one indexed version (``seq`` None: written before requests had one)."""
        return self.client.count(self.collection, count_filter=_version(doc_id, content_hash, seq), exact=True).count

    def version_metadata(self, doc_id: str, content_hash: str, seq: int | None) -> dict[str, Any] | None:
        """The metadata of one stored chunk of a version (they all carry the same caller metadata)."""
        points, _ = self.client.scroll(self.collection, scroll_filter=_version(doc_id, content_hash, seq), limit=1,
                                       with_payload=True)
        return (points[0].payload or {}).get("metadata", {}) if points else None

    def update_metadata(self, doc_id: str, values: dict[str, Any], remove: Sequence[str] = ()) -> None:
        """Change the caller's metadata on every chunk of a document, without embedding again."""
        selector = models.FilterSelector(filter=models.Filter(must=[_doc(doc_id)]))
        if remove:
            self.client.delete_payload(self.collection, keys=[f"metadata.{k}" for k in remove], points=selector, wait=True)
        if values:
            self.client.set_payload(self.collection, payload=values, points=selector, key="metadata", wait=True)

    def delete_document(self, doc_id: str, before_seq: int | None = None) -> int:
        """Remove every chunk of a document (written by a request older than ``before_seq``,
        when given); returns how many there were."""
        if not self.exists():
            return 0
        must: list[Any] = [_doc(doc_id)]
        if before_seq is not None:
            must.append(_older_than(before_seq))
        selector = models.Filter(must=must)
        count = self.client.count(self.collection, count_filter=selector, exact=True).count
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=selector), wait=True)
        return count

    # -- reads ----------------------------------------------------------------------------------
    def has_sparse(self) -> bool:
        return SPARSE in (self.client.get_collection(self.collection).config.params.sparse_vectors or {})

    def search(
        self,
        vector: np.ndarray | None,
        k: int,
        filters: dict[str, Any] | None = None,
        sparse: Any | None = None,
        mode: SearchMode = "dense",
        fusion: Fusion | None = None,
        where: models.Filter | None = None,
    ) -> list[SearchResult]:
        """One Qdrant query per call, two for ``convex`` hybrid. ``hybrid`` merges both channels as
        ``fusion.method`` says: rrf and dbsf server-side (prefetch), convex here. ``where`` (a Qdrant filter, e.g. from
        korag.storage.query_filter.parse_filter) must match too, besides ``filters``."""
        query_filter = _and(_filter(filters), where)
        if mode == "dense":
            response = self.client.query_points(
                self.collection, query=vector.tolist(), using=DENSE, limit=k, query_filter=query_filter, with_payload=True
            )
        elif mode == "sparse":
            if not sparse.indices:
                return []
            response = self.client.query_points(
                self.collection, query=_sparse(sparse), using=SPARSE, limit=k, query_filter=query_filter, with_payload=True
            )
        elif mode == "hybrid":
            fusion = fusion if fusion is not None else Fusion()
            if fusion.method == "convex":
                return self._convex(vector, k, sparse, fusion, query_filter)
            depth = max(fusion.prefetch, k)
            prefetch = [models.Prefetch(query=vector.tolist(), using=DENSE, limit=depth, filter=query_filter)]
            weights = [fusion.dense_weight]
            if sparse.indices:
                prefetch.append(models.Prefetch(query=_sparse(sparse), using=SPARSE, limit=depth, filter=query_filter))
                weights.append(fusion.sparse_weight)
            fused = (models.FusionQuery(fusion=models.Fusion.DBSF) if fusion.method == "dbsf"
                     else models.RrfQuery(rrf=models.Rrf(k=fusion.k, weights=weights)))
            response = self.client.query_points(self.collection, prefetch=prefetch, query=fused, limit=k, with_payload=True)
        else:
            raise ValueError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        return [_result(p, p.score) for p in response.points]

    def _convex(self, vector: np.ndarray, k: int, sparse: Any, fusion: Fusion, query_filter: models.Filter | None) -> list[SearchResult]:
        """Hybrid by :func:`convex_scores` of the dense and sparse channels' top ``prefetch``. The
        channels are asked for ids and scores only and the payloads of the fused top ``k`` fetched
        once after (reading and converting 2 x ``prefetch`` payloads cost more than both queries)."""
        depth = max(fusion.prefetch, k)
        queries = [(vector.tolist(), DENSE, fusion.dense_weight)]
        if sparse.indices:
            queries.append((_sparse(sparse), SPARSE, fusion.sparse_weight))
        channels = []
        for query, using, weight in queries:
            found = self.client.query_points(self.collection, query=query, using=using, limit=depth,
                                             query_filter=query_filter, with_payload=False).points
            channels.append(({str(p.id): p.score for p in found}, weight))
        fused = convex_scores(channels)
        top = sorted(fused, key=lambda pid: -fused[pid])[:k]
        records = {str(r.id): r for r in self.client.retrieve(self.collection, ids=top, with_payload=True)}
        # a point deleted between the query and the retrieve is left out
        return [_result(records[pid], fused[pid]) for pid in top if pid in records]

    def iter_chunks(self, filters: dict[str, Any] | None = None, batch: int = 256,
                    where: models.Filter | None = None) -> Iterator[StoredChunk]:
        """Every chunk matching ``filters`` (exact metadata matches) and ``where`` (a Qdrant filter)."""
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection, scroll_filter=_and(_filter(filters), where), limit=batch, offset=offset,
                with_payload=True,
            )
            for p in points:
                payload = p.payload or {}
                yield StoredChunk(id=str(p.id), text=payload.get("page_content", ""), metadata=payload.get("metadata", {}))
            if offset is None:
                return

    def count(self, filters: dict[str, Any] | None = None) -> int:
        return self.client.count(self.collection, count_filter=_filter(filters), exact=True).count


class StoreKeeper:
    """How a long-running process (a worker) holds its store. A Qdrant server's client is opened on
    first use and kept for the process's lifetime (its connection pool too); the embedded engine's
    directory is opened per use and released, because the CLI, the sweeper and the other workers
    share it in turn (one process per directory at a time). After a fork the child opens its own."""

    def __init__(self, settings: Settings, wait_s: float = 0.0) -> None:
        self.settings = settings
        self.wait_s = wait_s
        self._kept: QdrantStore | None = None
        self._pid = 0
        self.opened = 0  # how many times a client was opened (tests, diagnostics)

    @property
    def keeps(self) -> bool:
        return self.settings.qdrant_url is not None

    @contextmanager
    def session(self) -> Iterator[QdrantStore]:
        if not self.keeps:
            self.opened += 1
            with store_session(self.settings, self.wait_s) as store:
                yield store
            return
        if self._kept is None or self._pid != os.getpid():
            self.opened += 1
            self._kept = QdrantStore(open_client(self.settings), self.settings.collection, self.settings.upsert_batch_size)
            self._pid = os.getpid()
        yield self._kept

    def close(self) -> None:
        if self._kept is not None and self._pid == os.getpid():
            self._kept.client.close()
        self._kept = None


@contextmanager
def store_session(settings: Settings, wait_s: float = 0.0) -> Iterator[QdrantStore]:
    """Open a client for the duration of a block and always close it (the embedded engine's
    directory lock is released on close). ``wait_s``: how long to wait for another process to
    release the embedded engine's directory; none when a `korag serve` holds it (it never lets go)."""
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            client = open_client(settings)
            break
        except StoreBusyError:
            if time.monotonic() + delay > deadline or _held_for_good(settings):
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        yield QdrantStore(client, settings.collection, settings.upsert_batch_size)
    finally:
        client.close()


def _held_for_good(settings: Settings) -> bool:
    holder = lock_holder(settings)
    return holder is not None and holder.serving
