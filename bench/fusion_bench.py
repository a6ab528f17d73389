"""Hybrid fusion methods compared on one labelled Korean set with a dense channel that works (issue 20 item 2).

    python bench/fusion_bench.py [DATASET_DIR] [--model DIR] [--json]

Defaults: ../shared/data/autorag-ko and the multilingual-e5-small stand-in (bench/e5small.py builds
it once). The corpus goes through `korag eval`'s ingest once; each query is asked once per channel
(top ``prefetch`` chunks with their scores), and every fusion is computed from those two lists:

- weighted RRF (korag's hybrid today, Qdrant's formula) over a small grid of dense weight and k;
- a convex combination a * dense + (1 - a) * sparse of min-max-normalised scores (a chunk one
  channel did not return scores 0 there);
- DBSF, Qdrant's distribution-based score fusion, run as a real Query API call (prefetch both
  channels, ``FusionQuery(fusion=Fusion.DBSF)``) on the store `korag eval` uses; whether the
  embedded Qdrant Edge accepts the same query is checked separately on a small collection.

Prints nDCG@10 per method. Measures only: korag's defaults are not changed here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qdrant_client import models  # noqa: E402

from bench import e5small  # noqa: E402
from ingest.embedder import Embedder  # noqa: E402
from korag.settings import Settings  # noqa: E402
from korag.storage.edge_client import EdgeClient  # noqa: E402
from korag.storage.store import DENSE, SPARSE, Fusion  # noqa: E402
from retrieval.evaluation import CHUNKS_PER_PASSAGE, Dataset, Evaluation, _passage_ranking, rrf_score  # noqa: E402
from retrieval.metrics import evaluate  # noqa: E402

DEFAULT_DATASET = e5small.DEFAULT_SHARED / "data" / "autorag-ko"
RRF_DENSE_WEIGHTS = (0.3, 0.5, 0.7, 1.0, 1.5)
RRF_KS = (2, 10, 60)
CONVEX_ALPHAS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
K = 10


def _minmax(scores: dict[str, float]) -> dict[str, float]:
    low, high = min(scores.values(), default=0.0), max(scores.values(), default=0.0)
    return {pid: (s - low) / (high - low) if high > low else 1.0 for pid, s in scores.items()}


class Channels:
    """Each query's dense and sparse hits (chunk id → score), asked once."""

    def __init__(self, evaluation: Evaluation, prefetch: int) -> None:
        self.evaluation = evaluation
        self.prefetch = prefetch
        self.sources: dict[str, str] = {}
        self.hits: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        retriever = evaluation.retriever
        for qid in evaluation.dataset.qrels:
            query = evaluation.dataset.queries[qid]
            dense = retriever.search(query, k=prefetch, mode="dense")
            sparse = retriever.search(query, k=prefetch, mode="sparse")
            for hit in (*dense, *sparse):
                self.sources[hit.id] = hit.metadata["source"]
            self.hits[qid] = ({h.id: h.score for h in dense}, {h.id: h.score for h in sparse})

    def ndcg(self, fused: dict[str, dict[str, float]]) -> float:
        """nDCG@K of per-query chunk scores (higher first), a passage ranked by its best chunk."""
        run = {qid: _passage_ranking((self.sources[c] for c in sorted(s, key=lambda c: -s[c])), K)
               for qid, s in fused.items()}
        return evaluate(run, self.evaluation.dataset.qrels, K)[f"ndcg@{K}"]

    def rrf(self, dense_weight: float, k: int) -> float:
        fused = {}
        for qid, (dense, sparse) in self.hits.items():
            scores: dict[str, float] = {}
            for ranked, weight in ((sorted(dense, key=lambda c: -dense[c]), dense_weight),
                                   (sorted(sparse, key=lambda c: -sparse[c]), 1.0)):
                for pos, cid in enumerate(ranked):
                    scores[cid] = scores.get(cid, 0.0) + rrf_score(pos, weight, k)
            fused[qid] = scores
        return self.ndcg(fused)

    def convex(self, alpha: float) -> float:
        fused = {}
        for qid, (dense, sparse) in self.hits.items():
            d, s = _minmax(dense), _minmax(sparse)
            fused[qid] = {c: alpha * d.get(c, 0.0) + (1 - alpha) * s.get(c, 0.0) for c in {*d, *s}}
        return self.ndcg(fused)

    def dbsf(self) -> float:
        """Qdrant's own DBSF through the Query API, on the store the evaluation ingested into."""
        retriever, store = self.evaluation.retriever, self.evaluation.store
        fused = {}
        for qid in self.evaluation.dataset.qrels:
            query = self.evaluation.dataset.queries[qid]
            vector = retriever.embedder.embed_queries([retriever.embedder.fit_query(query).text])[0]
            sparse = retriever.sparse.encode_query(query)
            prefetch = [models.Prefetch(query=vector.tolist(), using=DENSE, limit=self.prefetch)]
            if sparse.indices:
                prefetch.append(models.Prefetch(
                    query=models.SparseVector(indices=list(sparse.indices), values=list(sparse.values)),
                    using=SPARSE, limit=self.prefetch))
            points = store.client.query_points(store.collection, prefetch=prefetch,
                                               query=models.FusionQuery(fusion=models.Fusion.DBSF),
                                               limit=self.prefetch, with_payload=True).points
            for p in points:
                self.sources.setdefault(str(p.id), p.payload["metadata"]["source"])
            fused[qid] = {str(p.id): p.score for p in points}
        return self.ndcg(fused)


