"""Section context (parent-child retrieval): match small chunks, return the text around them.

Small chunks (``KORAG_CHUNK_MAX_TOKENS`` below the model's limit) match a question precisely but
hold little context for an answer. The chunker groups the consecutive chunks of one section into
runs that together fit the model's own limit (``parent_index`` in each chunk's metadata: the
first chunk of its run; :mod:`ingest.chunking` rule 6). A ``context="section"`` search ranks
chunks as usual, then returns each run once, in the order of its best chunk:

- ``k`` counts runs: chunks are fetched deeper (4x, 16x ... ``k``) until ``k`` runs are found or
  the store has no more matches;
- a result is the run's text (its chunks' texts, overlaps once), with the id, score and
  metadata of its best chunk (so a citation's page is where the match is), plus
  ``matched_chunks``: the ``chunk_index`` of each of its chunks among the hits, best first;
- a chunk stored before runs were recorded (no ``parent_index``) is its own run.

With chunks at the model's limit (korag's default) every chunk is its own run, and a section
search returns what a chunk search does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from qdrant_client import models

from korag.storage.filters import build_filter
from korag.storage.store import SEQ_FIELD, QdrantStore
from korag.types import SearchResult, StoredChunk

CONTEXTS = ("chunk", "section")
FANOUT = 4  # chunks fetched per wanted run at first, and the factor the depth grows by
MAX_DEPTH = 2048  # the most chunks one search reads to find k runs

RunKey = tuple[str, int, int]  # doc_id, ingest_seq (one version of the document), parent_index


def check_context(context: str) -> None:
    if context not in CONTEXTS:
        raise ValueError(f"unknown search context {context!r}; use one of {', '.join(CONTEXTS)}")


def run_key(meta: dict) -> RunKey | None:
    """The run of the chunk with metadata ``meta``; None for a chunk stored before runs were recorded."""
    doc_id, seq, parent = meta.get("doc_id"), meta.get(SEQ_FIELD), meta.get("parent_index")
    if not isinstance(doc_id, str) or not isinstance(seq, int) or not isinstance(parent, int):
        return None
    return doc_id, seq, parent


def group_by_run(hits: Sequence[SearchResult], k: int) -> list[list[SearchResult]]:
    """Chunks best first → the first ``k`` runs, each as its chunks among ``hits``, best first."""
    groups: dict[RunKey | str, list[SearchResult]] = {}
    for hit in hits:
        key = run_key(hit.metadata)
        key = key if key is not None else hit.id
        if key in groups:
            groups[key].append(hit)
        elif len(groups) < k:
            groups[key] = [hit]
    return list(groups.values())


def stitch(chunks: Sequence[StoredChunk]) -> str:
    """A run's text from its stored chunks: each chunk after the first without the characters it
    repeats from the one before (``overlap_chars``); a chunk that repeats none follows on a new line."""
    ordered = sorted(chunks, key=lambda c: c.metadata["chunk_index"])
    parts = [ordered[0].text] if ordered else []
    for chunk in ordered[1:]:
        overlap = chunk.metadata.get("overlap_chars", 0)
        parts.append(chunk.text[overlap:] if overlap > 0 else "\n" + chunk.text)
    return "".join(parts)


def expand(store: QdrantStore, groups: Sequence[Sequence[SearchResult]]) -> list[SearchResult]:
    """One result per group: the run's text (read from the store in one scroll for all runs),
    the best chunk's id, score and metadata, and ``matched_chunks``."""
    keys = [run_key(group[0].metadata) for group in groups]
    wanted = [key for key in keys if key is not None]
    members: dict[RunKey, list[StoredChunk]] = {key: [] for key in wanted}
    if wanted:
        where = models.Filter(should=[
            build_filter({"doc_id": doc_id, SEQ_FIELD: seq, "parent_index": parent}) for doc_id, seq, parent in wanted
        ])
        for chunk in store.iter_chunks(where=where):
            key = run_key(chunk.metadata)
            if key in members and isinstance(chunk.metadata.get("chunk_index"), int):
                members[key].append(chunk)
    out = []
    for key, group in zip(keys, groups):
        best = group[0]
        found = members.get(key) if key is not None else None
        text = stitch(found) if found else best.text  # a run deleted meanwhile: the chunk that matched
        matched = [hit.metadata.get("chunk_index") for hit in group]
        out.append(replace(best, text=text, metadata={**best.metadata, "matched_chunks": matched}))
    return out


def section_results(store: QdrantStore, ranked: Callable[[int], list[SearchResult]], k: int) -> list[SearchResult]:
    """The top ``k`` runs, from ``ranked(depth)``: the top ``depth`` chunks of the search, best first."""
    depth = min(k * FANOUT, MAX_DEPTH)
    while True:
        hits = ranked(depth)
        groups = group_by_run(hits, k)
        if len(groups) >= k or len(hits) < depth or depth >= MAX_DEPTH:
            return expand(store, groups)
        depth = min(depth * FANOUT, MAX_DEPTH)
