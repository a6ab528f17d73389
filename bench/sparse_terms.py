"""Keyword-channel variants on a BEIR dataset, scored as `korag eval --modes sparse` scores them
but without the dense model or a store: every passage is parsed and chunked once by korag's own
parser and chunker (the given model's token budget), each variant turns the chunks' Kiwi
morphemes into terms with its :class:`ingest.sparse.SparseEncoder`, BM25 weights them as stored
(term-frequency part) with Qdrant's IDF, a passage ranks by its best chunk, and
:func:`retrieval.metrics.evaluate` computes nDCG@10 / Recall@10 / MRR@10.

    python bench/sparse_terms.py [DATASET_DIR] [--model PATH]

Prints one line per variant, next to the encoder before issue 20 and korag's default, all in the same run.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.embedder import Embedder  # noqa: E402
from ingest.parsing import parse_document  # noqa: E402
from ingest.pipeline import chunker_for  # noqa: E402
from ingest.sentences import Morph, analyse  # noqa: E402
from ingest.sparse import QUERY_STOP_TERMS, QUESTION_WORDS, SparseEncoder  # noqa: E402
from korag.settings import Settings  # noqa: E402
from retrieval.evaluation import CHUNKS_PER_PASSAGE, Dataset, _passage_ranking  # noqa: E402
from retrieval.metrics import evaluate  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT = SHARED / "data" / "autorag-ko"
E5_SMALL = Path(__file__).resolve().parents[1] / ".korag" / "models" / "e5-small"  # bench/e5small.py builds it
K = 10


@dataclass(frozen=True)
class AnalysedChunk:
    source: str
    header: list[Morph]  # the embedded section header's morphemes (empty: none)
    body: list[Morph]  # the chunk text's morphemes


def analysed_chunks(dataset: Dataset, settings: Settings) -> tuple[list[AnalysedChunk], int]:
    """Every passage as the `korag eval` ingest sees it (a ``.txt`` file), chunked by korag's
    chunker; the chunker's own morphemes (the ones the pipeline encodes), split into header and
    body. Returns the chunks and how many could not be split (their header's own analysis did
    not prefix the chunker's morphemes; they count as all body)."""
    chunker = chunker_for(Embedder.load(settings), settings)
    out, unsplit = [], 0
    for passage in dataset.corpus:
        if not passage.get("text", "").strip():
            continue
        blocks = parse_document(passage["text"].encode("utf-8"), "passage.txt", passage["_id"])
        for chunk, morphs in chunker.chunk_with_terms(blocks, list):
            header = analyse(chunk.header).morphs if chunk.header else []
            if [m.form for m in morphs[: len(header)]] != [m.form for m in header]:
                unsplit += bool(header)
                header = []
            out.append(AnalysedChunk(passage["_id"], list(morphs[: len(header)]), list(morphs[len(header):])))
    return out, unsplit


def chunk_terms(encoder: SparseEncoder, chunk: AnalysedChunk) -> list[str]:
    """A chunk's terms as the pipeline stores them: header terms ``header_repeat`` times, body once."""
    return encoder.terms_of(chunk.header) * encoder.header_repeat + encoder.terms_of(chunk.body)


def score(dataset: Dataset, chunks: list[AnalysedChunk], encoder: SparseEncoder) -> dict[str, float]:
    terms = [chunk_terms(encoder, c) for c in chunks]
    if encoder.avg_terms <= 0:  # the corpus' own average length
        encoder = replace(encoder, avg_terms=sum(map(len, terms)) / len(terms))
    weights = [encoder.bm25_weights(t) for t in terms]
    df = Counter(term for w in weights for term in w)
    n = len(weights)
    idf = {term: math.log(1 + (n - f + 0.5) / (f + 0.5)) for term, f in df.items()}  # Qdrant's IDF modifier
    run = {}
    for qid in dataset.qrels:
        query = encoder.query_terms(dataset.queries[qid])
        scores = [sum(w[t] * idf[t] for t in query if t in w) for w in weights]
        best = sorted((i for i, s in enumerate(scores) if s > 0), key=lambda i: -scores[i])[: K * CHUNKS_PER_PASSAGE]
        run[qid] = _passage_ranking((chunks[i].source for i in best), K)
    return evaluate(run, dataset.qrels, K)


def variants(base: SparseEncoder) -> list[tuple[str, SparseEncoder]]:
    """The encoder before issue 20 (no compounds, no query stop terms, header terms once), each
    change alone, korag's default, and the k1 x b grid around it."""
    before = replace(base, compounds=False, query_stop=frozenset(), header_repeat=1)
    out = [
        ("before (no compounds, no stop terms, header x1)", before),
        ("header terms left out", replace(before, header_repeat=0)),
        ("header terms x2", replace(before, header_repeat=2)),
        ("header terms x3", replace(before, header_repeat=3)),
        ("compounds", replace(before, compounds=True)),
        ("query stop: question words only", replace(before, query_stop=QUESTION_WORDS)),
        ("query stop: question words + 설명 대하다 것", replace(before, query_stop=QUERY_STOP_TERMS)),
        ("compounds + query stop, header x1", replace(base, header_repeat=1)),
        ("korag default (compounds + query stop + header x2)", base),
        ("korag default, avg_terms = corpus average", replace(base, avg_terms=0)),
    ]
    for k1 in (0.6, 0.9, 1.2, 1.5, 2.0):
        for b in (0.3, 0.5, 0.75, 0.9):
            out.append((f"korag default, k1 {k1} b {b}", replace(base, k1=k1, b=b)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--model", default=str(E5_SMALL), help="embedding model whose token budget shapes the chunks")
    args = parser.parse_args()
    dataset = Dataset.load(args.dataset)
    settings = Settings(embedding_model=args.model)
    chunks, unsplit = analysed_chunks(dataset, settings)
    print(f"{len(chunks)} chunks, {sum(bool(c.header) for c in chunks)} with a header ({unsplit} not split)")
    avg = sum(len(chunk_terms(SparseEncoder.from_settings(settings), c)) for c in chunks) / len(chunks)
    print(f"average terms per chunk {avg:.1f}")
    base = SparseEncoder.from_settings(settings)
    for label, encoder in variants(base):
        m = score(dataset, chunks, encoder)
        print(f"{label:<48} nDCG@10 {m['ndcg@10']:.4f}  Recall@10 {m['recall@10']:.3f}  MRR@10 {m['mrr@10']:.4f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
