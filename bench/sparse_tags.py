"""Which Kiwi tags should the keyword channel keep? BM25 over whole passages, exactly as the
sparse channel weights them (korag's SparseEncoder term weights, Qdrant's IDF), for several tag
sets, on a BEIR dataset. Prints nDCG@10 and Recall@10 per tag set.

    python bench/sparse_tags.py [DATASET_DIR]
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.sparse import CONTENT_TAGS, NOUN_TAGS, SparseEncoder  # noqa: E402
from retrieval.evaluation import Dataset  # noqa: E402
from retrieval.metrics import evaluate  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "autorag-ko"
TAG_SETS = {
    "nouns only (NNG NNP NNB NR XR SL SH SN)": NOUN_TAGS,
    "korag: nouns + verb/adjective stems": CONTENT_TAGS,
    "+ adverbs (MAG)": CONTENT_TAGS | {"MAG"},
    "+ derivational suffixes (XSN XSV XSA)": CONTENT_TAGS | {"XSN", "XSV", "XSA"},
    "everything but particles/endings/punctuation": None,
}


def main() -> int:
    dataset = Dataset.load(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
    texts = {p["_id"]: p["text"] for p in dataset.corpus if p.get("text", "").strip()}
    for label, tags in TAG_SETS.items():
        if tags is None:
            from ingest.sentences import kiwi

            tags = frozenset(t.tag for text in list(texts.values())[:50] for t in kiwi().tokenize(text)
                             if not t.tag.startswith(("J", "E", "S")) or t.tag in ("SL", "SH", "SN"))
        encoder = SparseEncoder(tags=frozenset(tags), avg_terms=1.0)
        terms = {pid: encoder.terms(text) for pid, text in texts.items()}
        avg = sum(len(t) for t in terms.values()) / len(terms)
        encoder = SparseEncoder(tags=frozenset(tags), avg_terms=avg)
        docs = {pid: encoder.bm25_weights(t) for pid, t in terms.items()}
        df = Counter(term for weights in docs.values() for term in weights)
        n = len(docs)
        idf = {term: math.log(1 + (n - f + 0.5) / (f + 0.5)) for term, f in df.items()}
        run = {}
        for qid in dataset.qrels:
            query = set(encoder.terms(dataset.queries[qid]))
            scores = {pid: sum(w[t] * idf[t] for t in query if t in w) for pid, w in docs.items()}
            run[qid] = sorted(scores, key=lambda pid: -scores[pid])[:10]
        m = evaluate(run, dataset.qrels, 10)
        print(f"{label:<48} nDCG@10 {m['ndcg@10']:.3f}  nDCG@1 {m['ndcg@1']:.3f}  Recall@10 {m['recall@10']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
