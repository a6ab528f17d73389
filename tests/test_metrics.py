"""Metric code against hand-computed values (trec_eval / pytrec_eval definitions)."""

from __future__ import annotations

import math

import pytest

from retrieval.metrics import evaluate, mrr_at, ndcg_at, recall_at


def test_single_relevant_document_at_rank_three():
    ranked = ["a", "b", "rel", "c"]
    rel = {"rel": 1}
    assert ndcg_at(ranked, rel, 1) == 0.0
    assert ndcg_at(ranked, rel, 3) == pytest.approx(1 / math.log2(4))  # 0.5
    assert ndcg_at(ranked, rel, 10) == pytest.approx(0.5)
    assert recall_at(ranked, rel, 2) == 0.0 and recall_at(ranked, rel, 3) == 1.0
    assert mrr_at(ranked, rel, 10) == pytest.approx(1 / 3)
    assert mrr_at(ranked, rel, 2) == 0.0


def test_graded_relevance_uses_linear_gain():
    # trec_eval ndcg_cut: gain = relevance, discount log2(rank+1).
    ranked = ["x", "r1", "r2"]
    rel = {"r2": 2, "r1": 1}
    dcg = 1 / math.log2(3) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(ranked, rel, 3) == pytest.approx(dcg / idcg)
    assert recall_at(ranked, {"r1": 1, "r2": 1, "r3": 1}, 3) == pytest.approx(2 / 3)


def test_non_positive_judgements_are_not_relevant():
    assert ndcg_at(["n"], {"n": 0, "r": 1}, 1) == 0.0
    assert mrr_at(["n", "r"], {"n": 0, "r": 1}, 10) == 0.5


def test_evaluate_averages_and_skips_queries_without_relevant_documents():
    run = {"q1": ["a", "b"], "q2": ["c", "d"], "q3": ["e"]}
    qrels = {"q1": {"a": 1}, "q2": {"d": 1}, "q3": {"zz": 0}}
    scores = evaluate(run, qrels, k=10)
    assert scores["ndcg@1"] == pytest.approx(0.5)
    assert scores["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert scores["mrr@10"] == pytest.approx(0.75)
    assert scores["recall@10"] == 1.0
    assert evaluate({}, {"q": {"a": 1}})["ndcg@10"] == 0.0


def test_k_equal_to_a_fixed_cutoff_is_not_counted_twice():
    scores = evaluate({"q": ["a"]}, {"q": {"a": 1}}, k=3)
    assert scores == {"ndcg@1": 1.0, "ndcg@3": 1.0, "recall@3": 1.0, "mrr@3": 1.0}


def test_client_side_fusion_matches_qdrant():
    """`korag eval --tune` recomputes Qdrant's weighted RRF; it must rank exactly as Qdrant does."""
    from qdrant_client import QdrantClient, models

    from retrieval.evaluation import rrf_score

    client = QdrantClient(":memory:")
    client.create_collection("t", vectors_config={"a": models.VectorParams(size=2, distance=models.Distance.DOT),
                                                  "b": models.VectorParams(size=2, distance=models.Distance.DOT)})
    points = [models.PointStruct(id=i, vector={"a": [1.0, i / 10], "b": [1.0, (10 - i) / 10]}) for i in range(10)]
    client.upsert("t", points=points)
    for weight, k in [(0.2, 10), (0.5, 2), (1.0, 60)]:
        fused = client.query_points("t", prefetch=[models.Prefetch(query=[0, 1], using="a", limit=10),
                                                   models.Prefetch(query=[0, 1], using="b", limit=10)],
                                    query=models.RrfQuery(rrf=models.Rrf(k=k, weights=[weight, 1.0])), limit=10).points
        a_rank, b_rank = list(range(9, -1, -1)), list(range(10))
        ours = {pid: rrf_score(a_rank.index(pid), weight, k) + rrf_score(b_rank.index(pid), 1.0, k) for pid in range(10)}
        assert [p.score for p in fused] == pytest.approx(sorted(ours.values(), reverse=True))


def test_convex_fusion_adds_min_max_normalised_scores():
    """korag's default hybrid: each channel's scores rescaled to 0..1 over its own candidates, then
    weighted and added; a chunk one channel did not return gets 0 there."""
    from korag.storage.store import convex_scores

    dense = {"a": 0.9, "b": 0.5, "c": 0.1}  # cosine
    sparse = {"b": 12.0, "d": 2.0}  # BM25, another scale
    fused = convex_scores([(dense, 0.3), (sparse, 0.7)])
    assert fused == pytest.approx({"a": 0.3, "b": 0.3 * 0.5 + 0.7, "c": 0.0, "d": 0.0})
    assert convex_scores([({"x": 5.0}, 0.7)]) == {"x": 0.7}  # one candidate: the top of its channel
