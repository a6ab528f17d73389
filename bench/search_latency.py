"""Search latency of korag's hybrid default against the one before issue 20, in one run (issue 20's
"search p95 at most 1.2x today's").

    python bench/search_latency.py [DATASET_DIR] [--model DIR] [--rounds 5] [--json]

The dataset's corpus (default ../shared/data/autorag-ko) is ingested once, with korag's default
settings and the e5-small stand-in, into the embedded Qdrant Edge store in a scratch folder (the
store `korag serve` uses; `korag eval` measures on an in-memory qdrant-client instead). Then every
question is asked ``rounds`` times per path, the paths taking turns question by question (so load
from other processes falls on both alike), each a whole ``Retriever.search`` (query embedding,
Kiwi query terms, Qdrant, fusion, payloads), top 10:

- ``hybrid now``: the default: convex fusion (dense 0.3 / sparse 1.0) of the two channels' own
  queries, the keyword channel with compound terms and query stop terms;
- ``hybrid before``: the default before issue 20: weighted RRF inside Qdrant (dense 0.3, k 2, one
  query with two prefetches), query terms without compounds or stop terms;
- ``dense`` and ``sparse`` alone (today's), for scale.

The store is the one today's ingest writes (compound terms in the stored vectors), for both paths.
Prints p50/p95/p99 per path, the ratio of the hybrid p95s, the CPU flags and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import e5small  # noqa: E402
from bench.ocr_bench import cpu_flags  # noqa: E402
from ingest.embedder import Embedder  # noqa: E402
from ingest.sparse import SparseEncoder  # noqa: E402
from korag.settings import Settings  # noqa: E402
from korag.storage.store import Fusion  # noqa: E402
from retrieval.evaluation import Dataset, Evaluation  # noqa: E402
from retrieval.search import Retriever  # noqa: E402

DEFAULT_DATASET = e5small.DEFAULT_SHARED / "data" / "autorag-ko"
K = 10


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def paths(evaluation: Evaluation) -> dict[str, tuple[Retriever, str]]:
    base = evaluation.retriever
    before = Retriever(base.embedder, evaluation.store,
                       SparseEncoder(compounds=False, header_repeat=1, query_stop=frozenset()), "hybrid",
                       Fusion(0.3, 1.0, 2, 50, "rrf"))
    return {"hybrid now": (base, "hybrid"), "hybrid before": (before, "hybrid"),
            "dense": (base, "dense"), "sparse": (base, "sparse")}


def measure(evaluation: Evaluation, rounds: int) -> dict:
    queries = [evaluation.dataset.queries[qid] for qid in evaluation.dataset.qrels]
    timed = paths(evaluation)
    names = list(timed)
    for retriever, mode in timed.values():  # warm: first calls load Kiwi, compile, fill caches
        retriever.search(queries[0], k=K, mode=mode)
    took: dict[str, list[float]] = {name: [] for name in names}
    loads = [os.getloadavg()[0]]
    for r in range(rounds):
        for i, query in enumerate(queries):
            turn = (i + r) % len(names)
            for name in names[turn:] + names[:turn]:  # each path first as often as the others
                retriever, mode = timed[name]
                start = time.perf_counter()
                retriever.search(query, k=K, mode=mode)
                took[name].append((time.perf_counter() - start) * 1000)
        loads.append(os.getloadavg()[0])
    report = {name: {"p50_ms": round(statistics.median(v), 1), "p95_ms": round(percentile(v, 0.95), 1),
                     "p99_ms": round(percentile(v, 0.99), 1), "searches": len(v)} for name, v in took.items()}
    return {"dataset": evaluation.dataset.name, "chunks": evaluation.store.count(), "paths": report,
            "hybrid_p95_ratio": round(report["hybrid now"]["p95_ms"] / report["hybrid before"]["p95_ms"], 3),
            "load_1min": [round(x, 2) for x in loads], "cpu_flags": cpu_flags()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--model", type=Path, default=e5small.DEFAULT_DIR)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="korag-latency-") as tmp:
        settings = Settings(embedding_model=str(args.model), embedding_device="cpu", data_dir=Path(tmp))
        evaluation = Evaluation(Dataset.load(args.dataset), Embedder.load(settings), settings, scratch=False)
        print(f"ingesting {len(evaluation.dataset.corpus)} passages into Qdrant Edge ...", file=sys.stderr)
        evaluation.ingest()
        report = measure(evaluation, args.rounds)
        evaluation.store.client.close()
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    print(f"{report['dataset']}: {report['chunks']} chunks in Qdrant Edge, top {K}, "
          f"load {report['load_1min'][0]}-{max(report['load_1min'])}, CPU {report['cpu_flags']}")
    for name, row in report["paths"].items():
        print(f"  {name:<14} p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms"
              f"  ({row['searches']} searches)")
    print(f"  hybrid p95, now / before: {report['hybrid_p95_ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
