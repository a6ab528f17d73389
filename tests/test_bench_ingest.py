"""`korag bench ingest --json` on a small corpus made here: every figure the contract names."""

from __future__ import annotations

import json

import pytest

from bench import documents as docs
from tests.conftest import korag_cli, korag_env, offline_model_path


@pytest.mark.slow
def test_bench_ingest_prints_the_contract(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    paragraphs = docs.long_korean_text(8).split("\n\n")
    with (corpus / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for i, text in enumerate(paragraphs):
            out.write(json.dumps({"_id": f"p{i}", "title": f"제목 {i}", "text": text}, ensure_ascii=False) + "\n")
    env = korag_env({"KORAG_EMBEDDING_MODEL": offline_model_path()})
    done = korag_cli(["bench", "ingest", str(corpus), "--json", "--model", offline_model_path()], env, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert {"corpus", "model", "device", "precision", "runtime", "documents", "chunks", "tokens", "pipeline", "model_only",
            "naive", "ratio_to_model_only", "speedup_vs_naive", "cosine_vs_fp32_min"} <= set(report)
    assert report["documents"] == len(paragraphs) and report["failed"] == 0
    assert report["chunks"] >= len(paragraphs) and report["tokens"] > report["chunks"]
    for part in ("pipeline", "model_only", "naive"):
        assert set(report[part]) == {"seconds", "docs_per_s", "chunks_per_s", "tokens_per_s"}
        assert report[part]["seconds"] > 0
    assert report["ratio_to_model_only"] > 0 and report["speedup_vs_naive"] > 0
    assert report["cosine_vs_fp32_min"] > 0.99
    assert report["ocr"] is None  # text documents: no page read by OCR


def test_the_benchmarks_default_corpus_is_the_shared_one_beside_the_checkout():
    """`korag bench ingest` and `korag bench store` read ../shared/data/autorag-ko by default (the
    README's command takes no path); moving the benchmark code into korag/bench/ once made them look
    inside the checkout, where no corpus is, and say "no corpus"."""
    from pathlib import Path

    from korag.bench import ingest, store

    expected = Path(__file__).resolve().parents[2] / "shared" / "data" / "autorag-ko"
    assert ingest.DEFAULT_CORPUS == expected
    assert store.DEFAULT_CORPUS == expected
