"""Collections on disk: one Edge shard per collection, its qdrant-client config beside it.

Layout under the client's directory::

    .lock                          held while a process has the directory open
    collections/<name>/shard/      the Edge shard (segments, WAL, edge_config.json)
    collections/<name>/collection.json
                                   vectors and sparse vectors as qdrant-client models, metadata

``collection.json`` is written last when a collection is created and removed first when it is
dropped, so it is the mark of a complete collection.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import qdrant_edge as qe
from qdrant_client import models

from korag.errors import StoreBusyError, StoreError
from korag.storage.edge import EdgeUnsupportedError, LocalModeDataError, upkeep

SPEC_FILE = "collection.json"
# Edge needs at least one vector per shard; a payload-only collection gets this sparse vector,
# which its points never carry. get_collection reports the collection as it was created.
PLACEHOLDER_SPARSE = "__korag_payload_only__"

_DISTANCES = {
    models.Distance.COSINE: qe.Distance.Cosine,
    models.Distance.DOT: qe.Distance.Dot,
    models.Distance.EUCLID: qe.Distance.Euclid,
    models.Distance.MANHATTAN: qe.Distance.Manhattan,
}


def busy_message(path: Path, detail: str) -> str:
    return (
        f"embedded Qdrant Edge storage {path} is in use by another process ({detail}); the embedded "
        "engine allows one process per directory: send requests through the one process that holds it "
        "(run one `korag serve`), or run a Qdrant server and set KORAG_QDRANT_URL"
    )


@dataclass(frozen=True)
class CollectionSpec:
    """What qdrant-client's ``create_collection`` was given, as korag reads it back."""

    vectors: models.VectorParams | dict[str, models.VectorParams]
    sparse_vectors: dict[str, models.SparseVectorParams] | None
    metadata: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        params = models.CollectionParams(vectors=self.vectors, sparse_vectors=self.sparse_vectors)
        return {"format": 1, "params": params.model_dump(mode="json", exclude_none=True), "metadata": self.metadata}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CollectionSpec":
        params = models.CollectionParams.model_validate(data["params"])
        vectors = params.vectors if params.vectors is not None else {}
        return cls(vectors=vectors, sparse_vectors=params.sparse_vectors, metadata=data.get("metadata"))

    def edge_config(self) -> qe.EdgeConfig:
        if isinstance(self.vectors, models.VectorParams):
            dense: Any = _dense(self.vectors)
        else:
            dense = {name: _dense(params) for name, params in self.vectors.items()}
        sparse = {name: _sparse(params) for name, params in (self.sparse_vectors or {}).items()}
        if not dense and not sparse:
            sparse = {PLACEHOLDER_SPARSE: qe.EdgeSparseVectorParams()}
        return qe.EdgeConfig(
            vectors=dense if dense else None,
            sparse_vectors=sparse if sparse else None,
            hnsw_config=upkeep.hnsw(),
            optimizers=upkeep.optimizers(),
        )

    def params(self) -> models.CollectionParams:
        return models.CollectionParams(vectors=self.vectors, sparse_vectors=self.sparse_vectors)


def _dense(params: models.VectorParams) -> qe.EdgeVectorParams:
    if params.multivector_config is not None or params.quantization_config is not None:
        raise EdgeUnsupportedError("EdgeClient translates VectorParams(size, distance, on_disk) only")
    return qe.EdgeVectorParams(size=params.size, distance=_DISTANCES[params.distance], on_disk=params.on_disk)


def _sparse(params: models.SparseVectorParams) -> qe.EdgeSparseVectorParams:
    idf = params.modifier == models.Modifier.IDF
    return qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf if idf else None)


def _check_name(name: str) -> None:
    if not name or len(name) > 255 or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise ValueError(
            f"collection name {name!r} cannot be a directory name: use up to 255 characters, "
            "no slashes, not starting with a dot"
        )


