"""Two more Korean labelled sets, built offline from documents korag can parse (issue 20 item 2).

    python bench/korean_sets.py [OUT_DIR] [--shared ../shared]   # writes OUT_DIR/ko-ict, OUT_DIR/ko-headings

AutoRAG is the only Korean benchmark here; a fusion default chosen on it alone could fit its
quirks. These sets come from other writing (a programming book, insurance terms, league rules,
Hancom forms and notices) and ask other kinds of question. Sources: every document of
``../shared/samples`` (Markdown chapters of the Korean Rust book, PDFs, HWP and HWPX) and
korag's ``demo/docs``, parsed by korag's own parser (``ingest.parsing.parse_document``);
a document that cannot be parsed (a 배포용 or HWP 3.0 file) or whose text equals an earlier one's
(the HWP/HWPX twins) is left out.

One corpus, shared by both sets. A heading starts a section; the blocks under it (text, lists,
tables; never the heading itself) are cut at block, or for a long block sentence, boundaries
into passages of about ``PASSAGE_CHARS`` characters.

- ``ko-ict`` (Inverse Cloze Task): per passage, its longest Korean sentence is the query and is
  removed from the passage, which is the one relevant passage. The query is the sentence as
  written (no rewording): it shares vocabulary and topic with its context, not the words of the
  sentence itself, so neither channel can match it verbatim.
- ``ko-headings``: the query is a section heading that occurs once in the corpus; every passage
  of that section is relevant. The heading's words may or may not appear under it.

BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``), so `korag eval` and
bench/fusion_bench.py take either folder. The output is generated data: keep it out of git
(the default, ``.korag/data``, is ignored).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import e5small  # noqa: E402
from ingest.parsing import SUPPORTED_SUFFIXES, Block, parse_document  # noqa: E402
from korag.errors import DocumentError  # noqa: E402

DEFAULT_OUT = e5small.ROOT / ".korag" / "data"
DEMO_DOCS = e5small.ROOT / "demo" / "docs"
PASSAGE_CHARS = 300  # a passage closes once it reaches this length
MIN_PASSAGE_CHARS = 25  # a passage left with less (after removing an ICT sentence) is dropped: one sentence at least
SENTENCE_CHARS = (25, 200)  # an ICT query's length bounds
MIN_HANGUL_SHARE = 0.5  # of a query's non-space characters: Korean prose, not code or numbers
MIN_DISTINCT_WORDS = 0.7  # share of a query's words that differ: no filler repeated (롱 누름틀롱 누름틀 ...)
_SENTENCE_END = re.compile(r"(?<=[.?!。])\s+")
_HANGUL = re.compile(r"[가-힣]")


@dataclass
class Section:
    doc: str
    heading: str | None
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Passage:
    id: str
    section: int  # index into the sections list
    text: str
    prose: list[str]  # its sentences from text blocks: the ICT candidates


def hangul_share(text: str) -> float:
    letters = [c for c in text if not c.isspace()]
    return sum(bool(_HANGUL.match(c)) for c in letters) / len(letters) if letters else 0.0


def distinct_words(text: str) -> float:
    words = text.split()
    return len(set(words)) / len(words) if words else 0.0


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def documents(folders: list[Path]) -> list[tuple[str, list[Block]]]:
    """Parsed documents, in path order; unparsable ones and exact-text duplicates left out."""
    parsed, seen = [], set()
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES and p.name != "README.md"):
            try:
                blocks = parse_document(path.read_bytes(), path.name)
            except DocumentError as exc:
                print(f"left out: {exc}", file=sys.stderr)
                continue
            text = "\n".join(b.text for b in blocks)
            if text in seen:
                print(f"left out: {path.name}: same text as an earlier document", file=sys.stderr)
                continue
            seen.add(text)
            parsed.append((path.name, blocks))
    return parsed


def split_sections(name: str, blocks: list[Block]) -> list[Section]:
    sections = [Section(name, None)]
    for block in blocks:
        if block.kind == "title":
            sections.append(Section(name, " ".join(block.text.split())))
        else:
            sections[-1].blocks.append(block)
    return [s for s in sections if s.blocks]


def _pieces(block: Block) -> list[tuple[str, bool]]:
    """A block as (text, is prose) pieces no longer than a passage, cut at sentence ends."""
    if block.kind != "text" or len(block.text) <= PASSAGE_CHARS:
        return [(block.text, block.kind in ("text", "list"))]
    pieces, current = [], ""
    for sentence in sentences(block.text):
        if current and len(current) + len(sentence) > PASSAGE_CHARS:
            pieces.append((current, True))
            current = ""
        current = f"{current} {sentence}".strip()
    return [*pieces, (current, True)] if current else pieces


def passages(sections: list[Section]) -> list[Passage]:
    out: list[Passage] = []
    for index, section in enumerate(sections):
        texts: list[str] = []
        prose: list[str] = []
        pieces = [piece for block in section.blocks for piece in _pieces(block)]
        for n, (text, is_prose) in enumerate(pieces):
            texts.append(text)
            if is_prose:
                prose.extend(sentences(text))
            if sum(map(len, texts)) >= PASSAGE_CHARS or n == len(pieces) - 1:
                out.append(Passage(f"{section.doc}#{len(out)}", index, "\n".join(texts), prose))
                texts, prose = [], []
    return out


def ict_sentence(passage: Passage) -> str | None:
    """The passage's longest Korean prose sentence whose removal leaves a passage, or None."""
    low, high = SENTENCE_CHARS
    fits = [s for s in passage.prose if low <= len(s) <= high and hangul_share(s) >= MIN_HANGUL_SHARE
            and distinct_words(s) >= MIN_DISTINCT_WORDS and s in passage.text and len(passage.text) - len(s) >= MIN_PASSAGE_CHARS]
    return max(fits, key=len, default=None)


