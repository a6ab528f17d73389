"""The Korean keyword channel: Kiwi content morphemes → BM25 term weights as a sparse vector.

Documents carry BM25's term-frequency part, tf·(k1+1) / (tf + k1·(1 − b + b·len/avglen)); Qdrant's
IDF modifier supplies the inverse document frequency at query time, so the weights of stored
points never need recomputing as the collection grows. A query is its set of content
morphemes, each with weight 1.

Term ids are a hash of the morpheme's surface form (32 bits of BLAKE2b): the same in every
process and on every machine, with no vocabulary to share or keep in step.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from ingest.sentences import kiwi

# Content morphemes: general/proper/bound nouns, numerals, verb and adjective stems, roots,
# foreign words, Chinese characters, numbers. Particles (J*), endings (E*), affixes and
# punctuation are dropped. See README for the measured comparison of tag sets.
CONTENT_TAGS = frozenset({"NNG", "NNP", "NNB", "NR", "VV", "VA", "XR", "SL", "SH", "SN"})
NOUN_TAGS = frozenset({"NNG", "NNP", "NNB", "NR", "XR", "SL", "SH", "SN"})


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@lru_cache(maxsize=1 << 16)
def term_id(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little")


@dataclass(frozen=True)
class SparseEncoder:
    tags: frozenset[str] = CONTENT_TAGS
    k1: float = 1.2
    b: float = 0.75
    avg_terms: float = 60.0  # typical number of content morphemes in a chunk

    @classmethod
    def from_settings(cls, settings) -> "SparseEncoder":
        """``settings``: a :class:`korag.settings.Settings` (KORAG_SPARSE_TAGS, KORAG_SPARSE_AVG_TERMS)."""
        tags = (frozenset(t.strip() for t in settings.sparse_tags.split(",") if t.strip())
                if settings.sparse_tags else CONTENT_TAGS)
        return cls(tags=tags, avg_terms=settings.sparse_avg_terms)

    def terms(self, text: str) -> list[str]:
        return self.terms_of(kiwi().tokenize(text))

    def terms_of(self, morphs: Iterable) -> list[str]:
        """The keyword terms among Kiwi morphemes (anything with ``form`` and ``tag``: Kiwi's
        tokens, :class:`ingest.sentences.Morph`)."""
        out = []
        for token in morphs:
            if token.tag in self.tags:
                form = token.form.lower() if token.tag == "SL" else token.form
                # Verb/adjective stems get a marker so 가(다) does not collide with the noun 가.
                out.append(form + "다" if token.tag in ("VV", "VA") else form)
        return out

    def bm25_weights(self, terms: list[str]) -> dict[str, float]:
        """BM25's term-frequency part per term; the IDF part is Qdrant's."""
        counts = Counter(terms)
        length = sum(counts.values())
        norm = self.k1 * (1 - self.b + self.b * length / self.avg_terms)
        return {t: tf * (self.k1 + 1) / (tf + norm) for t, tf in counts.items()}

    def encode_document(self, text: str) -> SparseVector:
        return _vector(self.bm25_weights(self.terms(text)))

    def encode_terms(self, terms: list[str]) -> SparseVector:
        """:meth:`encode_document` from terms already taken (the chunker's, see
        :meth:`ingest.chunking.Chunker.chunk_with_terms`): no second Kiwi pass."""
        return _vector(self.bm25_weights(terms))

    def encode_query(self, text: str) -> SparseVector:
        return _vector({t: 1.0 for t in set(self.terms(text))})


def _vector(weights: dict[str, float]) -> SparseVector:
    merged: dict[int, float] = {}
    for term, weight in weights.items():  # a hash collision merges two terms' weights
        merged[term_id(term)] = merged.get(term_id(term), 0.0) + weight
    indices = sorted(merged)
    return SparseVector(indices=indices, values=[merged[i] for i in indices])