class Catalog:
    """The collections of one directory, held by this process until :meth:`close`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        _refuse_local_mode_data(root)
        self._lock_file = open(root / ".lock", "a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.close()
            raise StoreBusyError(busy_message(root, "its lock file is held")) from exc
        self._shards: dict[str, qe.EdgeShard] = {}
        self._specs: dict[str, CollectionSpec] = {}
        self._mutex = threading.RLock()
        self.closed = False

    def directory(self, name: str) -> Path:
        _check_name(name)
        return self.root / "collections" / name

    def names(self) -> list[str]:
        base = self.root / "collections"
        return sorted(p.name for p in base.iterdir() if (p / SPEC_FILE).exists()) if base.is_dir() else []

    def exists(self, name: str) -> bool:
        return (self.directory(name) / SPEC_FILE).exists()

    def spec(self, name: str) -> CollectionSpec:
        with self._mutex:
            if name not in self._specs:
                path = self.directory(name) / SPEC_FILE
                if not path.exists():
                    raise StoreError(f"collection {name!r} does not exist in {self.root}")
                try:
                    self._specs[name] = CollectionSpec.from_json(json.loads(path.read_text(encoding="utf-8")))
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    raise StoreError(
                        f"embedded store {self.root} cannot be opened: {path} is damaged or unreadable "
                        f"({type(exc).__name__}: {exc}); restore it from a backup, or move {self.root} away and "
                        "ingest again") from exc
            return self._specs[name]

    def shard(self, name: str) -> qe.EdgeShard:
        with self._mutex:
            self._check_open()
            if name not in self._shards:
                # spec(): a clear error for a missing collection. The config is given at load so
                # that shards made before the upkeep settings (korag.storage.edge.upkeep) get them too.
                config = self.spec(name).edge_config()
                self._shards[name] = edge_call(
                    self.directory(name), qe.EdgeShard.load, str(self.directory(name) / "shard"), config
                )
            return self._shards[name]

    def create(self, name: str, spec: CollectionSpec) -> None:
        with self._mutex:
            self._check_open()
            directory = self.directory(name)
            if (directory / SPEC_FILE).exists():
                raise ValueError(f"collection {name!r} already exists in {self.root}")
            if directory.exists():  # a creation that did not finish
                shutil.rmtree(directory)
            directory.mkdir(parents=True)
            config = spec.edge_config()
            self._shards[name] = edge_call(directory, qe.EdgeShard.create, str(directory / "shard"), config)
            _write_json(directory / SPEC_FILE, spec.to_json())
            self._specs[name] = spec

    def drop(self, name: str) -> bool:
        with self._mutex:
            self._check_open()
            directory = self.directory(name)
            if not (directory / SPEC_FILE).exists():
                return False
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            self._specs.pop(name, None)
            (directory / SPEC_FILE).unlink()
            shutil.rmtree(directory)
            return True

    def loaded(self) -> list[str]:
        """The collections this process has opened (and so may have written to)."""
        with self._mutex:
            return sorted(self._shards)

    def close(self) -> None:
        with self._mutex:
            if self.closed:
                return
            try:
                for shard in self._shards.values():
                    shard.flush()
                    shard.close()
            finally:
                self._shards.clear()
                self.closed = True
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                self._lock_file.close()

    def _check_open(self) -> None:
        if self.closed:
            raise StoreError(f"the Qdrant Edge client of {self.root} is closed")


def edge_call(directory: Path, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:  # Edge raises plain Exception for engine errors
        if "WouldBlock" in str(exc):
            raise StoreBusyError(busy_message(directory, "its write-ahead log is locked")) from exc
        raise StoreError(f"Qdrant Edge shard {directory}: {exc}") from exc


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def local_mode_collections(root: Path) -> list[str]:
    """The collections of qdrant-client's local engine stored in ``root`` (its ``meta.json``),
    ``["?"]`` when that file cannot be read, ``[]`` when there are none."""
    meta = root / "meta.json"
    if not meta.exists():
        return []
    try:
        collections = json.loads(meta.read_text(encoding="utf-8")).get("collections") or {}
    except (OSError, ValueError, AttributeError):
        return ["?"]
    return sorted(collections)


def _refuse_local_mode_data(root: Path) -> None:
    collections = local_mode_collections(root)
    if collections:
        raise LocalModeDataError(
            f"{root} holds collections of qdrant-client's local engine ({', '.join(collections)}), which "
            "Qdrant Edge cannot read: run `korag migrate` to copy it into the new store (no re-embedding; the old "
            f"directory is kept as {root.name}.local-backup), or serve the old data with a Qdrant server "
            "(KORAG_QDRANT_URL)"
        )
