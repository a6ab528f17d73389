"""The format-independent element stream every parser produces and the chunker consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BlockKind = Literal["title", "text", "list", "table"]


@dataclass(frozen=True)
class Block:
    kind: BlockKind
    text: str
    page_number: int | None = None
    depth: int = 0  # heading level for titles: 0 is the outermost
    rows: tuple[str, ...] = ()  # a table's rows, cells joined by " | "
    ocr_confidence: float | None = None  # read by OCR: its page's mean word confidence (0-100); None: not OCR'd

    def __post_init__(self) -> None:
        if self.kind == "table" and not self.rows:
            raise ValueError("a table block needs rows")


class Refusal(Exception):
    """A parser's refusal of a document; the message is the reason shown to the user as is."""
