"""Optional re-ranking: a cross-encoder reads the query beside each of the top candidates of any
search mode and re-orders them (``KORAG_RERANK_MODEL``, a sentence-transformers ``CrossEncoder``
directory, e.g. a Korean reranker the operator has; none is shipped or downloaded).

The retriever fetches ``KORAG_RERANK_CANDIDATES`` results (at least ``k``), the cross-encoder
scores every (query, chunk text) pair in one call, and the best ``k`` are returned with the
cross-encoder's score (0..1 for a one-label model: sentence-transformers applies its sigmoid).
A cross-encoder reads each pair in full, so its cost grows with the candidates: measured in
bench/RESULTS.md, and reported per search in ``took_ms`` and the ``korag_rerank_duration_seconds``
metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from korag.errors import ModelLoadError
from korag.settings import Settings
from korag.types import SearchResult


def _no_hook(seconds: float) -> None:
    return None


@dataclass
class Reranker:
    """``Reranker(model, candidates).rerank(query, results, k)`` → the best ``k``, re-ordered."""

    model: Any  # a sentence_transformers.CrossEncoder
    candidates: int = 30
    on_rerank: Callable[[float], None] = _no_hook  # seconds per call (the service's metric)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Reranker | None":
        """The reranker KORAG_RERANK_MODEL names, on the embedding model's device; None when unset.
        Raises :class:`ModelLoadError` naming the setting when it cannot be loaded."""
        if settings.rerank_model is None:
            return None
        from sentence_transformers import CrossEncoder  # lazy: loads torch and transformers, only when reranking

        device = settings.embedding_device if settings.embedding_device is not None else "cpu"
        try:
            model = CrossEncoder(settings.rerank_model, device=device, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError, HF hub errors ...: one clear message
            raise ModelLoadError(f"KORAG_RERANK_MODEL={settings.rerank_model!r} cannot be loaded as a "
                                 f"sentence-transformers CrossEncoder: {exc}") from exc
        return cls(model, settings.rerank_candidates)

    def depth(self, k: int) -> int:
        """How many results to fetch for a top ``k``."""
        return max(k, self.candidates)

    def rerank(self, query: str, results: list[SearchResult], k: int) -> list[SearchResult]:
        if not results:
            return results
        started = time.perf_counter()
        scores = self.model.predict([(query, r.text) for r in results], show_progress_bar=False)
        self.on_rerank(time.perf_counter() - started)
        ranked = sorted(zip(results, (float(s) for s in scores)), key=lambda pair: -pair[1])
        return [replace(result, score=score) for result, score in ranked[:k]]
