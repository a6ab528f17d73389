"""Issue 22 feasibility: can the embedded store's index step (``EdgeShard.optimize``, which holds
the GIL in qdrant-edge-py 0.9.0) run off the search path, in a child process?

    PYTHONPATH=. python bench/upkeep_offpath.py [--build 10000] [--sparse 100000] [--json]

Measures, on synthetic data (normalised random 1024-dim vectors; Zipf-drawn sparse term vectors
with Qdrant's IDF modifier, 30 terms a point over a 50k vocabulary; 10 tenants):

(a) the parent searches an open, unindexed "fresh" shard (5,000 dense points, brute force) at a
    steady rate while (i) nothing else runs, (ii) a child process builds and optimizes a sealed
    ``--build``-point shard from a file the parent wrote, (iii) the parent itself optimizes such
    a shard in a thread (today's path), and reports search latency p50/p99 for each;
(b) the time for the parent to ``EdgeShard.load`` the child's finished shard and run its first
    and following searches, and whether a search over fresh+sealed merged exactly equals the
    same search over one shard holding every point;
(c) a sparse+payload shard of ``--sparse`` points that is never optimized: sparse search
    latency (all tenants, one tenant) and the time of a 1,000-point upsert into it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import qdrant_edge as qe

from korag.bench.store import Steady

DIM = 1024
VOCAB = 50_000
TERMS = 30
TENANTS = 10


def _config(dense: bool, sparse: bool) -> qe.EdgeConfig:
    from korag.storage.edge import upkeep

    return qe.EdgeConfig(
        vectors={"dense": qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine)} if dense else None,
        sparse_vectors={"sparse": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if sparse else None,
        hnsw_config=upkeep.hnsw(),
        optimizers=upkeep.optimizers(),
    )


def _vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _sparse_rows(n: int, seed: int) -> list[tuple[list[int], list[float]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        terms = np.unique(np.minimum(rng.zipf(1.3, TERMS), VOCAB) - 1)
        out.append((terms.tolist(), (1.0 + rng.random(len(terms))).tolist()))
    return out


def _upsert_dense(shard: qe.EdgeShard, start: int, vectors: np.ndarray, chunk: int = 1000) -> None:
    for lo in range(0, len(vectors), chunk):
        points = [
            qe.Point(start + lo + i, {"dense": row.tolist()}, {"tenant": f"t{(start + lo + i) % TENANTS}"})
            for i, row in enumerate(vectors[lo : lo + chunk])
        ]
        shard.update(qe.UpdateOperation.upsert_points(points))


def _dense_query(shard: qe.EdgeShard, q: np.ndarray, k: int = 10) -> list[tuple[int, float]]:
    found = shard.query(qe.QueryRequest(limit=k, query=qe.Query.Nearest(q.tolist(), using="dense"), with_payload=False))
    return [(p.id, p.score) for p in found]


def _pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1000, q)), 2) if xs else float("nan")


def _stats(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50_ms": _pct(xs, 50), "p99_ms": _pct(xs, 99), "max_ms": _pct(xs, 100)}


# -- the child: build one sealed shard from a file, into a temp dir, rename when complete -------------
def child(data: str, target: str) -> None:
    vectors = np.load(data)
    start = int(Path(data).stem.split("-")[-1])
    tmp = Path(target + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    shard = qe.EdgeShard.create(str(tmp), _config(dense=True, sparse=False))
    _upsert_dense(shard, start, vectors)
    t1 = time.perf_counter()
    while shard.optimize():
        pass
    t2 = time.perf_counter()
    shard.flush()
    shard.close()
    os.replace(tmp, target)
    print(json.dumps({"upsert_s": round(t1 - t0, 2), "optimize_s": round(t2 - t1, 2)}), flush=True)


def feasibility(build: int, sparse_points: int, work: Path) -> dict:
    result: dict = {"build_points": build, "sparse_points": sparse_points}
    fresh_n = 5000
    fresh = qe.EdgeShard.create(str(work / "fresh"), _config(dense=True, sparse=False))
    fresh_vectors = _vectors(fresh_n, 1)
    _upsert_dense(fresh, 0, fresh_vectors)
    queries = fresh_vectors[:50] + 0.3 * _vectors(50, 2)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    # (a-i) idle
    with Steady(lambda q: _dense_query(fresh, q), queries, 0.05) as s:
        time.sleep(5)
    result["a_idle"] = _stats([ms / 1000 for ms in s.during_ingest])

    # (a-ii) a child builds a sealed shard meanwhile
    sealed_vectors = _vectors(build, 3)
    data = work / f"points-{fresh_n}.npy"
    np.save(data, sealed_vectors)
    target = work / "sealed-1"
    with Steady(lambda q: _dense_query(fresh, q), queries, 0.05) as s:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", str(data), str(target)], capture_output=True,
                             text=True, check=True)
        result["a_child_wall_s"] = round(time.perf_counter() - t0, 2)
    result["a_child"] = json.loads(out.stdout.strip().splitlines()[-1])
    result["a_during_child_build"] = _stats([ms / 1000 for ms in s.during_ingest])
    result["a_sealed_complete"] = target.is_dir() and not Path(str(target) + ".building").exists()

    # (b) load the sealed shard and search it; exact merge against one shard with every point
    t0 = time.perf_counter()
    sealed = qe.EdgeShard.load(str(target))
    result["b_load_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    _dense_query(sealed, queries[0])
    result["b_first_search_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        _dense_query(sealed, q)
        lat.append(time.perf_counter() - t0)
    result["b_sealed_search"] = _stats(lat)
    info = sealed.info()
    result["b_sealed_indexed_vectors"] = info.indexed_vectors_count

    # merged exact top-10 (fresh exact + sealed exact) vs the brute-force truth over all vectors
    every = np.vstack([fresh_vectors, sealed_vectors])
    same = 0
    for q in queries:
        merged = sorted(
            _dense_query(fresh, q) + [(p.id, p.score) for p in sealed.query(qe.QueryRequest(
                limit=10, query=qe.Query.Nearest(q.tolist(), using="dense"),
                params=qe.SearchParams(exact=True), with_payload=False))],
            key=lambda p: -p[1])[:10]
        truth = np.argsort(-(every @ q))[:10]
        same += [p[0] for p in merged] == truth.tolist()
    result["b_exact_merge_equals_truth"] = f"{same}/{len(queries)}"

    # (a-iii) today's path: the parent optimizes a shard in a thread while searching
    inproc = qe.EdgeShard.create(str(work / "inproc"), _config(dense=True, sparse=False))
    _upsert_dense(inproc, fresh_n, sealed_vectors)
    with Steady(lambda q: _dense_query(fresh, q), queries, 0.05) as s:
        t0 = time.perf_counter()
        worker = threading.Thread(target=lambda: [None for _ in iter(inproc.optimize, False)])
        worker.start()
        worker.join()
        result["a_inprocess_optimize_s"] = round(time.perf_counter() - t0, 2)
    result["a_during_inprocess_optimize"] = _stats([ms / 1000 for ms in s.during_ingest])
    inproc.close()
    sealed.close()
    fresh.close()

    # (c) sparse + payload shard, never optimized
    sp = qe.EdgeShard.create(str(work / "sparse"), _config(dense=False, sparse=True))
    sp.update(qe.UpdateOperation.create_field_index("tenant", qe.PayloadSchemaType.Keyword))
    rows = _sparse_rows(sparse_points, 4)
    upserts = []
    t_all = time.perf_counter()
    for lo in range(0, sparse_points, 1000):
        points = [qe.Point(lo + i, {"sparse": qe.SparseVector(t, v)}, {"tenant": f"t{(lo + i) % TENANTS}", "text": "x" * 200})
                  for i, (t, v) in enumerate(rows[lo : lo + 1000])]
        t0 = time.perf_counter()
        sp.update(qe.UpdateOperation.upsert_points(points))
        upserts.append(time.perf_counter() - t0)
    result["c_upsert_points_per_s"] = round(sparse_points / (time.perf_counter() - t_all))
    result["c_upsert_1000"] = _stats(upserts)
    result["c_segments"] = sp.info().segments_count
    qrows = _sparse_rows(50, 5)
    for name, flt in (("c_sparse_search", None),
                      ("c_sparse_search_one_tenant", qe.Filter(must=[qe.FieldCondition("tenant", match=qe.MatchValue("t3"))]))):
        lat = []
        for t, v in qrows:
            t0 = time.perf_counter()
            sp.query(qe.QueryRequest(limit=50, query=qe.Query.Nearest(qe.SparseVector(t, v), using="sparse"),
                                     filter=flt, with_payload=True))
            lat.append(time.perf_counter() - t0)
        result[name] = _stats(lat)
    t0 = time.perf_counter()
    sp.update(qe.UpdateOperation.set_payload(list(range(0, 1000)), {"tag": "x"}))
    result["c_set_payload_1000_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    sp.flush()
    sp.close()
    t0 = time.perf_counter()
    sp = qe.EdgeShard.load(str(work / "sparse"))
    sp.count(qe.CountRequest(exact=True))
    result["c_reopen_s"] = round(time.perf_counter() - t0, 2)
    sp.close()
    return result


def _machine() -> dict:
    flags = ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("flags"):
                flags = " ".join(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "sse4", "fma")))
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_flags": flags, "load_avg": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=2, metavar=("DATA", "TARGET"))
    parser.add_argument("--build", type=int, default=10_000)
    parser.add_argument("--sparse", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    machine_before = _machine()
    with tempfile.TemporaryDirectory(prefix="korag-upkeep-") as tmp:
        result = feasibility(args.build, args.sparse, Path(tmp))
    result["machine"] = {**_machine(), "load_avg_before": machine_before["load_avg"]}
    print(json.dumps(result, indent=None if args.json else 1, ensure_ascii=False))


if __name__ == "__main__":
    main()
