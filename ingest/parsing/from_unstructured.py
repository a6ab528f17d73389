"""Turn unstructured's elements into korag blocks: titles with depth, text, list items, tables by row."""

from __future__ import annotations

from collections.abc import Iterable

from lxml import html as lxml_html
from unstructured.documents.elements import Element

from ingest.parsing.blocks import Block
from ingest.parsing.korean_headings import heading_depth

_SKIPPED = {"PageBreak", "PageNumber", "Image", "Formula"}
_TITLES = {"Title"}
_LISTS = {"ListItem"}


def table_rows_from_html(table_html: str) -> tuple[str, ...]:
    """Rows of an HTML table, cells joined by `` | ``; empty rows dropped."""
    root = lxml_html.fragment_fromstring(table_html, create_parent="div")
    rows = []
    for tr in root.iter("tr"):
        cells = [" ".join(cell.text_content().split()) for cell in tr if cell.tag in ("td", "th")]
        if any(cells):
            rows.append(" | ".join(cells))
    return tuple(rows)


def blocks_from_elements(elements: Iterable[Element]) -> list[Block]:
    blocks: list[Block] = []
    for element in elements:
        category = element.category
        text = (element.text or "").strip()
        if category in _SKIPPED or not text:
            continue
        page = element.metadata.page_number
        if category == "Table":
            table_html = element.metadata.text_as_html
            rows = table_rows_from_html(table_html) if table_html else ()
            if not rows:
                rows = tuple(line.strip() for line in text.splitlines() if line.strip())
            blocks.append(Block("table", "\n".join(rows), page, rows=rows))
        elif category in _TITLES:
            depth = element.metadata.category_depth
            blocks.append(Block("title", text, page, depth=depth if depth is not None else 0))
        elif category in _LISTS:
            blocks.append(Block("list", text, page))
        else:
            depth = heading_depth(text)  # 제1장, □, 1. … that unstructured's English rules miss
            blocks.append(Block("title", text, page, depth=depth) if depth is not None else Block("text", text, page))
    return blocks
