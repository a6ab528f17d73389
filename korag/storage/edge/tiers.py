"""Index upkeep off the search path (``EdgeClient(path, upkeep="process")``, issue 22).

qdrant-edge-py 0.9.0 holds the GIL in ``EdgeShard.optimize()``: an index step in the serving
process stops every search of it. In this mode no index step runs in the serving process:

- the collection's own shard (``shard/``) stays complete (every point: payloads, sparse and
  dense vectors) and is never optimized: sparse and payload work is fast in its one appendable
  segment (bench/RESULTS.md, issue 22), and Qdrant's IDF stays computed over every point;
- dense searches are answered from *sealed* shards (``sealed/<n>/``: dense vectors and a copy of
  the payloads for filters, HNSW-indexed) plus an exact scan of the *fresh* points (not yet in
  a sealed shard) in the collection's shard, merged by score (cosine scores are comparable
  across shards);
- :meth:`Tiers.seal` hands up to ``seal_points`` fresh points to a short-lived child process
  (``korag.storage.edge.build``) that builds and indexes a sealed shard in ``sealed/<n>.building``
  and renames it when complete; the serving process then loads it (~0.2 s), replays what was
  written meanwhile, records it in ``sealed.json`` and swaps it in;
- writes go to the sealed shards first (deletes; a re-upserted id leaves them and is fresh again),
  then to the collection's shard; hits are checked against the collection's shard, which also
  gives their payloads, so a crash between the two never returns a deleted point.

Only directories named in ``sealed.json`` are loaded; anything else under ``sealed/`` (a build
that crashed, or one not yet adopted) is removed at open.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from korag.errors import StoreError
from korag.storage.edge import build as build_module
from korag.storage.edge import upkeep

MANIFEST = "sealed.json"
SCROLL_PAGE = 10_000
EXPORT_CHUNK = 256
ID_CHUNK = 1000  # fresh ids per HasIdCondition when the conditions are rebuilt
MAX_ID_CHUNKS = 64  # more (small) conditions than this: rebuild them


def key(point_id: Any) -> Any:
    """One spelling per id: ints as they are, UUIDs as lower-case strings."""
    if isinstance(point_id, uuid.UUID):
        return str(point_id)
    if isinstance(point_id, str):
        return str(uuid.UUID(point_id))
    return point_id


def _ids(shard: qe.EdgeShard) -> set[Any]:
    out: set[Any] = set()
    offset = None
    while True:
        records, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=SCROLL_PAGE, with_payload=False,
                                                        with_vector=False))
        out.update(key(r.id) for r in records)
        if offset is None:
            return out


def has_ids(ids: set[Any], flt: qe.Filter | None = None) -> qe.Filter:
    condition = qe.HasIdCondition(set(ids))
    return qe.Filter(must=[condition] if flt is None else [flt, condition])


class Tiers:
    """The sealed shards and the fresh ids of one collection; thread-safe."""

    def __init__(self, directory: Path, main: qe.EdgeShard, dense: dict[str, dict[str, Any]], seal_points: int) -> None:
        self.root = directory / "sealed"
        self.main = main
        self.dense = dense  # vector name -> {"size", "distance", "on_disk"}
        self.seal_points = seal_points
        self._mutex = threading.RLock()
        self._building = threading.Lock()  # one build at a time
        self._journal: list[tuple[str, Any]] | None = None
        self.root.mkdir(exist_ok=True)
        names = self._manifest()
        for entry in self.root.iterdir():  # crashed or unadopted builds, stray files
            if entry.name != MANIFEST and entry.name not in names:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        self.sealed: dict[str, qe.EdgeShard] = {name: qe.EdgeShard.load(str(self.root / name)) for name in names}
        self.sealed_ids: set[Any] = set()  # ids that may be in a sealed shard (a superset)
        for shard in self.sealed.values():
            self.sealed_ids |= _ids(shard)
        self.fresh: set[Any] = _ids(main) - self.sealed_ids
        # The fresh ids as Edge conditions, built when ids are written (parsing thousands of ids
        # per search would cost tens of ms): a superset of the fresh ids that are still live.
        self._conditions: list[Any] = []
        self._rebuild_conditions()

    def _rebuild_conditions(self) -> None:
        ids = sorted(self.fresh, key=str)
        self._conditions = [qe.HasIdCondition(set(ids[i : i + ID_CHUNK])) for i in range(0, len(ids), ID_CHUNK)]

    # -- on disk ----------------------------------------------------------------------------------
    def _manifest(self) -> list[str]:
        path = self.root / MANIFEST
        if not path.exists():
            return []
        return list(json.loads(path.read_text(encoding="utf-8"))["sealed"])

    def _write_manifest(self, names: list[str]) -> None:
        tmp = self.root / (MANIFEST + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"format": 1, "sealed": names}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.root / MANIFEST)

    # -- writes -----------------------------------------------------------------------------------
    def write(self, main_op: Any, sealed_op: Any = None, moved: list[Any] | None = None,
              removed: list[Any] | None = None) -> None:
        """Apply ``sealed_op`` to every sealed shard (and journal it for a build in flight), then
        ``main_op`` to the collection's shard. ``moved``: ids (re-)written, now fresh; they
        leave the sealed shards. ``removed``: ids deleted."""
        with self._mutex:
            ops = []
            leaving = [i for i in (*(moved or []), *(removed or [])) if key(i) in self.sealed_ids]
            if self._journal is not None:  # the shard being built may hold any id handed to it
                leaving = [*(moved or []), *(removed or [])]
            if leaving:
                ops.append(qe.UpdateOperation.delete_points(leaving))
            if sealed_op is not None:
                ops.append(sealed_op)
            for op in ops:
                for shard in self.sealed.values():
                    shard.update(op)
                if self._journal is not None:
                    self._journal.append(op)
            self.main.update(main_op)
            if moved:
                keys = {key(i) for i in moved}
                self.fresh |= keys
                self.sealed_ids -= keys
                self._conditions.append(qe.HasIdCondition(set(moved)))
                if len(self._conditions) > MAX_ID_CHUNKS:
                    self._rebuild_conditions()
            if removed:
                keys = {key(i) for i in removed}
                self.fresh -= keys
                self.sealed_ids -= keys

    # -- reads ------------------------------------------------------------------------------------
    def is_dense(self, using: str | None) -> bool:
        return (using or "") in self.dense

    def query_dense(self, request: qe.QueryRequest, keep: int) -> list[Any]:
        """The top ``keep`` hits of a plain dense ``request`` (its limit already ``keep``, no
        offset, no payload) over the fresh points (exact) and every sealed shard, by score."""
        with self._mutex:
            conditions = list(self._conditions)
            shards = list(self.sealed.values())
        hits: list[Any] = []
        if conditions:
            fresh = qe.Filter(should=conditions)
            flt = fresh if request.filter is None else qe.Filter(must=[request.filter, fresh])
            hits += self.main.query(qe.QueryRequest(
                limit=keep, query=request.query, filter=flt, params=qe.SearchParams(exact=True),
                score_threshold=request.score_threshold, with_payload=False, with_vector=False))
        for shard in shards:
            hits += shard.query(request)
        hits.sort(key=lambda p: -p.score)
        seen: set[Any] = set()
        out = []
        for p in hits:
            k = key(p.id)
            if k not in seen:
                seen.add(k)
                out.append(p)
        return out[:keep]

    # -- upkeep -----------------------------------------------------------------------------------
    def due(self) -> bool:
        return len(self.fresh) >= self.seal_points

    def seal(self, indexes: dict[str, str], force: bool = False) -> bool:
        """Build one sealed shard from up to ``seal_points`` fresh points in a child process and
        swap it in. Blocks the calling thread only (it waits on the child); searches go on.
        Returns whether a shard was added."""
        with self._building:
            with self._mutex:
                if not self.fresh or (not force and not self.due()):
                    return False
                chosen = sorted(self.fresh, key=str)[: self.seal_points]
                self._journal = []
            try:
                return self._build(chosen, indexes)
            finally:
                with self._mutex:
                    self._journal = None

    def _build(self, chosen: list[Any], indexes: dict[str, str]) -> bool:
        points = []
        names = list(self.dense)
        for lo in range(0, len(chosen), EXPORT_CHUNK):  # short calls: other threads run between them
            for record in self.main.retrieve(chosen[lo : lo + EXPORT_CHUNK], True, names):
                vectors = {n: np.asarray(v, dtype=np.float32) for n, v in (record.vector or {}).items() if n in self.dense}
                points.append((record.id, vectors, record.payload))
        if not points:
            with self._mutex:
                self.fresh.difference_update(key(i) for i in chosen)
                self._rebuild_conditions()
            return False
        config = {
            "vectors": self.dense,
            "indexes": indexes,
            "hnsw": {"m": upkeep.HNSW_M, "ef_construct": upkeep.HNSW_EF_CONSTRUCT,
                     "full_scan_threshold": upkeep.FULL_SCAN_THRESHOLD_KB},
            # one segment per sealed shard, indexed unless small enough to be scanned anyway
            "optimizers": {"max_segment_size": 64 * upkeep.SEGMENT_KB, "indexing_threshold": upkeep.FULL_SCAN_THRESHOLD_KB},
        }
        number = max([int(n) for n in self._manifest()] + [int(p.name.split(".")[0]) for p in self.root.iterdir()
                                                            if p.name.split(".")[0].isdigit()] + [0]) + 1
        target = self.root / f"{number:06d}"
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".points-", suffix=".pkl", delete=False) as handle:
            pickle.dump({"config": config, "points": points}, handle, protocol=pickle.HIGHEST_PROTOCOL)
            points_file = Path(handle.name)
        try:
            done = subprocess.run([sys.executable, build_module.__file__, str(points_file), str(target)],
                                  capture_output=True, text=True)
        finally:
            points_file.unlink(missing_ok=True)
        if done.returncode != 0 or not target.is_dir():
            shutil.rmtree(target.with_name(target.name + ".building"), ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)
            raise StoreError(f"building sealed shard {target} failed (exit {done.returncode}): {done.stderr[-2000:]}")
        shard = qe.EdgeShard.load(str(target))
        with self._mutex:
            try:
                for op in self._journal or []:  # what was written while the child built
                    shard.update(op)
                shard.flush()
                self._write_manifest([*self.sealed, target.name])
            except Exception:
                shard.close()
                shutil.rmtree(target, ignore_errors=True)
                raise
            self.sealed[target.name] = shard
            adopted = _ids(shard)
            self.fresh -= adopted
            self.sealed_ids |= adopted
            self._rebuild_conditions()
        return True

    def close(self) -> None:
        with self._mutex:
            for shard in self.sealed.values():
                shard.flush()
                shard.close()
            self.sealed.clear()
