"""`korag eval`: retrieval quality on a BEIR-layout dataset, optionally tuning the fusion."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from korag.cli.common import print_json
from korag.cli.root import load_model
from korag.settings import Settings
from korag.storage.store import Fusion
from retrieval.evaluation import Dataset, Evaluation
from retrieval.sections import check_context

TUNE_DENSE_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
TUNE_RRF_KS = (2, 5, 10, 30, 60)


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"dense", "sparse", "hybrid"}
    if unknown:
        raise ValueError(f"unknown mode(s) {', '.join(sorted(unknown))}; use dense, sparse, hybrid")
    contexts = [c.strip() for c in (args.contexts or settings.search_context).split(",") if c.strip()]
    for context in contexts:
        check_context(context)
    dataset = Dataset.load(Path(args.dataset))
    evaluation = Evaluation(dataset, load_model(settings), settings)
    print(f"ingesting {len(dataset.corpus)} passages of {dataset.name} ...", file=sys.stderr)
    evaluation.ingest()
    by_context = {context: {mode: evaluation.run_mode(mode, args.k, context=context) for mode in modes}
                  for context in contexts}
    runs = by_context[contexts[0]]
    reports = {mode: run.to_json() for mode, run in runs.items()}
    fusion = Fusion.from_settings(settings)
    out: dict = {
        "dataset": dataset.name,
        "modes": reports,
        "k": args.k,
        "queries": len(dataset.qrels),
        "model": settings.embedding_model,
        "max_input_tokens": evaluation.retriever.embedder.info.max_input_tokens,
        "context": contexts[0],
        "fusion": {"method": fusion.method, "dense_weight": fusion.dense_weight, "sparse_weight": fusion.sparse_weight,
                   "k": fusion.k},
        "ingest": {
            "documents": len(dataset.corpus),
            "chunks": evaluation.chunks,
            "seconds": round(evaluation.ingest_seconds, 2),
            "docs_per_s": round(len(dataset.corpus) / evaluation.ingest_seconds, 2),
        },
        "misses": {mode: [miss.to_json() for miss in run.misses] for mode, run in runs.items()},
    }
    if len(contexts) > 1:
        out["by_context"] = {context: {mode: run.to_json() for mode, run in context_runs.items()}
                             for context, context_runs in by_context.items()}
    if args.tune:
        ranked = evaluation.tune(args.k, TUNE_DENSE_WEIGHTS, TUNE_RRF_KS)
        out["tune"] = [
            {"method": f.method, "dense_weight": f.dense_weight, "sparse_weight": f.sparse_weight, "k": f.k,
             f"ndcg@{args.k}": round(v, 4)}
            for f, v in ranked
        ]
    if args.json:
        print_json(out)
        return 0
    print(f"{dataset.name}: {out['queries']} queries, model {settings.embedding_model}")
    print(f"ingest: {out['ingest']['documents']} documents, {out['ingest']['chunks']} chunks, "
          f"{out['ingest']['seconds']} s ({out['ingest']['docs_per_s']} docs/s)")
    names = list(next(iter(reports.values())).keys()) if reports else []
    print("mode    " + "".join(f"{n:>11}" for n in names))
    for context, context_reports in out.get("by_context", {contexts[0]: reports}).items():
        if len(contexts) > 1:
            print(f"context {context}:")
        for mode, report in context_reports.items():
            print(f"{mode:<8}" + "".join(f"{report[n]:>11}" for n in names))
    if args.failures > 0:
        _print_misses(out["misses"], args.failures, args.k)
    if args.tune:
        best = out["tune"][0]
        rrf_k = f" KORAG_FUSION_K={best['k']}" if best["method"] == "rrf" else ""
        print(f"best fusion: KORAG_FUSION_METHOD={best['method']} KORAG_FUSION_DENSE_WEIGHT={best['dense_weight']} "
              f"KORAG_FUSION_SPARSE_WEIGHT=1.0{rrf_k}  (nDCG@{args.k} {best[f'ndcg@{args.k}']})")
        for row in out["tune"][:10]:
            rrf_k = f"k {row['k']}" if row["method"] == "rrf" else ""
            print(f"  {row['method']:<6} dense {row['dense_weight']:<5} {rrf_k:<5} nDCG@{args.k} {row[f'ndcg@{args.k}']}")
    return 0


def _print_misses(misses: dict[str, list[dict]], limit: int, k: int) -> None:
    """The first ``limit`` gold passages per mode that missed the top k: question, gold, the rank it
    got, and what came first instead."""
    for mode, listed in misses.items():
        print(f"{mode}: {len(listed)} gold passage(s) outside the top {k}" + (":" if listed else ""))
        for miss in listed[:limit]:
            rank = miss["rank"] if miss["rank"] is not None else f">{k} (not fetched)"
            print(f"  {miss['query_id']} {miss['question']}")
            print(f"    gold {miss['gold_id']} at rank {rank}; top hit {miss['top_id']}: {miss['top_text']}")