def edge_supports_dbsf() -> str:
    """Runs a DBSF query on a two-point Qdrant Edge collection: 'yes', or the error it gave."""
    with tempfile.TemporaryDirectory(prefix="korag-dbsf-") as tmp:
        client = EdgeClient(Path(tmp))
        try:
            client.create_collection("c", vectors_config={DENSE: models.VectorParams(size=2, distance=models.Distance.COSINE)},
                                     sparse_vectors_config={SPARSE: models.SparseVectorParams()})
            client.upsert("c", [models.PointStruct(id=i, vector={DENSE: v, SPARSE: models.SparseVector(indices=[i], values=[1.0])})
                                for i, v in ((1, [1.0, 0.0]), (2, [0.0, 1.0]))])
            points = client.query_points("c", prefetch=[
                models.Prefetch(query=[1.0, 0.1], using=DENSE, limit=2),
                models.Prefetch(query=models.SparseVector(indices=[2], values=[1.0]), using=SPARSE, limit=2)],
                query=models.FusionQuery(fusion=models.Fusion.DBSF), limit=2).points
            return "yes" if points else "no points returned"
        except Exception as exc:  # the answer is what Edge says, whatever it is
            return f"no: {type(exc).__name__}: {exc}"
        finally:
            client.close()


def run(dataset_dir: Path, model: Path) -> dict:
    settings = Settings(embedding_model=str(model), embedding_device="cpu")
    evaluation = Evaluation(Dataset.load(dataset_dir), Embedder.load(settings), settings)
    print(f"ingesting {len(evaluation.dataset.corpus)} passages ...", file=sys.stderr)
    evaluation.ingest()
    default = Fusion.from_settings(settings)
    channels = Channels(evaluation, max(default.prefetch, K * CHUNKS_PER_PASSAGE))
    rrf = {f"rrf dense {w} k {k}": channels.rrf(w, k) for w, k in itertools.product(RRF_DENSE_WEIGHTS, RRF_KS)}
    convex = {f"convex a {a}": channels.convex(a) for a in CONVEX_ALPHAS}
    return {
        "dataset": dataset_dir.name, "model": str(model), "queries": len(evaluation.dataset.qrels),
        "prefetch": channels.prefetch,
        "dense": evaluation.run_mode("dense", K).metrics[f"ndcg@{K}"],
        "sparse": evaluation.run_mode("sparse", K).metrics[f"ndcg@{K}"],
        "default": {"dense_weight": default.dense_weight, "k": default.k,
                    "ndcg": channels.rrf(default.dense_weight, default.k)},
        "rrf": rrf, "convex": convex, "dbsf": channels.dbsf(), "edge_dbsf": edge_supports_dbsf(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--model", type=Path, default=e5small.DEFAULT_DIR)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(args.dataset, args.model)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    print(f"{report['dataset']}: {report['queries']} queries, model {report['model']}, nDCG@{K}, "
          f"prefetch {report['prefetch']} per channel")
    print(f"  dense alone                   {report['dense']:.4f}")
    print(f"  sparse alone                  {report['sparse']:.4f}")
    d = report["default"]
    print(f"  rrf default (dense {d['dense_weight']}, k {d['k']})  {d['ndcg']:.4f}")
    for name, value in sorted({**report["rrf"], **report["convex"]}.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<30}{value:.4f}")
    print(f"  dbsf (Qdrant Query API)       {report['dbsf']:.4f}")
    print(f"  Qdrant Edge runs DBSF: {report['edge_dbsf']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
