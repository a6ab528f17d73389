"""korag's embedding engine beside the reference script's raw bf16 loop, same GPU, same inputs, one run.

    python bench/gpu_check.py [CORPUS_JSONL]     # on a GPU machine (bench/gpu_check.sh does the setup)
    TINY=1 python bench/gpu_check.py             # a 2-layer model on the CPU: checks the script only

Inputs and model exactly as ../shared/bench/xlmr_reference.py builds them: a SentencePiece-style
tokenizer trained on the AutoRAG passages, "passage: " chunks of <= 508 tokens, REPLICATE (5)
copies, an XLM-RoBERTa large with random weights (seed 0), mean pooling, normalised. Prints:

- ``reference raw bf16``: the reference script's raw loop (its ``batches``/``pack``/``embed``),
  128k-token batches, inputs packed before the clock starts: the figure to reach 0.9x of;
- ``korag forward``: ``EmbeddingEngine.encode(texts, tokens)`` from token ids (the Embedder
  tokenizes once for its limit check, then hands the ids over): batching, packing, transfer,
  forward, pooling, all inside the clock;
- ``korag end to end``: ``encode(texts)``, tokenization included;
- ``korag Embedder.embed_passages``: the Embedder as a batch ingest calls it, on Chunks that carry
  the chunker's token ids (prefix, limit check and counts included);
- the same engine with torch.compile on COMPILE_BUCKET-token buckets (64) and COMPILE_TOKENS-token
  batches (65536), warm-up outside the clock, time permitting;
- the bf16 vs fp32 minimum cosine on the 64 longest chunks.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

T0 = time.time()
TINY = os.environ.get("TINY") == "1"
REPLICATE = int(os.environ.get("REPLICATE", "5"))
HERE = Path(__file__).resolve()
CORPORA = [HERE.parents[1] / ".korag" / "gpu" / "corpus.jsonl",
           HERE.parents[2] / "shared" / "data" / "autorag-ko" / "corpus.jsonl"]


def corpus_path() -> Path:
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    for path in CORPORA:
        if path.exists():
            return path
    sys.exit(f"no corpus: pass CORPUS_JSONL or copy corpus.jsonl to {CORPORA[0]}")


def main() -> int:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as stm
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    from ingest.engine import EmbeddingEngine
    from ingest.precision import min_cosine

    texts = [json.loads(line)["text"] for line in corpus_path().open(encoding="utf-8")]
    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(texts, vocab_size=8000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                           unk_token="<unk>")
    tok = XLMRobertaTokenizerFast(tokenizer_object=sp._tokenizer, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                  sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                  model_max_length=512)
    ids_all = tok(["passage: " + t for t in texts], add_special_tokens=False)["input_ids"]
    chunks = [ids[s:s + 508] for ids in ids_all for s in range(0, len(ids), 508)] * REPLICATE
    chunk_texts = [tok.decode(c) for c in chunks]
    lens = [len(c) + 2 for c in chunks]
    size = dict(vocab_size=8000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) \
        if TINY else dict(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096)
    cfg = XLMRobertaConfig(**size, max_position_embeddings=514, type_vocab_size=1, pad_token_id=tok.pad_token_id,
                           bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    base = XLMRobertaModel(cfg, add_pooling_layer=False)
    dev = "cpu" if TINY else "cuda"
    tmp = tempfile.mkdtemp()
    tok.save_pretrained(tmp + "/hf")
    base.save_pretrained(tmp + "/hf")
    del base
    tr = stm.Transformer(tmp + "/hf", max_seq_length=512)
    dim = (getattr(tr, "get_embedding_dimension", None) or tr.get_word_embedding_dimension)()
    st = SentenceTransformer(modules=[tr, stm.Pooling(dim, "mean"), stm.Normalize()], device=dev)
    print(f"setup {time.time() - T0:.0f}s: {len(chunks)} chunks, mean {sum(lens) / len(lens):.0f} tokens; "
          f"{torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu'}, torch {torch.__version__}", flush=True)

    def sync() -> None:
        if dev == "cuda":
            torch.cuda.synchronize()

    results: list[tuple[str, float]] = []

    def report(name: str, seconds: float, tokens: int, extra: str = "") -> None:
        results.append((name, tokens / seconds))
        print(f"{name:<46} {tokens / seconds:>10,.0f} tok/s {extra}", flush=True)

    # fp32 vectors of the 64 longest chunks, before the engine casts the model in place
    longest = sorted(range(len(chunks)), key=lambda i: lens[i])[-64:]
    fp32 = EmbeddingEngine(st, "fp32", runtime="torch").encode([chunk_texts[i] for i in longest])

    engine = EmbeddingEngine(st, "auto", runtime="torch")  # what korag runs by default
    print("engine:", engine.describe(), flush=True)
    bf16 = engine.encode([chunk_texts[i] for i in longest])
    print(f"bf16 vs fp32 min cosine (64 longest chunks): {min_cosine(fp32, bf16):.5f}", flush=True)
    model = engine._module  # the same bf16 transformer, for the reference loop

    # --- the reference script's raw loop, verbatim in substance
    order = sorted(range(len(chunks)), key=lambda i: lens[i])

    def batches(budget: int) -> list[tuple[list[int], int]]:
        out, cur, curmax = [], [], 0
        for i in order:
            m = max(curmax, lens[i])
            if cur and m * (len(cur) + 1) > budget:
                out.append((cur, curmax))
                cur, curmax, m = [], 0, lens[i]
            cur.append(i)
            curmax = m
        if cur:
            out.append((cur, curmax))
        return out

    def pack(idx: list[int], length: int):
        ids = torch.full((len(idx), length), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), length), dtype=torch.long)
        for r, i in enumerate(idx):
            seq = [0] + chunks[i] + [2]
            ids[r, :len(seq)] = torch.tensor(seq)
            mask[r, :len(seq)] = 1
        return (ids.pin_memory(), mask.pin_memory()) if dev == "cuda" else (ids, mask)

    @torch.inference_mode()
    def embed(ids, mask):
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
        mf = mask.unsqueeze(-1).to(h.dtype)
        return torch.nn.functional.normalize(((h * mf).sum(1) / mf.sum(1)).float(), dim=-1)

    reps = 2
    packed = [pack(idx, length) for idx, length in batches(131072)]

    def reference_run() -> float:
        """The reference's timing: inputs packed and pinned before the clock starts."""
        for ids, mask in packed[:3] + packed[-3:]:
            embed(ids.to(dev), mask.to(dev))
        sync()
        t = time.time()
        for _ in range(reps):
            for ids, mask in packed:
                embed(ids.to(dev, non_blocking=True), mask.to(dev, non_blocking=True))
        sync()
        report("reference raw bf16, 128k-token batches", time.time() - t, sum(lens) * reps)
        return results[-1][1]

    reference = reference_run()

    # --- korag
    tokens = engine.tokenize(chunk_texts)
    korag_tokens = sum(len(x) for x in tokens.input_ids)  # decoded chunks re-tokenized: within a few % of lens
    print(f"korag tokens {korag_tokens} vs reference {sum(lens)}", flush=True)

    def korag_run(name: str, eng: EmbeddingEngine, with_tokens: bool) -> None:
        eng.encode(chunk_texts[:64])
        sync()
        t = time.time()
        for _ in range(reps):
            eng.encode(chunk_texts, tokens if with_tokens else None)
        sync()
        report(name, time.time() - t, korag_tokens * reps)

    t = time.time()
    engine.tokenize(chunk_texts)
    print(f"tokenizer alone: {korag_tokens / (time.time() - t):,.0f} tok/s", flush=True)
    default = engine.batch_tokens
    for budget in (default, 131072):
        engine.batch_tokens = budget
        korag_run(f"korag forward (from ids), {budget // 1024}k batches", engine, True)
        print(f"  = {results[-1][1] / reference:.2f}x reference", flush=True)
    engine.batch_tokens = default
    korag_run("korag end to end (tokenize + forward), default", engine, False)
    print(f"  = {results[-1][1] / reference:.2f}x reference", flush=True)

    # --- the Embedder as a batch ingest calls it: Chunks carrying the chunker's token ids
    from ingest.embedder import Embedder
    from korag.types import Chunk

    settings = SimpleNamespace(chunk_max_tokens=None, passage_prefix="passage: ", query_prefix="query: ",
                               embedding_batch_size=32, embedding_precision="auto", embedding_batch_tokens=None,
                               embedding_runtime="torch")
    embedder = Embedder(st, "koe5-shaped stand-in", settings)
    embedder.engine = engine  # the engine above (its weights are already bf16: no second cast)
    bodies = [text[len("passage: "):] if text.startswith("passage: ") else text for text in chunk_texts]
    ids = embedder.passage_budget.input_ids(["passage: " + b for b in bodies])
    chunks_in = [Chunk(text=b, index=i, input_ids=tuple(x)) for i, (b, x) in enumerate(zip(bodies, ids))
                 if len(x) <= embedder.info.max_input_tokens]
    embedder.embed_passages(chunks_in[:64])
    sync()
    t = time.time()
    for _ in range(reps):
        _, counts = embedder.embed_passages(chunks_in)
    sync()
    report("korag Embedder.embed_passages (chunker's ids)", time.time() - t, sum(counts) * reps,
           f"{len(chunks_in)} chunks")
    print(f"  = {results[-1][1] / reference:.2f}x reference", flush=True)

    bucket = int(os.environ.get("COMPILE_BUCKET", "64"))
    budget = int(os.environ.get("COMPILE_TOKENS", "65536"))
    if os.environ.get("COMPILE", "1") == "1" and time.time() - T0 < 200:  # warm-up is ~16 s per shape
        try:
            compiled = EmbeddingEngine(st, "bf16", budget, compile_bucket=bucket)
            t = time.time()
            compiled.warm_up()
            print(f"compile warm-up ({len(compiled.bucket_lengths())} shapes): {time.time() - t:.0f}s", flush=True)
            korag_run(f"korag compiled bf16 (from ids), {budget // 1024}k, bucket {bucket}", compiled, True)
            print(f"  = {results[-1][1] / reference:.2f}x reference", flush=True)
        except Exception as exc:  # report, do not lose the figures above
            print("compile failed:", type(exc).__name__, str(exc)[:300], flush=True)

    reference = max(reference, reference_run())  # once more at the end: the better of two, like korag's rows
    best = max(r for n, r in results if n.startswith("korag"))
    print(f"\nkorag best {best:,.0f} tok/s = {best / reference:.2f}x the reference raw bf16 {reference:,.0f} tok/s "
          f"(target >= 0.90x); total {time.time() - T0:.0f}s")
    for name, rate in results:
        print(f"| {name} | {rate:,.0f} | {rate / reference:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
