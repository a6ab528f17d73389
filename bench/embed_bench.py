"""Embedding throughput of a KoE5-sized model through korag's Embedder, on whatever device
torch finds (CUDA when present).

    python bench/embed_bench.py [--model NAME_OR_DIR] [--corpus corpus.jsonl] [--chunks N]

When the model cannot be loaded (KoE5's weights are not on this network), ``--koe5-shape``
builds a stand-in with KoE5's architecture and size — XLM-RoBERTa large: 24 layers, 1024
hidden, 16 heads, 250,002-token vocabulary, ~560M parameters, mean pooling, normalised,
max_seq_length 512 — with random weights and a SentencePiece-style tokenizer trained here on
the corpus. Its speed is KoE5's speed; its vectors are meaningless, so this measures
throughput only. Chunks are cut to the model's passage budget with korag's TokenBudget.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.koe5_standin import koe5_shaped_model  # noqa: E402
from ingest.embedder import Embedder  # noqa: E402
from korag.settings import Settings  # noqa: E402
from korag.types import Chunk  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "autorag-ko" / "corpus.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="nlpai-lab/KoE5")
    parser.add_argument("--koe5-shape", action="store_true", help="random-weight stand-in if the model cannot load")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--chunks", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fp16", action="store_true", help="also measure half precision (CUDA only)")
    args = parser.parse_args()

    texts = [json.loads(line)["text"] for line in args.corpus.open(encoding="utf-8")]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if args.koe5_shape:
            model = str(koe5_shaped_model(texts, Path(tmp)))
        t0 = time.perf_counter()
        embedder = Embedder.load(Settings(embedding_model=model, embedding_batch_size=args.batch_size))
        load_s = time.perf_counter() - t0
        budget = embedder.passage_budget
        pieces = [p for t in texts for p in budget.split(t, budget.body_budget(None))]
        chunks = [Chunk(text=p, index=i) for i, p in enumerate((pieces * (1 + args.chunks // max(1, len(pieces))))[: args.chunks])]
        device = str(embedder.model.device)
        params = sum(p.numel() for p in embedder.model.parameters())
        print(f"model   {'KoE5-shaped stand-in (random weights)' if args.koe5_shape else model}: "
              f"{params / 1e6:.0f}M parameters, dim {embedder.info.dimension}, limit {embedder.info.max_input_tokens}")
        print(f"device  {device}" + (f" ({_gpu_name()})" if device.startswith("cuda") else ""), f"load {load_s:.1f}s")
        embedder.embed_passages(chunks[: args.batch_size])  # warm-up
        runs = [("fp32", None)]
        if args.fp16 and device.startswith("cuda"):
            runs.append(("fp16", "half"))
        for label, cast in runs:
            if cast == "half":
                embedder.model.half()
            _sync()
            t0 = time.perf_counter()
            _, counts = embedder.embed_passages(chunks)
            _sync()
            seconds = time.perf_counter() - t0
            tokens = sum(counts)
            print(f"{label:<6}  {len(chunks)} chunks, {tokens} tokens (mean {tokens / len(chunks):.0f}) in {seconds:.2f}s: "
                  f"{len(chunks) / seconds:.1f} chunks/s, {tokens / seconds:.0f} tokens/s")
    return 0


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


if __name__ == "__main__":
    sys.exit(main())
