"""Format retrieved chunks as numbered, cited context for an LLM prompt."""

from __future__ import annotations

from collections.abc import Sequence

from korag.rules import printable
from korag.types import SearchResult


def citation(result: SearchResult) -> str:
    """``규정.pdf, p. 3, 제2장``; unprintable characters of a file name or section are escaped."""
    meta = result.metadata
    parts = [printable(meta.get("source", "?"))]
    if meta.get("page_number") is not None:
        parts.append(f"p. {printable(meta['page_number'])}")
    if meta.get("section"):
        parts.append(printable(meta["section"]))
    return ", ".join(parts)


def format_context(results: Sequence[SearchResult]) -> str:
    """``[1] 규정.pdf, p. 3, 제2장\\n<text>`` blocks separated by blank lines; cite them as [n]."""
    return "\n\n".join(f"[{n}] {citation(r)}\n{r.text.strip()}" for n, r in enumerate(results, start=1))
