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
  (``korag.storage.edge.build``, at the lowest CPU priority) that builds and indexes a sealed
  shard in ``sealed/<n>.building`` and renames it when complete; the serving process then loads
  it (~0.1 s), replays what was written meanwhile, records it in ``sealed.json`` and swaps it in;
- :meth:`Tiers.merge` rebuilds ``MERGE_FANOUT`` small sealed shards as one the same way (at
  most ``MAX_MERGED`` times ``seal_points``), so a search and a reopen visit a few shards, not
  one per index step;
- writes go to the sealed shards first (deletes, to the shard that holds the id; a re-upserted id
  leaves it and is fresh again), then to the collection's shard; hits are checked against the
  collection's shard, which also gives their payloads, so a crash between the two never returns a
  deleted point. Searches do not wait for writes (:meth:`Tiers.write`).

Only directories named in ``sealed.json`` are loaded; anything else under ``sealed/`` (a build
that crashed, or one not yet adopted) is removed at open. The sealed shards are loaded in a
thread (each load holds the GIL ~0.1 s); until they are, dense searches scan the collection's
shard exactly and writes wait. Sealed shards are derived data: ones that cannot be loaded are
dropped (their points are fresh again), and a store written in ``inline`` mode drops them all
(:func:`discard`), since its writes never reached them.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections import Counter
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
MERGE_FANOUT = 4  # this many sealed shards of one size class are rebuilt as one ...
# ... of at most this many times seal_points: 80k points at 1024 dimensions. A search asks every
# sealed shard, and one query of an 80k-point shard costs 1.5x one of a 20k-point shard (0.70
# against 0.47 ms, int8), so at 1M points a search makes ~14 shard queries instead of ~50
# (bench/RESULTS.md, issue 22). Merging beyond the first size class (into 80k) indexes each point
# a third time, so it is done only while a collection has more than MANY_SHARDS sealed shards:
# a store of up to ~250k points keeps 20k-point shards and its upkeep costs what it did. Recall:
# on real e5 vectors each 4x bigger shard loses ~0.003 of recall@10 (bench/sealed_shards.py --recall).
MAX_MERGED = 16
MANY_SHARDS = 12
# Sealed shards keep an int8 copy of their dense vectors (Qdrant's scalar quantisation, in RAM):
# the HNSW index is built and walked on it, then twice the asked-for hits are rescored with the
# float vectors. On e5-small's Korean vectors: recall@10 against exact 0.994 as with float, search
# ~2x and the index build 2-3.5x faster (bench/RESULTS.md, "int8 quantisation"); rescored scores
# are exact cosines, so hits of different shards still merge by score.
QUANTIZATION = "int8"
OVERSAMPLING = 2.0

log = logging.getLogger(__name__)


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


def _rescored(request: qe.QueryRequest) -> qe.QueryRequest:
    """``request`` for a sealed shard: its int8 vectors find ``OVERSAMPLING`` times the hits, the
    float vectors rescore them (an exact request ignores the int8 vectors anyway)."""
    params = request.params
    return qe.QueryRequest(
        limit=request.limit, query=request.query, filter=request.filter, score_threshold=request.score_threshold,
        with_payload=False, with_vector=False,
        params=qe.SearchParams(
            hnsw_ef=params.hnsw_ef if params is not None else None,
            exact=params.exact if params is not None else False,
            indexed_only=params.indexed_only if params is not None else False,
            quantization=qe.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING)))


def _open_shard(path: Path) -> qe.EdgeShard:
    return qe.EdgeShard.load(str(path))


def build_config(dense: dict[str, dict[str, Any]], indexes: dict[str, str]) -> dict[str, Any]:
    """What a build child (``korag.storage.edge.build``) makes a sealed shard of: ``dense`` vector
    name -> {"size", "distance", "on_disk"}, ``indexes`` payload field -> Edge schema name."""
    return {
        "vectors": dense,
        "indexes": indexes,
        "hnsw": {"m": upkeep.HNSW_M, "ef_construct": upkeep.HNSW_EF_CONSTRUCT,
                 "full_scan_threshold": upkeep.FULL_SCAN_THRESHOLD_KB},
        # one segment per sealed shard, indexed unless small enough to be scanned anyway
        "optimizers": {"max_segment_size": 64 * upkeep.SEGMENT_KB, "indexing_threshold": upkeep.FULL_SCAN_THRESHOLD_KB},
        "quantization": QUANTIZATION,
    }


def discard(directory: Path) -> bool:
    """Drop a collection's sealed shards (``directory``: the collection's). Called before a store
    in ``inline`` mode writes to the collection: its writes would not reach them, and the
    collection's shard holds every point. Returns whether there were any."""
    root = directory / "sealed"
    if not root.exists():
        return False
    shutil.rmtree(root)
    return True


