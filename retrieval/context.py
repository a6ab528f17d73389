"""Format retrieved chunks as numbered, cited context for an LLM prompt."""

from __future__ import annotations

from collections.abc import Sequence

from korag.types import SearchResult


def citation(result: SearchResult) -> str:
    meta = result.metadata
    parts = [str(meta.get("source", "?"))]
    if meta.get("page_number") is not None:
        parts.append(f"p. {meta['page_number']}")
    if meta.get("section"):
        parts.append(str(meta["section"]))
    return ", ".join(parts)


def format_context(results: Sequence[SearchResult]) -> str:
    """``[1] 규정.pdf, p. 3, 제2장\\n<text>`` blocks separated by blank lines; cite them as [n]."""
    return "\n\n".join(f"[{n}] {citation(r)}\n{r.text.strip()}" for n, r in enumerate(results, start=1))
