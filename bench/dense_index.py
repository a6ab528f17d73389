"""Dense index variants on real Korean embeddings (issue 22): Qdrant's scalar int8 quantisation
against float vectors, HNSW against exact scans, and the recall of korag's tiered store.

The autorag-ko passages are split into sentence-sized pieces (:func:`pieces`) and embedded by
korag's own :class:`ingest.embedder.Embedder` ("passage: " / "query: " prefixes), cached as
``.npy`` under ``.korag/bench/dense_index/``. Queries: the dataset's real questions, plus
corpus pieces asked as queries (``--piece-queries``) so recall@10 is not coarse.

1. Edge shards built directly (``EdgeShard.create``, upsert, ``optimize``) with the config of
   korag's sealed shards (``korag.storage.edge.build``: cosine, vectors in RAM, HNSW m/ef_construct/
   full_scan_threshold of ``korag.storage.edge.upkeep``), with and without
   ``ScalarQuantizationConfig(Int8)``; recall@10 against exact float search (numpy) and single-thread
   latency of each search variant, optimize time, disk size.
2. The same vectors written through ``EdgeClient(path, upkeep="process", seal_points=S)`` and
   ``QdrantStore`` in batches of S points, ``after_batch`` after each (seals and merges), then a
   forced seal of what is left; dense recall@10 of its searches, and of an ``inline`` store's.

    python bench/dense_index.py [--shared ../shared] [--model PATH] [--seal-points 2000]

Prints the CPU, the load average, markdown tables and one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
E5_SMALL = ROOT / ".korag" / "models" / "e5-small"  # where make quality builds it (E5_DIR)
CACHE = ROOT / ".korag" / "bench" / "dense_index"
K = 10
MIN_CHARS = 10
MAX_CHARS = 300  # longer lines (tables flattened into one line) are cut into windows of this size
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
COLLECTION = "korag"
VECTOR = "dense"


# -- pure helpers (tests/test_bench_dense_index.py) ------------------------------------------------
def pieces(passages: Iterable[str], min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS) -> list[str]:
    """Sentence-sized pieces of ``passages``: split at sentence ends and line breaks, pieces
    shorter than ``min_chars`` dropped, longer than ``max_chars`` cut into windows, duplicates
    (exact ties would make recall ambiguous) kept once, in first-seen order."""
    out: dict[str, None] = {}
    for passage in passages:
        for part in SENTENCE_END.split(passage):
            part = " ".join(part.split())
            for start in range(0, len(part), max_chars):
                piece = part[start : start + max_chars].strip()
                if len(piece) >= min_chars:
                    out.setdefault(piece, None)
    return list(out)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Row indices of each query's ``k`` nearest vectors by cosine (both sides unit length), best first."""
    scores = queries @ vectors.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def recall(found: Sequence[Iterable[Any]], truth: Sequence[Iterable[Any]], k: int = K) -> float:
    """Mean share of each query's true top ``k`` that the search found (its first ``k`` hits)."""
    hits = sum(len(set(list(f)[:k]) & set(list(t)[:k])) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth)) if len(truth) else 0.0


def percentile_ms(times_s: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(times_s) * 1000
    return {"p50": round(float(np.percentile(arr, 50)), 3), "p95": round(float(np.percentile(arr, 95)), 3)}


# -- machine ---------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    flags: set[str] = set()
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "avx512_vnni": "avx512_vnni" in flags,
            "load_avg": [round(x, 2) for x in os.getloadavg()]}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- data ------------------------------------------------------------------------------------------