class Tiers:
    """The sealed shards and the fresh ids of one collection; thread-safe."""

    def __init__(self, directory: Path, main: qe.EdgeShard, dense: dict[str, dict[str, Any]], seal_points: int) -> None:
        self.root = directory / "sealed"
        self.main = main
        self.dense = dense  # vector name -> {"size", "distance", "on_disk"}
        self.seal_points = seal_points
        # Two locks. ``_writes`` orders the writers (writes, the start of a build, the adoption of
        # its shard) and guards what only they use (``owner``, ``sizes``, ``fresh``); searches
        # never take it, so a write into the collection's shard (up to ~1 s at 1M points) never
        # holds them up. ``_mutex`` guards what searches read (the shard list, the fresh-id
        # conditions, searches in flight), which is changed holding both (``_writes`` first) and
        # only for short steps: what takes time (the ids of an adopted shard, the conditions) is
        # computed before ``_mutex`` is taken.
        self._writes = threading.RLock()
        self._mutex = threading.RLock()
        self._building = threading.Lock()  # one build at a time
        self._journal: list[Any] | None = None  # writes the shard being built must replay
        self._chosen: set[Any] = set()  # the ids handed to that build
        self.sealed: dict[str, qe.EdgeShard] = {}
        self.owner: dict[Any, str] = {}  # id -> the sealed shard that holds it
        self.sizes: Counter[str] = Counter()  # sealed shard -> its points
        self.fresh: set[Any] = set()
        # The fresh ids as Edge conditions, built when ids are written (parsing thousands of ids
        # per search would cost tens of ms): a superset of the fresh ids that are still live.
        self._conditions: list[Any] = []
        self._failed: BaseException | None = None
        # Searches in flight per generation of the shard list: a merged-away shard is closed
        # only when no search that may hold it is left.
        self._generation = 0
        self._searches: Counter[int] = Counter()
        self._idle = threading.Condition(self._mutex)
        self.root.mkdir(exist_ok=True)
        self._sweep(set(self._manifest()))  # crashed or unadopted builds, stray files
        self.ready = threading.Event()
        self._loader = threading.Thread(target=self._load, name=f"korag-tiers-{directory.name}", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        try:
            try:
                for name in self._manifest():
                    shard = _open_shard(self.root / name)
                    self.sealed[name] = shard
                    self._own(name, _ids(shard))
            except Exception as exc:  # derived data: rebuilt from the collection's shard
                log.warning("sealed shards in %s unreadable (%s): dropped, their points are indexed again", self.root, exc)
                self._drop_all()
            self.fresh = _ids(self.main) - self.owner.keys()
            self._rebuild_conditions()
        except BaseException as exc:
            self._failed = exc
        finally:
            self.ready.set()

    def _drop_all(self) -> None:
        for shard in self.sealed.values():
            try:
                shard.close()
            except Exception:  # noqa: BLE001 - being thrown away
                pass
        self.sealed.clear()
        self.owner.clear()
        self.sizes.clear()
        self._write_manifest([])
        self._sweep(set())

    def _sweep(self, keep: set[str]) -> None:
        """Remove everything under ``sealed/`` but the manifest and the shards in ``keep``."""
        for entry in self.root.iterdir():
            if entry.name != MANIFEST and entry.name not in keep:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def _wait(self) -> None:
        self.ready.wait()
        if self._failed is not None:
            raise StoreError(f"opening the sealed shards in {self.root} failed: {self._failed}") from self._failed

    def _own(self, name: str, ids: set[Any]) -> None:
        for k in ids:
            previous = self.owner.get(k)
            if previous is not None:
                self.sizes[previous] -= 1
            self.owner[k] = name
        self.sizes[name] += len(ids)

    def _disown(self, keys: set[Any]) -> None:
        for k in keys:
            name = self.owner.pop(k, None)
            if name is not None:
                self.sizes[name] -= 1

    def _fresh_conditions(self) -> list[Any]:
        """The fresh ids as conditions, ``ID_CHUNK`` ids each; the caller holds ``_writes``."""
        ids = sorted(self.fresh, key=str)
        return [qe.HasIdCondition(set(ids[i : i + ID_CHUNK])) for i in range(0, len(ids), ID_CHUNK)]

    def _rebuild_conditions(self) -> None:
        conditions = self._fresh_conditions()
        with self._mutex:
            self._conditions = conditions

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
        """Apply ``main_op`` to the collection's shard and what it changes to the sealed shards.
        ``moved``: ids (re-)written, now fresh; they leave the sealed shards that hold them.
        ``removed``: ids deleted. ``sealed_op`` (payload updates, deletes by filter) goes to every
        sealed shard. What a build in flight must replay is journaled.

        A search that starts while a write runs finds each re-written point, as it was or as
        written: moved ids join the fresh-id conditions before they leave their sealed shards,
        while the collection's shard still holds their old version."""
        self._wait()
        moved, removed = moved or [], removed or []
        with self._writes:
            if moved:
                with self._mutex:
                    self._conditions.append(qe.HasIdCondition(set(moved)))
            by_shard: dict[str, list[Any]] = {}
            for i in (*moved, *removed):
                name = self.owner.get(key(i))
                if name is not None:
                    by_shard.setdefault(name, []).append(i)
            left: set[Any] = set()  # ids gone from their sealed shard
            try:
                for name, ids in by_shard.items():
                    self.sealed[name].update(qe.UpdateOperation.delete_points(ids))
                    left.update(key(i) for i in ids)
                if sealed_op is not None:
                    for shard in self.sealed.values():
                        shard.update(sealed_op)
                if self._journal is not None:  # the shard being built holds the chosen ids
                    built = [i for i in (*moved, *removed) if key(i) in self._chosen]
                    if built:
                        self._journal.append(qe.UpdateOperation.delete_points(built))
                    if sealed_op is not None:
                        self._journal.append(sealed_op)
                self.main.update(main_op)
            except BaseException:
                if left:  # still in the collection's shard (as they were or as written): search them exactly
                    self.fresh |= left
                    self._disown(left)
                    self._rebuild_conditions()
                raise
            if moved:
                keys = {key(i) for i in moved}
                self.fresh |= keys
                self._disown(keys)
            if removed:
                keys = {key(i) for i in removed}
                self.fresh -= keys
                self._disown(keys)
            if len(self._conditions) > MAX_ID_CHUNKS:
                self._rebuild_conditions()

    # -- reads ------------------------------------------------------------------------------------
    def is_dense(self, using: str | None) -> bool:
        return (using or "") in self.dense

    def query_dense(self, request: qe.QueryRequest, keep: int) -> list[Any] | None:
        """The top ``keep`` hits of a plain dense ``request`` (its limit already ``keep``, no
        offset, no payload) over the fresh points (exact) and every sealed shard, by score.
        None while the sealed shards are being loaded: ask the collection's shard."""
        if not self.ready.is_set() or self._failed is not None:
            return None
        with self._mutex:
            conditions = list(self._conditions)
            shards = list(self.sealed.values())
            generation = self._generation
            self._searches[generation] += 1
        hits: list[Any] = []
        try:
            if conditions:
                fresh = qe.Filter(should=conditions)
                flt = fresh if request.filter is None else qe.Filter(must=[request.filter, fresh])
                hits += self.main.query(qe.QueryRequest(
                    limit=keep, query=request.query, filter=flt, params=qe.SearchParams(exact=True),
                    score_threshold=request.score_threshold, with_payload=False, with_vector=False))
            if shards:
                rescored = _rescored(request)
                for shard in shards:
                    hits += shard.query(rescored)
        finally:
            with self._mutex:
                self._searches[generation] -= 1
                if not self._searches[generation]:
                    del self._searches[generation]
                    self._idle.notify_all()
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
        self._wait()
        return len(self.fresh) >= self.seal_points

    def seal(self, indexes: dict[str, str], force: bool = False) -> bool:
        """Build one sealed shard from up to ``seal_points`` fresh points in a child process and
        swap it in. Blocks the calling thread only (it waits on the child); searches go on.
        Returns whether a shard was added."""
        self._wait()
        with self._building:
            with self._writes:
                if not self.fresh or (not force and not self.due()):
                    return False
                chosen = sorted(self.fresh, key=str)[: self.seal_points]
                self._start_journal(chosen)
            try:
                return self._build(chosen, indexes, replaces=[])
            finally:
                self._end_journal()

    def mergeable(self) -> list[str]:
        """The oldest ``MERGE_FANOUT`` sealed shards of the smallest size class that has that many
        (class n: fewer than ``seal_points * MERGE_FANOUT ** (n + 1)`` points), none of them
        already ``MAX_MERGED`` times ``seal_points``, and of a class above the first only while
        there are more than ``MANY_SHARDS`` sealed shards; [] when there are none."""
        classes: dict[int, list[str]] = {}
        with self._writes:
            for name in self.sealed:
                size = self.sizes[name]
                if size > self.seal_points * (MAX_MERGED - 1):
                    continue  # as big as merging makes them (it drops deleted points)
                level = 0
                while size >= self.seal_points * MERGE_FANOUT ** (level + 1):
                    level += 1
                classes.setdefault(level, []).append(name)
            many = len(self.sealed) > MANY_SHARDS
        for level in sorted(classes):
            if len(classes[level]) >= MERGE_FANOUT and (level == 0 or many):
                return classes[level][:MERGE_FANOUT]
        return []

    def merge(self, indexes: dict[str, str]) -> bool:
        """Rebuild the shards :meth:`mergeable` names as one, in a child process, and swap it in
        for them. Returns whether it merged."""
        self._wait()
        with self._building:
            with self._writes:
                names = self.mergeable()
                if not names:
                    return False
                chosen = sorted((k for k, name in self.owner.items() if name in names), key=str)
                self._start_journal(chosen)
            try:
                return self._build(chosen, indexes, replaces=names)
            finally:
                self._end_journal()

    def _start_journal(self, chosen: list[Any]) -> None:
        self._chosen = set(chosen)
        self._journal = []

    def _end_journal(self) -> None:
        with self._writes:
            self._journal = None
            self._chosen = set()

    def _export(self, chosen: list[Any], handle: Any) -> int:
        """Pickle the chosen points (dense vectors, payload) from the collection's shard into
        ``handle``, in records of ``EXPORT_CHUNK`` points: memory stays one chunk, and other
        threads run between the short calls."""
        names = list(self.dense)
        count = 0
        for lo in range(0, len(chosen), EXPORT_CHUNK):
            chunk = []
            for record in self.main.retrieve(chosen[lo : lo + EXPORT_CHUNK], True, names):
                vectors = {n: np.asarray(v, dtype=np.float32) for n, v in (record.vector or {}).items() if n in self.dense}
                chunk.append((record.id, vectors, record.payload))
            if chunk:
                pickle.dump(chunk, handle, protocol=pickle.HIGHEST_PROTOCOL)
                count += len(chunk)
        return count

    def _build(self, chosen: list[Any], indexes: dict[str, str], replaces: list[str]) -> bool:
        config = build_config(self.dense, indexes)
        number = max([int(n) for n in self._manifest()] + [int(p.name.split(".")[0]) for p in self.root.iterdir()
                                                            if p.name.split(".")[0].isdigit()] + [0]) + 1
        target = self.root / f"{number:06d}"
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".points-", suffix=".pkl", delete=False) as handle:
            points_file = Path(handle.name)
            try:
                pickle.dump(config, handle, protocol=pickle.HIGHEST_PROTOCOL)
                exported = self._export(chosen, handle)
            except BaseException:
                points_file.unlink(missing_ok=True)
                raise
        if not exported:
            points_file.unlink(missing_ok=True)
            if replaces:  # every point of the shards to merge is gone: drop them
                self._swap(None, replaces)
                return True
            with self._writes:
                self.fresh.difference_update(key(i) for i in chosen)
                self._rebuild_conditions()
            return False
        try:
            done = subprocess.run([sys.executable, build_module.__file__, str(points_file), str(target)],
                                  capture_output=True, text=True)
        finally:
            points_file.unlink(missing_ok=True)
        if done.returncode != 0 or not target.is_dir():
            shutil.rmtree(target.with_name(target.name + ".building"), ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)
            raise StoreError(f"building sealed shard {target} failed (exit {done.returncode}): {done.stderr[-2000:]}")
        self._swap(target, replaces)
        return True

    def _swap(self, target: Path | None, replaces: list[str]) -> None:
        """Adopt the built shard in ``target`` (replaying what was written meanwhile) in place of
        the sealed shards ``replaces``; close and remove those once no search holds them. Writes
        wait meanwhile; searches only while the shard list is swapped."""
        shard = _open_shard(target) if target is not None else None
        with self._writes:
            names = [n for n in self.sealed if n not in replaces] + ([target.name] if target is not None else [])
            try:
                if shard is not None:
                    for op in self._journal or []:  # what was written while the child built
                        shard.update(op)
                    shard.flush()
                self._write_manifest(names)
            except Exception:
                if shard is not None:
                    shard.close()
                    shutil.rmtree(target, ignore_errors=True)
                raise
            conditions = None
            if shard is not None:
                adopted = _ids(shard)
                self._own(target.name, adopted)
                self.fresh -= adopted
                conditions = self._fresh_conditions()
            for name in replaces:
                if self.sizes.pop(name, 0) > 0:  # ids not rebuilt (gone from the collection's shard)
                    for k in [k for k, n in self.owner.items() if n == name]:
                        del self.owner[k]
            with self._mutex:  # searches wait only while the shard list and the conditions change
                old = [self.sealed.pop(name) for name in replaces]
                if shard is not None:
                    self.sealed[target.name] = shard
                    self._conditions = conditions
                self._generation += 1
                while any(g < self._generation for g in self._searches):
                    self._idle.wait()
        for name, gone in zip(replaces, old):
            gone.close()
            shutil.rmtree(self.root / name, ignore_errors=True)

    def close(self) -> None:
        self._loader.join()
        with self._writes, self._mutex:
            for shard in self.sealed.values():
                shard.flush()
                shard.close()
            self.sealed.clear()
