"""The Korean keyword channel: Kiwi content morphemes → BM25 term weights as a sparse vector.

Documents carry BM25's term-frequency part, tf·(k1+1) / (tf + k1·(1 − b + b·len/avglen)); Qdrant's
IDF modifier supplies the inverse document frequency at query time, so the weights of stored
points never need recomputing as the collection grows. A query is its set of content
morphemes, each with weight 1, less the words that only make it a question (:data:`QUERY_STOP_TERMS`).

A run of nouns (NNG/NNP: 시중은행, 시중 은행 → 시중 + 은행) is indexed as its parts and as the
compound (시중은행), on both sides: a text that writes the compound as one word or as two matches
either way, and the whole phrase counts more than its parts scattered apart. Measured on AutoRAG
(``bench/sparse_terms.py``, see bench/RESULTS.md), as are the stop terms, BM25's k1 and b, and
the weight of a chunk's section header: its terms count twice (:attr:`SparseEncoder.header_repeat`),
as the heading names what the section is about.

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
COMPOUND_TAGS = frozenset({"NNG", "NNP"})
# Terms that make a sentence a question and say nothing of what it asks about: question words
# (as Kiwi keeps them among content morphemes: 얼마 NNG, 어떠(한) XR; 무엇 언제 어디 누구 are NP and
# 몇 MM, 왜 MAG, never terms) and the task words of questions (설명하시오, ~에 대해, ~것은).
QUESTION_WORDS = frozenset({"무엇", "언제", "어디", "얼마", "몇", "누구", "어떻다", "어떠", "왜", "어느", "무슨"})
QUERY_STOP_TERMS = QUESTION_WORDS | {"설명", "대하다", "것"}


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
    compounds: bool = True  # noun runs indexed as compounds too (changes stored vectors: see settings_key)
    header_repeat: int = 2  # a chunk's section-header terms count this many times (its body's once)
    query_stop: frozenset[str] = QUERY_STOP_TERMS

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
        out: list[str] = []
        run: list[str] = []  # the nouns of the current noun run
        for token in morphs:
            if token.tag in COMPOUND_TAGS:
                run.append(token.form)
            else:
                out.extend(self._compound(run))
                run = []
            if token.tag in self.tags:
                form = token.form.lower() if token.tag == "SL" else token.form
                # Verb/adjective stems get a marker so 가(다) does not collide with the noun 가.
                out.append(form + "다" if token.tag in ("VV", "VA") else form)
        return out + self._compound(run)

    def _compound(self, run: list[str]) -> list[str]:
        """The compound term of a run of adjacent nouns (spaced or not), when there is one."""
        return ["".join(run)] if self.compounds and len(run) > 1 else []

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

    def query_terms(self, text: str) -> list[str]:
        """The terms a query searches with, each once, in order: its keyword terms less
        :attr:`query_stop`."""
        return list(dict.fromkeys(t for t in self.terms(text) if t not in self.query_stop))

    def encode_query(self, text: str) -> SparseVector:
        return _vector({t: 1.0 for t in self.query_terms(text)})


def _vector(weights: dict[str, float]) -> SparseVector:
    merged: dict[int, float] = {}
    for term, weight in weights.items():  # a hash collision merges two terms' weights
        merged[term_id(term)] = merged.get(term_id(term), 0.0) + weight
    indices = sorted(merged)
    return SparseVector(indices=indices, values=[merged[i] for i in indices])
