"""Parsing work, old path against new, measured in the same run.

    python bench/parse_bench.py [--corpus CORPUS_DIR] [--samples SAMPLES_DIR] [--pages N] [--repeat R]

1. Korean plain text (about 290 KB of passages from CORPUS_DIR/corpus.jsonl, default
   ../shared/data/autorag-ko; bench/documents.py's long_korean_text without it): parse_document
   with unstructured's English rules for every paragraph (korag before) and with the
   script-aware rules (now); spaCy calls and time inside spaCy counted around unstructured's one
   entry point into it (``unstructured.nlp.tokenize._run_pipeline``), caches emptied before each.
2. PDF text layer, pdfminer.six against pypdfium2, on SAMPLES_DIR/*.pdf (default
   ../shared/samples) and a generated N-page Korean PDF (default 120): reading time (best of R),
   pages with text, paragraphs, characters, Hangul syllables, and the character-level similarity
   of the two texts (difflib ratio per page, whitespace removed; the lowest page is printed).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import documents as docs  # noqa: E402
from ingest.parsing import parse_document, script_rules, warm_up  # noqa: E402
from ingest.parsing.pdf import pdfium_pages, pdfminer_pages  # noqa: E402

SHARED = ROOT.parent / "shared"
TEXT_BYTES = 290_000


def korean_text(corpus: Path) -> str:
    path = corpus / "corpus.jsonl"
    if not path.is_file():
        text = docs.long_korean_text(40)
        return "\n\n".join([text] * (TEXT_BYTES // len(text.encode()) + 1))
    passages, size = [], 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            passages.append(json.loads(line)["text"])
            size += len(passages[-1].encode())
            if size >= TEXT_BYTES:
                break
    return "\n\n".join(passages)


class SpacyMeter:
    """Counts calls into spaCy and the time spent there."""

    def __init__(self) -> None:
        from unstructured.nlp import tokenize

        self.tokenize = tokenize
        self.original = tokenize._run_pipeline
        self.calls = 0
        self.seconds = 0.0

    def __enter__(self) -> SpacyMeter:
        t = self.tokenize
        for cached in (t._process_cached, t.word_tokenize, t.pos_tag, t._tokenize_for_cache):
            cached.cache_clear()

        def counted(text):
            start = time.perf_counter()
            try:
                return self.original(text)
            finally:
                self.calls += 1
                self.seconds += time.perf_counter() - start

        t._run_pipeline = counted
        return self

    def __exit__(self, *exc) -> None:
        self.tokenize._run_pipeline = self.original


def bench_text(corpus: Path) -> None:
    data = korean_text(corpus).encode()
    print(f"Korean plain text: {len(data):,} bytes")
    runs = {}
    for label in ("english rules (before)", "script-aware (now)"):
        with SpacyMeter() as meter:
            start = time.perf_counter()
            if label.startswith("english"):
                with script_rules.english_rules_everywhere():
                    blocks = parse_document(data, "korean.txt")
            else:
                blocks = parse_document(data, "korean.txt")
            total = time.perf_counter() - start
        runs[label] = (total, meter.seconds)
        titles = sum(b.kind == "title" for b in blocks)
        print(f"  {label:24} parse {total:6.2f} s  spaCy {meter.calls:5d} calls {meter.seconds:6.2f} s  "
              f"blocks {len(blocks)} titles {titles}")
    (before, spacy_before), (now, spacy_now) = runs.values()
    print(f"  ratio: parse {before / now:.1f}x faster; spaCy time {spacy_before:.2f} s -> {spacy_now:.2f} s")


def _best(fn, data: bytes, repeat: int) -> tuple[float, list[list[str]]]:
    best, pages = float("inf"), []
    for _ in range(repeat):
        start = time.perf_counter()
        pages = list(fn(data))
        best = min(best, time.perf_counter() - start)
    return best, pages


def _flat(paragraphs: list[str]) -> str:
    return "".join("".join(paragraphs).split())


def _hangul(text: str) -> int:
    return sum("\uac00" <= c <= "\ud7a3" for c in text)


def compare_pdf(name: str, data: bytes, repeat: int) -> None:
    t_miner, miner = _best(pdfminer_pages, data, repeat)
    t_pdfium, pdfium = _best(pdfium_pages, data, repeat)
    ratios = [difflib.SequenceMatcher(None, _flat(a), _flat(b), autojunk=False).ratio() for a, b in zip(miner, pdfium)]
    print(f"{name}")
    for label, seconds, pages in (("pdfminer.six", t_miner, miner), ("pypdfium2", t_pdfium, pdfium)):
        text = "".join(_flat(p) for p in pages)
        with_text = [i for i, p in enumerate(pages, 1) if p]
        print(f"  {label:12} {seconds * 1000:8.1f} ms  pages {len(pages)} (with text {len(with_text)})  "
              f"paragraphs {sum(map(len, pages))}  chars {len(text):,}  hangul {_hangul(text):,}")
    print(f"  ratio {t_miner / t_pdfium:.1f}x; same pages with text: "
          f"{[bool(p) for p in miner] == [bool(p) for p in pdfium]}; "
          f"char similarity per page: mean {sum(ratios) / max(len(ratios), 1):.3f}, min {min(ratios, default=1):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=SHARED / "data" / "autorag-ko")
    parser.add_argument("--samples", type=Path, default=SHARED / "samples")
    parser.add_argument("--pages", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    warm_up()
    bench_text(args.corpus)
    print()
    for path in sorted(args.samples.glob("*.pdf")) if args.samples.is_dir() else []:
        compare_pdf(path.name, path.read_bytes(), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        paragraphs = docs.long_korean_text(args.pages * 2).split("\n\n")
        pages = [[s.strip() + "." for s in p.split(".") if s.strip()][:6] for p in paragraphs]
        pages = [pages[i] + pages[i + 1] for i in range(0, len(pages) - 1, 2)]
        path = docs.make_pdf(Path(tmp) / "generated.pdf", pages)
        compare_pdf(f"generated Korean PDF, {len(pages)} pages", path.read_bytes(), args.repeat)


if __name__ == "__main__":
    main()