def _cached(name: str, texts: list[str], embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    path = CACHE / f"{name}-{len(texts)}-{digest}.npy"
    if path.exists():
        return np.load(path)
    t0 = time.perf_counter()
    out = np.concatenate([embed(texts[i : i + 256]) for i in range(0, len(texts), 256)]).astype(np.float32)
    print(f"embedded {len(texts)} {name} in {time.perf_counter() - t0:.0f} s (load {load()})", file=sys.stderr,
          flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def dataset(shared: Path, model: Path, piece_queries: int) -> dict[str, Any]:
    data = shared / "data" / "autorag-ko"
    passages = [json.loads(line)["text"] for line in (data / "corpus.jsonl").open(encoding="utf-8")]
    questions = [json.loads(line)["text"] for line in (data / "queries.jsonl").open(encoding="utf-8")]
    texts = pieces(passages)
    rng = np.random.default_rng(22)
    asked = [texts[i] for i in sorted(rng.choice(len(texts), size=min(piece_queries, len(texts)), replace=False))]
    embedder = None

    def encoder():
        nonlocal embedder
        if embedder is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from ingest.embedder import Embedder  # lazy: torch
            from korag.settings import Settings

            embedder = Embedder.load(Settings(embedding_model=str(model)))
        return embedder

    vectors = _cached("passages", texts, lambda b: encoder().embed_passage_texts(b))
    queries = _cached("queries", questions + asked, lambda b: encoder().embed_queries(b))
    for arr in (vectors, queries):
        arr /= np.linalg.norm(arr, axis=1, keepdims=True)
    return {"texts": texts, "vectors": vectors, "queries": queries, "real_queries": len(questions),
            "passages": len(passages)}


def synthetic(points: int, n_queries: int) -> dict[str, Any]:
    """``korag.bench.store``'s dense vectors (1024-dim, KoE5's size; Gaussian, unit length) and
    its queries (a stored vector plus 1% noise)."""
    from korag.bench.store import _dense

    vectors = _dense(0, points)
    rng = np.random.default_rng(5)
    near = rng.integers(0, points, size=n_queries)
    queries = vectors[near] + 0.01 * rng.standard_normal((n_queries, vectors.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return {"vectors": vectors, "queries": queries, "real_queries": 0, "texts": None, "passages": 0}


# -- 1. Edge shards directly -----------------------------------------------------------------------
# shard kinds: (int8 quantisation, full_scan_threshold in KB, indexing_threshold in KB; None: korag's)
SHARDS = {"float": (False, None, None), "int8": (True, None, None), "int8-scan": (True, 10**9, None)}
# a sealed shard of seal_points points: below korag's indexing_threshold it is never optimized, so
# it has no int8 vectors unless the threshold is lowered (then searches scan its int8 vectors)
SMALL_SHARDS = {"float": (False, None, None), "int8": (True, None, None), "int8, indexing_threshold 1 KB": (True, None, 1)}


def shard_config(dimension: int, int8: bool, quantile: float | None, full_scan_kb: int | None = None,
                 indexing_kb: int | None = None) -> Any:
    """korag's sealed-shard config (korag.storage.edge.build / tiers), optionally with int8;
    ``full_scan_kb``: a full_scan_threshold in place of korag's (a huge one makes every
    non-exact search a plain scan, over the int8 vectors where there are some); ``indexing_kb``:
    an indexing_threshold in place of korag's."""
    import qdrant_edge as qe

    from korag.storage.edge import upkeep

    full_scan = full_scan_kb if full_scan_kb is not None else upkeep.FULL_SCAN_THRESHOLD_KB

    quant = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=quantile, always_ram=True) if int8 else None
    return qe.EdgeConfig(
        vectors={VECTOR: qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine, on_disk=None)},
        hnsw_config=qe.HnswIndexConfig(m=upkeep.HNSW_M, ef_construct=upkeep.HNSW_EF_CONSTRUCT,
                                       full_scan_threshold=full_scan),
        quantization_config=quant,
        optimizers=qe.EdgeOptimizersConfig(
            max_segment_size=64 * upkeep.SEGMENT_KB, default_segment_number=1,
            indexing_threshold=indexing_kb if indexing_kb is not None else upkeep.FULL_SCAN_THRESHOLD_KB),
    )


def build_shard(path: Path, vectors: np.ndarray, shape: tuple[bool, int | None, int | None],
                quantile: float | None = 0.99) -> dict[str, Any]:
    import qdrant_edge as qe

    from korag.bench.store import disk_bytes

    int8, full_scan_kb, indexing_kb = shape
    t0 = time.perf_counter()
    shard = qe.EdgeShard.create(str(path), shard_config(vectors.shape[1], int8, quantile, full_scan_kb, indexing_kb))
    for start in range(0, len(vectors), 256):
        batch = [qe.Point(start + i, {VECTOR: row.tolist()}, {}) for i, row in enumerate(vectors[start : start + 256])]
        shard.update(qe.UpdateOperation.upsert_points(batch))
    upsert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    while shard.optimize():
        pass
    optimize_s = time.perf_counter() - t0
    shard.flush()
    info = shard.info()
    return {"shard": shard, "upsert_s": round(upsert_s, 2), "optimize_s": round(optimize_s, 2),
            "disk_mb": round(disk_bytes(path, allocated=False) / 2**20, 1),
            "disk_mb_without_wal": round(disk_bytes(path, allocated=False, skip="wal") / 2**20, 1),
            "disk_mb_allocated": round(disk_bytes(path) / 2**20, 1), "segments": getattr(info, "segments_count", None),
            "indexed": getattr(info, "indexed_vectors_count", None), "load": load()}


def search_variants(kind: str) -> list[tuple[str, Any]]:
    import qdrant_edge as qe

    q = qe.QuantizationSearchParams
    if not kind.startswith("int8"):
        return [("HNSW float", qe.SearchParams()), ("exact float", qe.SearchParams(exact=True))]
    if kind != "int8":  # an int8 shard searched by a plain scan (int8-scan: above the full-scan threshold)
        return [
            (f"{kind}: int8 scan, no rescore", qe.SearchParams(quantization=q(rescore=False))),
            (f"{kind}: int8 scan, rescore x2.0", qe.SearchParams(quantization=q(rescore=True, oversampling=2.0))),
            (f"{kind}: quantization ignored", qe.SearchParams(quantization=q(ignore=True))),
        ]
    return [
        ("HNSW int8, no rescore", qe.SearchParams(quantization=q(rescore=False))),
        ("HNSW int8, rescore x1.0", qe.SearchParams(quantization=q(rescore=True, oversampling=1.0))),
        ("HNSW int8, rescore x2.0", qe.SearchParams(quantization=q(rescore=True, oversampling=2.0))),
        ("HNSW int8, rescore x3.0", qe.SearchParams(quantization=q(rescore=True, oversampling=3.0))),
        ("HNSW int8 shard, quantization ignored", qe.SearchParams(quantization=q(ignore=True))),
        ("exact=True on the int8 shard, no rescore", qe.SearchParams(exact=True, quantization=q(rescore=False))),
        ("exact=True on the int8 shard, quantization ignored", qe.SearchParams(exact=True, quantization=q(ignore=True))),
    ]


def time_searches(shard: Any, queries: np.ndarray, params: Any, rounds: int) -> tuple[list[list[int]], list[float]]:
    import qdrant_edge as qe

    requests = [qe.QueryRequest(query=qe.Query.Nearest(q.tolist(), using=VECTOR), limit=K, params=params,
                                with_payload=False, with_vector=False) for q in queries]
    found = [[int(p.id) for p in shard.query(r)] for r in requests]  # also the warm-up
    times = []
    for _ in range(rounds):
        for r in requests:
            t0 = time.perf_counter()
            shard.query(r)
            times.append(time.perf_counter() - t0)
    return found, times


def engine_table(data: dict[str, Any], workdir: Path, rounds: int,
                 shards: dict[str, tuple[bool, int | None, int | None]] = SHARDS) -> list[dict[str, Any]]:
    vectors, queries, real = data["vectors"], data["queries"], data["real_queries"]
    truth = exact_top(vectors, queries)
    rows = []
    for n, (kind, shape) in enumerate(shards.items()):
        built = build_shard(workdir / str(n), vectors, shape)
        shard = built.pop("shard")
        print(f"built {kind} shard: {built}", file=sys.stderr, flush=True)
        for label, params in search_variants(kind):
            found, times = time_searches(shard, queries, params, rounds)
            rows.append({"variant": label, "recall_all": round(recall(found, truth), 4),
                         "recall_real": round(recall(found[:real], truth[:real]), 4),
                         "recall_pieces": round(recall(found[real:], truth[real:]), 4),
                         **percentile_ms(times), "optimize_s": built["optimize_s"], "disk_mb": built["disk_mb"],
                         "disk_mb_without_wal": built["disk_mb_without_wal"],
                         "disk_mb_allocated": built["disk_mb_allocated"],
                         "load": load()})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        shard.close()
    return rows


# -- 2. korag's tiered store -----------------------------------------------------------------------
def store_recall(data: dict[str, Any], workdir: Path, mode: str, seal_points: int) -> dict[str, Any]:
    from qdrant_client import models

    from korag.bench.store import disk_bytes
    from korag.storage.edge.upkeep import after_batch
    from korag.storage.edge_client import EdgeClient
    from korag.storage.store import QdrantStore, point_id

    vectors, queries, texts = data["vectors"], data["queries"], data["texts"]
    ids = [point_id(f"piece-{i // 10}", i % 10) for i in range(len(vectors))]
    row_of = {pid: i for i, pid in enumerate(ids)}
    client = EdgeClient(workdir, upkeep=mode, seal_points=seal_points) if mode == "process" else EdgeClient(workdir)
    store = QdrantStore(client, COLLECTION)
    store.ensure_collection("e5-small", vectors.shape[1])
    t0 = time.perf_counter()
    upkeep_s = []
    for start in range(0, len(vectors), seal_points):
        end = min(start + seal_points, len(vectors))
        payloads = [{"page_content": texts[i], "metadata": {"doc_id": f"piece-{i // 10}"}} for i in range(start, end)]
        store.upsert(ids[start:end], vectors[start:end], payloads)
        t1 = time.perf_counter()
        after_batch(client)
        upkeep_s.append(round(time.perf_counter() - t1, 2))
    forced = 0
    if mode == "process":
        while client.seal(COLLECTION, force=True):
            forced += 1
    ingest_s = time.perf_counter() - t0
    out: dict[str, Any] = {"mode": mode, "points": len(vectors), "seal_points": seal_points if mode == "process" else None,
                           "ingest_s": round(ingest_s, 1), "upkeep_s": upkeep_s, "forced_seals": forced,
                           "count": store.count(), "load": load()}
    tiers = client._tier(COLLECTION) if mode == "process" else None  # noqa: SLF001 - the benchmark reads the tiers' state
    if tiers is not None:
        sizes = dict(tiers.sizes)
        owned = set(tiers.owner)
        indexed = {name: shard.info().indexed_vectors_count for name, shard in tiers.sealed.items()}
        out.update(sealed_shards=len(tiers.sealed), sealed_sizes=sorted(sizes.values(), reverse=True),
                   sealed_hnsw=sorted((sizes[n] for n, c in indexed.items() if c), reverse=True),
                   fresh=len(tiers.fresh), owned=len(owned),
                   missing_from_tiers=len(set(ids) - owned - set(tiers.fresh)))
    truth = exact_top(vectors, queries)
    found, exact_found, times = [], [], []
    for q in queries:
        kw = {"query": q.tolist(), "using": VECTOR, "limit": K, "with_payload": False}
        t1 = time.perf_counter()
        points = client.query_points(COLLECTION, **kw).points
        times.append(time.perf_counter() - t1)
        found.append([row_of[str(p.id)] for p in points])
        exact = client.query_points(COLLECTION, search_params=models.SearchParams(exact=True), **kw).points
        exact_found.append([row_of[str(p.id)] for p in exact])
    real = data["real_queries"]
    out.update(recall_all=round(recall(found, truth), 4), recall_real=round(recall(found[:real], truth[:real]), 4),
               recall_pieces=round(recall(found[real:], truth[real:]), 4),
               recall_vs_edge_exact=round(recall(found, exact_found), 4),
               edge_exact_vs_numpy=round(recall(exact_found, truth), 4), dense_ms=percentile_ms(times))
    # every point findable: its own vector's top hit is itself (a sample, as a query costs ms)
    sample = np.random.default_rng(7).choice(len(vectors), size=min(2000, len(vectors)), replace=False)
    not_top1, not_found = [], 0
    for i in sample:
        top = [row_of[str(p.id)] for p in
               client.query_points(COLLECTION, query=vectors[i].tolist(), using=VECTOR, limit=K, with_payload=False).points]
        not_found += i not in top
        if not top or top[0] != i:  # the cosine of the two as numpy computes it; an exact search's top hit
            exact = client.query_points(COLLECTION, query=vectors[i].tolist(), using=VECTOR, limit=1, with_payload=False,
                                        search_params=models.SearchParams(exact=True)).points
            not_top1.append({"row": int(i), "top": top[0] if top else None,
                             "cos": round(float(vectors[i] @ vectors[top[0]]), 6) if top else None,
                             "exact_top": row_of[str(exact[0].id)] if exact else None})
    out.update(self_checked=len(sample), self_not_in_top10=not_found, self_not_top1=len(not_top1),
               self_not_top1_rows=not_top1[:5])
    out["disk_mb"] = round(disk_bytes(workdir, allocated=False) / 2**20, 1)
    out["disk_mb_allocated"] = round(disk_bytes(workdir) / 2**20, 1)
    client.close()
    return out


# -- output ----------------------------------------------------------------------------------------
def _engine_lines(rows: list[dict[str, Any]], split: bool) -> list[str]:
    """The engine table; ``split``: recall of the real and the piece queries apart too."""
    head = "| variant | recall@10 | real queries | piece queries |" if split else "| variant | recall@10 |"
    lines = [head + " p50 ms | p95 ms | optimize s | disk MB: size (without WAL) / allocated | load 1m |",
             "| --- " * (head.count("|") - 1 + 5) + "|"]
    for r in rows:
        recalls = f"{r['recall_all']:.4f} | {r['recall_real']:.4f} | {r['recall_pieces']:.4f}" if split else f"{r['recall_all']:.4f}"
        lines.append(f"| {r['variant']} | {recalls} | {r['p50']} | {r['p95']} | {r['optimize_s']} | "
                     f"{r['disk_mb']} ({r['disk_mb_without_wal']}) / {r['disk_mb_allocated']} | {r['load'][0]} |")
    return lines


def render(result: dict[str, Any]) -> str:
    m, d = result["machine"], result["data"]
    lines = [f"CPU: {m['cpu']} ({m['cpus']} cpus; avx2 {m['avx2']}, avx512f {m['avx512f']}, "
             f"avx512_vnni {m['avx512_vnni']}, avx512_bf16 {m['avx512_bf16']}); load at start {m['load_avg']}",
             f"data: {d['pieces']} pieces of {d['passages']} passages, dim {d['dimension']}; "
             f"queries {d['queries']} ({d['real_queries']} real + {d['queries'] - d['real_queries']} pieces)", ""]
    if result.get("engine"):
        lines += _engine_lines(result["engine"], split=True) + [""]
    if result.get("small_shard"):
        lines += [f"one sealed shard of --seal-points ({result['small_shard_points']} "
                  "points: below korag's indexing_threshold)"] + _engine_lines(result["small_shard"], split=True) + [""]
    if result.get("synthetic"):
        syn = result["synthetic"]
        lines += [f"synthetic: {syn['points']} points, dim {syn['dimension']}, {syn['queries']} queries "
                  "(korag.bench.store's vectors)"] + _engine_lines(syn["engine"], split=False) + [""]
    if result.get("store"):
        lines += ["| store | recall@10 all | real | pieces | vs Edge exact | dense p50/p95 ms | sealed shards (sizes) | fresh "
                  "| count | self not top-1 / not in top-10 | disk MB size / allocated | load 1m |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s in result["store"]:
            sealed = f"{s.get('sealed_shards', '-')} ({s.get('sealed_sizes', '-')}; HNSW: {s.get('sealed_hnsw', '-')})"
            lines.append(f"| {s['mode']} (S={s['seal_points']}) | {s['recall_all']:.4f} | {s['recall_real']:.4f} | "
                         f"{s['recall_pieces']:.4f} | {s['recall_vs_edge_exact']:.4f} | {s['dense_ms']['p50']}/"
                         f"{s['dense_ms']['p95']} | {sealed} | {s.get('fresh', '-')} | {s['count']} | "
                         f"{s['self_not_top1']} / {s['self_not_in_top10']} of {s['self_checked']} | {s['disk_mb']} / "
                         f"{s['disk_mb_allocated']} | {s['load'][0]} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared directory (data/autorag-ko)")
    parser.add_argument("--model", type=Path, default=E5_SMALL, help="the e5-small stand-in (bench/e5small.py)")
    parser.add_argument("--piece-queries", type=int, default=400, help="corpus pieces also asked as queries")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the queries per variant")
    parser.add_argument("--seal-points", type=int, default=2000, help="seal_points of the tiered store")
    parser.add_argument("--only", choices=("engine", "store", "synthetic"), help="run one part")
    parser.add_argument("--synthetic", type=int, default=0,
                        help="also the engine table at this many synthetic 1024-dim points (korag.bench.store's)")
    args = parser.parse_args()
    if not (args.shared / "data" / "autorag-ko" / "corpus.jsonl").is_file():
        print(f"skipped: {args.shared}/data/autorag-ko/corpus.jsonl is absent (pass --shared)")
        return 0
    if not (args.model / "config.json").is_file():
        print(f"skipped: no embedding model at {args.model} (build it with bench/e5small.py or pass --model)")
        return 0
    result: dict[str, Any] = {"machine": machine()}
    data = dataset(args.shared, args.model, args.piece_queries)
    result["data"] = {"passages": data["passages"], "pieces": len(data["vectors"]), "dimension": data["vectors"].shape[1],
                      "queries": len(data["queries"]), "real_queries": data["real_queries"]}
    workdir = Path(tempfile.mkdtemp(prefix="korag-dense-index-"))
    try:
        if args.only in (None, "engine"):
            result["engine"] = engine_table(data, workdir / "engine", args.rounds)
        if args.only in (None, "store"):
            result["store"] = [store_recall(data, workdir / f"store-{mode}", mode, args.seal_points)
                               for mode in ("process", "inline")]
        if args.only in (None, "engine"):
            small = {**data, "vectors": data["vectors"][: args.seal_points]}
            result["small_shard"] = engine_table(small, workdir / "small", args.rounds, SMALL_SHARDS)
            result["small_shard_points"] = len(small["vectors"])
        if args.synthetic and args.only in (None, "synthetic"):
            result["synthetic"] = {"points": args.synthetic, "dimension": 1024, "queries": 200,
                                   "engine": engine_table(synthetic(args.synthetic, 200), workdir / "synthetic", args.rounds)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["load_at_end"] = load()
    print(render(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
