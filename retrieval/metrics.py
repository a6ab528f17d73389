"""Ranking metrics with the standard definitions (pytrec_eval / MTEB, which MTEB's figures use).

``qrels``: {query_id: {doc_id: relevance}}; ``run``: {query_id: [doc_id, ...]} best first.
Gains are the graded relevance itself (trec_eval's ndcg_cut), discount 1/log2(rank + 1);
documents with relevance <= 0 are not relevant. Queries without relevant documents are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]) if relevant.get(doc, 0) > 0)
    ideal = sorted((r for r in relevant.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {doc for doc, r in relevant.items() if r > 0}
    return len(wanted.intersection(ranked[:k])) / len(wanted) if wanted else 0.0


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    for i, doc in enumerate(ranked[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def evaluate(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], k: int = 10) -> dict[str, float]:
    """Mean nDCG@1, nDCG@3, nDCG@k, Recall@k, MRR@k over the queries that have relevant documents."""
    queries = [q for q, rel in qrels.items() if any(r > 0 for r in rel.values())]
    if not queries:
        raise ValueError("no query has a relevant document")
    cutoffs = sorted({1, 3, k})
    totals = {**{f"ndcg@{c}": 0.0 for c in cutoffs}, f"recall@{k}": 0.0, f"mrr@{k}": 0.0}
    for q in queries:
        ranked, rel = list(run.get(q, [])), qrels[q]
        for c in cutoffs:
            totals[f"ndcg@{c}"] += ndcg_at(ranked, rel, c)
        totals[f"recall@{k}"] += recall_at(ranked, rel, k)
        totals[f"mrr@{k}"] += mrr_at(ranked, rel, k)
    return {name: value / len(queries) for name, value in totals.items()}
