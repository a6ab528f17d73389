"""What one sealed shard costs by its size: the figures behind ``korag.storage.edge.tiers``'s
``MAX_MERGED`` and ``MANY_SHARDS`` (issue 22; bench/RESULTS.md).

A process-mode search asks every sealed shard, so at 1M points the number of shards decides what
a search costs; bigger shards mean fewer queries but each point indexed once more. For each size
in ``--sizes`` this builds a sealed shard the way korag does (``korag.storage.edge.build``: int8
HNSW, korag's HNSW settings) from ``korag bench store``'s synthetic 1024-dim vectors, then times:

- ``build_s``: the child's whole build (upserts, ``optimize``, flush);
- ``query_p50_ms`` / ``query_p95_ms``: one dense query as ``Tiers.query_dense`` sends it (limit 10,
  int8 with 2x oversampling and rescoring), 100 queries near stored points;
- ``load_s``: ``EdgeShard.load`` (what adopting a built shard and reopening cost, holding the
  GIL), the best of three, with the shard's files dropped from the page cache before each;
- ``disk_mb``.

``--recall``: what merging into bigger shards does to recall, on real Korean embeddings
(``bench/dense_index.py``'s 15,788 AutoRAG pieces and 514 queries, e5-small, cached): the points
split in id order into 16, 4 and 1 int8 HNSW shards, each asked as ``Tiers.query_dense`` asks a
sealed shard and the hits merged by score; recall@10 against exact search (numpy).

    python bench/sealed_shards.py [--sizes 5000 20000 80000] [--recall [--shared ../shared] [--model DIR]]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import qdrant_edge as qe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench.dense_index

from bench import dense_index  # noqa: E402
from korag.bench import store as bench  # noqa: E402
from korag.storage.edge import build, tiers  # noqa: E402

QUERIES = 100


def _build(points: int, target: Path) -> float:
    points_file = target.with_suffix(".pkl")
    with open(points_file, "wb") as handle:
        # what Tiers._build writes for a collection with one 1024-dim dense vector
        pickle.dump(tiers.build_config({"dense": {"size": bench.DIM, "distance": "Cosine", "on_disk": None}}, {}),
                    handle)
        for lo in range(0, points, tiers.EXPORT_CHUNK):
            rows = bench._dense(lo, min(tiers.EXPORT_CHUNK, points - lo))
            pickle.dump([(lo + i, {"dense": row}, {"n": lo + i}) for i, row in enumerate(rows)], handle)
    t0 = time.perf_counter()
    build.build(points_file, target)
    points_file.unlink()
    return time.perf_counter() - t0


def _uncache(path: Path) -> None:
    for directory, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def measure(points: int, workdir: Path) -> dict:
    target = workdir / f"{points}"
    build_s = _build(points, target)
    loads = []
    for _ in range(3):
        _uncache(target)
        t0 = time.perf_counter()
        qe.EdgeShard.load(str(target)).close()
        loads.append(time.perf_counter() - t0)
    shard = qe.EdgeShard.load(str(target))
    times = []
    for q in bench.near_queries(points, QUERIES + 10, np.random.default_rng(1)):
        request = tiers._rescored(qe.QueryRequest(limit=10, query=qe.Query.Nearest(q.tolist(), using="dense")))
        t0 = time.perf_counter()
        shard.query(request)
        times.append((time.perf_counter() - t0) * 1000)
    shard.close()
    times = times[10:]  # warm-up
    return {"points": points, "build_s": round(build_s, 1), "load_s": round(min(loads), 2),
            "query_p50_ms": round(float(np.percentile(times, 50)), 2),
            "query_p95_ms": round(float(np.percentile(times, 95)), 2),
            "disk_mb": round(bench.disk_bytes(target) / 2**20)}


def _query(shards: list[tuple[qe.EdgeShard, int]], vector: np.ndarray, limit: int = 10) -> list[int]:
    """The top ``limit`` of every shard, merged by score, as ``Tiers.query_dense`` does (ids offset
    by each shard's first row)."""
    request = tiers._rescored(qe.QueryRequest(limit=limit, query=qe.Query.Nearest(vector.tolist(), using="dense")))
    hits = [(p.score, first + int(p.id)) for shard, first in shards for p in shard.query(request)]
    return [row for _, row in sorted(hits, reverse=True)[:limit]]


def merged_recall(shared: Path, model: Path, workdir: Path, splits: tuple[int, ...] = (16, 4, 1)) -> list[dict]:
    data = dense_index.dataset(shared, model, piece_queries=400)
    vectors, queries = data["vectors"], data["queries"]
    truth = dense_index.exact_top(vectors, queries)
    out = []
    for parts in splits:
        bounds = np.linspace(0, len(vectors), parts + 1).astype(int)
        shards = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):  # int8, HNSW at any size (thresholds of 1 KB)
            built = dense_index.build_shard(workdir / f"recall-{parts}-{lo}", vectors[lo:hi], (True, 1, 1))
            shards.append((built["shard"], int(lo)))
        found = [_query(shards, q) for q in queries]
        for shard, _ in shards:
            shard.close()
        out.append({"shards": parts, "points_per_shard": int(bounds[1]), "points": len(vectors),
                    "queries": len(queries), "recall_at_10": round(dense_index.recall(found, truth), 4)})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[5_000, 20_000, 80_000])
    parser.add_argument("--recall", action="store_true", help="also recall by shard size on real embeddings")
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--model", type=Path, default=Path(__file__).resolve().parents[1] / ".korag" / "models" / "e5-small")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="korag-sealed-"))
    try:
        print(json.dumps({"machine": dense_index.machine()}))
        for points in args.sizes:
            print(json.dumps(measure(points, workdir)), flush=True)
        if args.recall:
            for row in merged_recall(args.shared, args.model, workdir):
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
