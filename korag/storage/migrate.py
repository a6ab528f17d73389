"""``korag migrate``: copy an embedded store written by qdrant-client's local mode (korag before
Qdrant Edge) into the Qdrant Edge store, without embedding anything again.

Every collection is copied with its vectors (dense and sparse), payloads, metadata and vector
configuration; korag's chunk collections get korag's payload indexes (the local mode kept none).
The new store is written beside the old one (``qdrant.edge-migrating``), its counts checked
against the old ones, and only then swapped in: the old directory becomes ``qdrant.local-backup``
and the new one ``qdrant``. A migration that stops half-way leaves the old store in place and is
simply run again.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient, models

from korag.errors import StoreError
from korag.storage.edge.catalog import local_mode_collections
from korag.storage.edge_client import EdgeClient
from korag.storage.store import DENSE, QdrantStore

BATCH = 512


@dataclass
class CollectionCopy:
    name: str
    points: int


@dataclass
class Migration:
    """What ``migrate`` did; ``migrated`` False: there was nothing to migrate (``reason``)."""

    migrated: bool
    store: str
    backup: str | None = None
    collections: list[CollectionCopy] = field(default_factory=list)
    points: int = 0
    seconds: float = 0.0
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def backup_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.local-backup")


def needs_migration(path: Path) -> bool:
    """Does ``path`` (``KORAG_DATA_DIR/qdrant``) hold collections of qdrant-client's local mode?"""
    return bool(local_mode_collections(path))


def migrate(path: Path) -> Migration:
    """Copy the local-mode store in ``path`` into a Qdrant Edge store at the same place."""
    backup, staging = backup_path(path), path.with_name(f"{path.name}.edge-migrating")
    if not path.exists() and backup.exists() and staging.exists():  # stopped between the two renames
        staging.rename(path)
        return Migration(migrated=True, store=str(path), backup=str(backup), reason="finished an interrupted swap")
    if not needs_migration(path):
        reason = f"{path} holds no data of qdrant-client's local mode" if path.exists() else f"{path} does not exist"
        return Migration(migrated=False, store=str(path), reason=reason)
    if backup.exists():
        raise StoreError(
            f"cannot migrate {path}: {backup} already exists (an earlier migration's backup); move it away first"
        )
    started = time.perf_counter()
    if staging.exists():  # an earlier attempt that stopped half-way
        shutil.rmtree(staging)
    try:
        old = QdrantClient(path=str(path))
    except RuntimeError as exc:  # portalocker: another process has it open
        raise StoreError(f"cannot migrate {path}: it is in use by another process ({exc}); stop it first") from exc
    copies = []
    try:
        new = EdgeClient(staging)
        try:
            for description in old.get_collections().collections:
                copies.append(_copy_collection(old, new, description.name))
        finally:
            new.close()
    finally:
        old.close()
    path.rename(backup)
    staging.rename(path)
    return Migration(
        migrated=True, store=str(path), backup=str(backup), collections=copies,
        points=sum(c.points for c in copies), seconds=round(time.perf_counter() - started, 2),
    )


def _copy_collection(old: QdrantClient, new: EdgeClient, name: str) -> CollectionCopy:
    info = old.get_collection(name)
    _create_like(new, name, info)
    offset = None
    while True:
        records, offset = old.scroll(name, limit=BATCH, offset=offset, with_payload=True, with_vectors=True)
        if records:
            points = [models.PointStruct(id=r.id, vector=r.vector if r.vector is not None else {}, payload=r.payload)
                      for r in records]
            new.upsert(name, points=points, wait=True)
        if offset is None:
            break
    expected = old.count(name, exact=True).count
    copied = new.count(name, exact=True).count
    if copied != expected:
        raise StoreError(f"migrating collection {name!r}: {copied} of {expected} points arrived; the old store is kept")
    return CollectionCopy(name=name, points=copied)


def _create_like(new: EdgeClient, name: str, info: models.CollectionInfo) -> None:
    """The collection as the old store had it; a korag chunk collection through korag's own code,
    so it gets the payload indexes that korag creates (the local mode stored none)."""
    params, metadata = info.config.params, info.config.metadata or {}
    vectors = params.vectors
    if "embedding_model" in metadata and isinstance(vectors, dict) and set(vectors) == {DENSE}:
        QdrantStore(new, name).ensure_collection(metadata["embedding_model"], vectors[DENSE].size)
        created = new.get_collection(name).config
        if (created.params.sparse_vectors or {}).keys() != (params.sparse_vectors or {}).keys() or created.metadata != metadata:
            raise StoreError(f"migrating collection {name!r}: its configuration is not korag's; nothing was changed")
    else:
        new.create_collection(name, vectors_config=vectors if vectors is not None else {},
                              sparse_vectors_config=params.sparse_vectors, metadata=info.config.metadata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, schema in (info.payload_schema or {}).items():
            new.create_payload_index(name, key, field_schema=schema.params if schema.params is not None else schema.data_type)

