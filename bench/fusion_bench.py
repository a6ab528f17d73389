"""Hybrid fusion methods compared on one labelled Korean set with a dense channel that works (issue 20 item 2).

    python bench/fusion_bench.py [DATASET_DIR ...] [--model DIR] [--json]

Defaults: ../shared/data/autorag-ko and the multilingual-e5-small stand-in (bench/e5small.py builds
it once). The corpus goes through `korag eval`'s ingest once; each query is asked once per channel
(top ``prefetch`` chunks with their scores), and every fusion is computed from those two lists:

- weighted RRF (korag's hybrid until convex became the default; Qdrant's formula) over a small
  grid of dense weight and k;
- the convex combination w * dense + 1 * sparse of min-max-normalised scores (a chunk one channel
  did not return scores 0 there; korag's ``KORAG_FUSION_METHOD=convex``, the same function
  ``korag.storage.store.convex_scores``) over a grid of dense weights w;
- DBSF, Qdrant's distribution-based score fusion, and the convex combination at the settings'
  weights, each run through korag's own hybrid search (``Fusion(method=...)``) on the store
  `korag eval` uses; whether the embedded Qdrant Edge accepts the DBSF query is checked
  separately on a small collection.

Prints nDCG@10 per method. Measures only: korag's defaults are not changed here.
Datasets: AutoRAG, and the sets bench/korean_sets.py builds (.korag/data/ko-ict, ko-headings).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qdrant_client import models  # noqa: E402

from bench import e5small  # noqa: E402
from ingest.embedder import Embedder  # noqa: E402
from korag.settings import Settings  # noqa: E402
from korag.storage.edge_client import EdgeClient  # noqa: E402
from korag.storage.store import DENSE, SPARSE, Fusion  # noqa: E402
from retrieval.evaluation import CHUNKS_PER_PASSAGE, Dataset, Evaluation, _passage_ranking, fused_scores  # noqa: E402
from retrieval.metrics import evaluate  # noqa: E402
from retrieval.search import Retriever  # noqa: E402

DEFAULT_DATASET = e5small.DEFAULT_SHARED / "data" / "autorag-ko"
RRF_DENSE_WEIGHTS = (0.3, 0.5, 0.7, 1.0, 1.5)
RRF_KS = (2, 10, 60)
CONVEX_DENSE_WEIGHTS = (0.1, 0.2, 0.3, 0.43, 0.7, 1.0)  # sparse weight 1; 0.43 is a = 0.3 of a·dense + (1 − a)·sparse
K = 10



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
        return self.fused(Fusion(dense_weight, 1.0, k, self.prefetch, "rrf"))

    def convex(self, dense_weight: float) -> float:
        return self.fused(Fusion(dense_weight, 1.0, method="convex", prefetch=self.prefetch))

    def fused(self, fusion: Fusion) -> float:
        """nDCG@K of ``fusion`` recomputed from each query's two channel lists (as `korag eval --tune`)."""
        return self.ndcg({qid: fused_scores(fusion, dense, sparse) for qid, (dense, sparse) in self.hits.items()})

    def searched(self, fusion: Fusion) -> float:
        """nDCG@K of korag's own hybrid search with ``fusion`` (top ``prefetch`` chunks per query)."""
        base = self.evaluation.retriever
        retriever = Retriever(base.embedder, self.evaluation.store, base.sparse, "hybrid", fusion, base.reranker)
        fused = {}
        for qid in self.evaluation.dataset.qrels:
            hits = retriever.search(self.evaluation.dataset.queries[qid], k=self.prefetch, mode="hybrid")
            for hit in hits:
                self.sources.setdefault(hit.id, hit.metadata["source"])
            fused[qid] = {h.id: h.score for h in hits}
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


def measure(evaluation: Evaluation, default: Fusion) -> dict:
    channels = Channels(evaluation, max(default.prefetch, K * CHUNKS_PER_PASSAGE))
    rrf = {f"rrf dense {w} k {k}": channels.rrf(w, k) for w, k in itertools.product(RRF_DENSE_WEIGHTS, RRF_KS)}
    convex = {f"convex dense {w}": channels.convex(w) for w in CONVEX_DENSE_WEIGHTS}
    return {
        "dataset": evaluation.dataset.name, "model": evaluation.settings.embedding_model,
        "queries": len(evaluation.dataset.qrels), "prefetch": channels.prefetch,
        "dense": evaluation.run_mode("dense", K).metrics[f"ndcg@{K}"],
        "sparse": evaluation.run_mode("sparse", K).metrics[f"ndcg@{K}"],
        "default": {"dense_weight": default.dense_weight, "k": default.k,
                    "ndcg": channels.rrf(default.dense_weight, default.k)},
        "rrf": rrf, "convex": convex,
        "dbsf": channels.searched(replace(default, method="dbsf")),
        "convex_searched": {"dense_weight": default.dense_weight, "sparse_weight": default.sparse_weight,
                            "ndcg": channels.searched(replace(default, method="convex"))},
    }


def run(dataset_dirs: list[Path], model: Path) -> list[dict]:
    """One report per dataset; the model loads once, and a dataset with the same corpus as the one
    before it (ko-ict and ko-headings) reuses that ingest."""
    settings = Settings(embedding_model=str(model), embedding_device="cpu")
    embedder = Embedder.load(settings)
    default = Fusion.from_settings(settings)
    reports, evaluation = [], None
    for folder in dataset_dirs:
        dataset = Dataset.load(folder)
        if evaluation is not None and evaluation.dataset.corpus == dataset.corpus:
            evaluation.dataset = dataset
        else:
            evaluation = Evaluation(dataset, embedder, settings)
            print(f"ingesting {len(dataset.corpus)} passages ...", file=sys.stderr)
            evaluation.ingest()
        reports.append(measure(evaluation, default))
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", type=Path, default=[DEFAULT_DATASET])
    parser.add_argument("--model", type=Path, default=e5small.DEFAULT_DIR)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    reports = run(args.datasets, args.model)
    edge = edge_supports_dbsf()
    if args.json:
        print(json.dumps({"edge_dbsf": edge, "reports": reports}, ensure_ascii=False, indent=2))
        return 0
    for report in reports:
        print_report(report)
    print(f"Qdrant Edge runs DBSF: {edge}")
    return 0


def print_report(report: dict) -> None:
    print(f"{report['dataset']}: {report['queries']} queries, model {report['model']}, nDCG@{K}, "
          f"prefetch {report['prefetch']} per channel")
    print(f"  dense alone                   {report['dense']:.4f}")
    print(f"  sparse alone                  {report['sparse']:.4f}")
    d = report["default"]
    print(f"  rrf default (dense {d['dense_weight']}, k {d['k']})  {d['ndcg']:.4f}")
    for name, value in sorted({**report["rrf"], **report["convex"]}.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<30}{value:.4f}")
    print(f"  dbsf (Qdrant Query API)       {report['dbsf']:.4f}")
    c = report["convex_searched"]
    print(f"  convex (dense {c['dense_weight']}, sparse {c['sparse_weight']}) through korag's search  {c['ndcg']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