def build(folders: list[Path]) -> dict[str, dict]:
    """{set name: {"corpus": [...], "queries": [...], "qrels": [(query id, passage id)]}}."""
    sections = [s for name, blocks in documents(folders) for s in split_sections(name, blocks)]
    corpus, ict_queries, ict_qrels = [], [], []
    for passage in passages(sections):
        sentence = ict_sentence(passage)
        text = passage.text if sentence is None else " ".join(passage.text.replace(sentence, "", 1).split())
        if len(text) < MIN_PASSAGE_CHARS:
            continue
        corpus.append({"_id": passage.id, "title": "", "text": text, "section": passage.section})
        if sentence is not None:
            qid = f"ict-{len(ict_queries)}"
            ict_queries.append({"_id": qid, "text": sentence})
            ict_qrels.append((qid, passage.id))
    headings = Counter(s.heading for s in sections if s.heading)
    head_queries, head_qrels = [], []
    for index, section in enumerate(sections):
        relevant = [p["_id"] for p in corpus if p["section"] == index]
        if not (section.heading and headings[section.heading] == 1 and relevant and _HANGUL.search(section.heading)):
            continue
        qid = f"head-{len(head_queries)}"
        head_queries.append({"_id": qid, "text": section.heading})
        head_qrels.extend((qid, pid) for pid in relevant)
    corpus = [{k: v for k, v in p.items() if k != "section"} for p in corpus]
    return {"ko-ict": {"corpus": corpus, "queries": ict_queries, "qrels": ict_qrels},
            "ko-headings": {"corpus": corpus, "queries": head_queries, "qrels": head_qrels}}


def write(folder: Path, data: dict) -> None:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus", "queries"):
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in data[name])
    with (folder / "qrels" / "test.tsv").open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        handle.writelines(f"{qid}\t{pid}\t1\n" for qid, pid in data["qrels"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--shared", type=Path, default=e5small.DEFAULT_SHARED)
    args = parser.parse_args(argv)
    samples = args.shared / "samples"
    if not samples.is_dir():
        print(f"{samples} is absent (the shared folder beside the checkout)", file=sys.stderr)
        return 2
    for name, data in build([samples, DEMO_DOCS]).items():
        write(args.out / name, data)
        chars = sum(len(p["text"]) for p in data["corpus"])
        print(f"{args.out / name}: {len(data['corpus'])} passages ({chars:,} characters), "
              f"{len(data['queries'])} queries, {len(data['qrels'])} relevance judgements")
    return 0


if __name__ == "__main__":
    sys.exit(main())
