"""Why a store in ``KORAG_EDGE_UPKEEP=process`` mode reopens slower than an ``inline`` one, and what
converting the collection's shard would cost (issue 22; figures in bench/RESULTS.md).

In process mode the collection's shard (``shard/``) is never optimized, so it stays one appendable
segment. This script writes ``--points`` points the way ``korag bench store`` does (1024-dim dense,
Kiwi BM25 sparse vectors of the AutoRAG passages, payloads with their text) through korag's own
``EdgeClient(upkeep="process")`` without sealing, then, each on a copy of that shard:

- ``load``: ``EdgeShard.load`` of the appendable shard, best of three;
- ``load_without_sparse``: the same points without their sparse vectors, to show the part of the
  load spent rebuilding the in-memory sparse inverted index of an appendable segment;
- ``convert``: ``optimize()`` with the dense HNSW disabled (``m=0``), which turns the appendable
  segment into immutable ones without building an index: wall and CPU seconds, all of it holding
  the GIL (qdrant-edge-py 0.9.0), so in a serving process every search would wait that long;
- ``load_converted``: ``EdgeShard.load`` after it;
- ``gil``: for a load, the conversion and an exact dense query of every point, each run in a
  thread while the main thread counts: how long the call took and the longest the main thread
  went without running. Equal figures: the call held the GIL throughout.

    python bench/edge_reopen.py --points 100000 [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import qdrant_edge as qe

from ingest.sparse import SparseEncoder
from korag.bench import store as bench
from korag.storage.edge import upkeep
from korag.storage.edge.catalog import CollectionSpec
from korag.storage.edge_client import EdgeClient
from korag.storage.store import DENSE, QdrantStore, point_id


def write(directory: Path, points: int, corpus: Path, sparse: bool = True) -> Path:
    """``points`` points into a process-mode store at ``directory``; returns its collection's shard."""
    passages, _, _ = bench._texts(corpus, 1)
    encoder = SparseEncoder()
    vectors = [encoder.encode_document(p) for p in passages] if sparse else None
    client = EdgeClient(directory, upkeep="process")
    store = QdrantStore(client, bench.COLLECTION, upsert_batch_size=256)
    store.ensure_collection(bench.MODEL, bench.DIM)
    for start in range(0, points, bench.WRITE_POINTS):
        n = min(bench.WRITE_POINTS, points - start)
        ids = [point_id(f"doc-{i // 10}", i % 10) for i in range(start, start + n)]
        payloads = [bench._payload(i, passages[i % len(passages)]) for i in range(start, start + n)]
        rows = [vectors[i % len(passages)] for i in range(start, start + n)] if vectors else None
        store.upsert(ids, bench._dense(start, n), payloads, rows)
    client.close()
    return directory / "collections" / bench.COLLECTION / "shard"


def best_load(shard: Path, config: qe.EdgeConfig | None = None, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        loaded = qe.EdgeShard.load(str(shard), config) if config is not None else qe.EdgeShard.load(str(shard))
        times.append(time.perf_counter() - t0)
        loaded.close()
    return round(min(times), 3)


def gil_hold(fn) -> dict[str, float]:
    """Run ``fn`` in a thread; its duration and the longest pause of this (spinning) thread, in ms."""
    done: list[float] = []

    def timed() -> None:
        t0 = time.perf_counter()
        fn()
        done.append(time.perf_counter() - t0)

    thread = threading.Thread(target=timed)
    longest, last = 0.0, time.perf_counter()
    thread.start()  # returns only once the thread lets go of the GIL
    while thread.is_alive():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    longest = max(longest, time.perf_counter() - last)  # a call that held the GIL ends the loop at once
    thread.join()
    return {"call_ms": round(done[0] * 1000, 1), "longest_pause_ms": round(longest * 1000, 1)}


def unindexed_config(shard: Path) -> qe.EdgeConfig:
    """The collection's own config with the dense HNSW off (``m=0``): optimize() only converts."""
    spec = CollectionSpec.from_json(json.loads((shard.parent / "collection.json").read_text(encoding="utf-8")))
    config = spec.edge_config()
    return qe.EdgeConfig(vectors=config.vectors, sparse_vectors=config.sparse_vectors,
                         hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=upkeep.HNSW_EF_CONSTRUCT,
                                                        full_scan_threshold=upkeep.FULL_SCAN_THRESHOLD_KB, payload_m=0),
                         optimizers=upkeep.optimizers())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--shared", type=Path, default=None, help="the shared folder (AutoRAG passages); "
                        "without it generated Korean text stands in")
    args = parser.parse_args()
    corpus = (args.shared / "data" / "autorag-ko") if args.shared else bench.DEFAULT_CORPUS
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    result: dict = {"points": args.points, "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "fma"}),
                    "cores": os.cpu_count()}
    work = Path(tempfile.mkdtemp(prefix="korag-edge-reopen-"))
    try:
        t0 = time.perf_counter()
        shard = write(work / "full", args.points, corpus)
        result["write_s"] = round(time.perf_counter() - t0, 1)
        result["load_s"] = best_load(shard)
        result["load_without_sparse_s"] = best_load(write(work / "dense", args.points, corpus, sparse=False))
        copy = work / "converted"
        shutil.copytree(shard, copy)
        config = unindexed_config(shard)
        gil: dict[str, dict[str, float]] = {}
        loaded = qe.EdgeShard.load(str(shard))
        query = qe.QueryRequest(query=qe.Query.Nearest(bench._dense(7, 1)[0].tolist(), using=DENSE), limit=10,
                                params=qe.SearchParams(exact=True))
        gil["query_exact"] = gil_hold(lambda: loaded.query(query))
        loaded.close()
        gil["load"] = gil_hold(lambda: qe.EdgeShard.load(str(shard)).close())
        loaded = qe.EdgeShard.load(str(copy), config)
        c0 = time.process_time()  # the spinning thread adds no CPU while the call holds the GIL
        gil["convert"] = gil_hold(loaded.optimize)
        result["convert_s"] = round(gil["convert"]["call_ms"] / 1000, 2)
        result["convert_cpu_s"] = round(time.process_time() - c0, 2)
        loaded.close()
        result["gil"] = gil
        result["convert_ms_per_1000_points"] = round(1000 * result["convert_cpu_s"] / args.points * 1000, 1)
        result["segments_after"] = len(list((copy / "segments").iterdir()))
        result["load_converted_s"] = best_load(copy, config)
        result["load_average"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
