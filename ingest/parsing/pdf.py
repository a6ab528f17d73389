"""PDF text layer, read with pypdfium2 (PDFium) and classified into unstructured elements page by page.

unstructured's own ``partition_pdf`` imports ``unstructured_inference`` (and with it timm,
torchvision and a matching torch) even for the text-only "fast" strategy. korag reads the text
layer itself and lets unstructured's text classifier (:mod:`ingest.parsing.plain_text`) classify each page's paragraphs (titles,
list items, narrative text).

Two readers give the same thing, a list of paragraphs per page: :func:`pdfium_pages` (the one
korag uses: PDFium's text in content order, lines grouped into paragraphs by their vertical
spacing) and :func:`pdfminer_pages` (pdfminer.six's layout analysis, korag's reader until it was
measured against PDFium: docs/parsing.md and ``bench/parse_bench.py``).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from unstructured.documents.elements import Element

from ingest.parsing.blocks import Block, Refusal
from ingest.parsing.from_unstructured import blocks_from_elements
from ingest.parsing.ocr import OcrReader
from ingest.parsing.plain_text import partition_plain_text

log = logging.getLogger("korag.parsing")

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # PDFium marks soft hyphens with \x02
LINE_GAP = 0.5  # a vertical gap above this share of the line height starts a paragraph (pdfminer's line_margin)


class _Line(NamedTuple):
    text: str
    left: float
    bottom: float
    right: float
    top: float


def _lines(textpage) -> list[_Line]:
    """The page's text lines in content order, each with its box (PDF units, y grows upwards)."""
    text = textpage.get_text_range()
    lines = []
    start = 0
    for raw in text.split("\n"):
        end = start + len(raw)
        line_start, start = start, end + 1  # past the "\n"
        content = " ".join(_CONTROL.sub("", raw).split())
        if not content:
            continue
        # the box runs from the first to the last character the page draws, spaces included (an
        # indented list item starts at its leading space, as in pdfminer); PDFium's own
        # line-break characters have no width
        chars = [i for i in range(line_start, end) if text[i] not in "\r\n"]
        first = _drawn_box(textpage, chars)
        last = _drawn_box(textpage, reversed(chars))
        if first is None or last is None:
            continue
        lines.append(_Line(content, min(first[0], last[0]), min(first[1], last[1]),
                           max(first[2], last[2]), max(first[3], last[3])))
    return lines


def _drawn_box(textpage, indices: Iterable[int]) -> tuple[float, float, float, float] | None:
    for index in indices:
        box = textpage.get_charbox(index, loose=True)
        if box[2] > box[0]:
            return box
    return None


def _continues(previous: _Line, line: _Line) -> bool:
    """``line`` goes on ``previous``'s paragraph: pdfminer's rule for grouping lines into a text
    box — the same height, just below it, and aligned with it on the left, the right or the centre."""
    height = max(previous.top - previous.bottom, 1.0)
    slack = LINE_GAP * height
    if abs((line.top - line.bottom) - height) > slack / 2:
        return False
    if line.top > previous.top or previous.bottom - line.top > slack:
        return False
    # alignment within one line height: PDFium's boxes are tighter than pdfminer's, and a
    # hanging indent ("1. …" then its continuation) is about half a character
    centre = abs((line.left + line.right) - (previous.left + previous.right)) / 2
    return min(abs(line.left - previous.left), abs(line.right - previous.right), centre) <= height


def _paragraphs(lines: list[_Line]) -> list[str]:
    paragraphs: list[list[str]] = []
    previous = None
    for line in lines:
        if previous is not None and _continues(previous, line):
            paragraphs[-1].append(line.text)
        else:
            paragraphs.append([line.text])
        previous = line
    # Korean wraps mid-phrase (and mid-word), so lines join with spaces, as with pdfminer.
    return [" ".join(p) for p in paragraphs]


def pdfium_pages(data: bytes) -> Iterator[list[str]]:
    """Paragraphs of each page, in page order, read by PDFium."""
    for paragraphs, _ in pdfium_page_views(data):
        yield paragraphs


def pdfium_page_views(data: bytes) -> Iterator[tuple[list[str], object]]:
    """Each page's paragraphs and the open PDFium page (to render it; valid until the next page)."""
    import pypdfium2  # lazy: on the first PDF

    pdf = pypdfium2.PdfDocument(data)
    try:
        for index in range(len(pdf)):
            page = pdf[index]
            textpage = page.get_textpage()
            try:
                yield _paragraphs(_lines(textpage)), page
            finally:
                textpage.close()
                page.close()
    finally:
        pdf.close()


def render(page, dpi: int):
    """The page as a greyscale image at ``dpi``, or less where that would pass Pillow's pixel
    limit (a page the size of a wall is not a decompression bomb of its own making)."""
    from PIL import Image  # lazy: only scanned pages are rendered

    width, height = page.get_size()  # PDF points, 1/72 inch
    scale = dpi / 72
    limit = (Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS is not None else 89_478_485) // 2
    if width * height * scale * scale > limit:
        scale = (limit / max(width * height, 1.0)) ** 0.5
    return page.render(scale=scale, grayscale=True).to_pil(), round(scale * 72)


def pdf_blocks(data: bytes, reader: OcrReader) -> list[Block]:
    """Blocks of a PDF: each page's text layer, or its OCR where ``reader`` wants it (a page
    without usable text under KORAG_OCR=auto, every page under force)."""
    pages: list[Callable[[], list[Block]]] = []  # each page's blocks, in order, once read
    with reader:
        for page_number, (paragraphs, page) in enumerate(pdfium_page_views(data), start=1):
            if reader.wants(paragraphs) and reader.available():
                if reader.room(page_number):  # a page past the OCR page cap is not rendered
                    image, dpi = render(page, reader.options.dpi)
                    pages.append(reader.page(image, page_number, dpi))
            elif paragraphs:
                elements = partition_plain_text("\n\n".join(paragraphs), group_paragraphs=False,
                                                page_number=page_number)
                pages.append(lambda read=blocks_from_elements(elements): read)
        blocks = [block for page in pages for block in page()]
    if not blocks and reader.wanted:
        raise Refusal(f"no text layer, and {reader.nothing_read()}")
    if blocks and reader.missing is not None:
        log.warning("%s: pages without a text layer were not read: %s", reader.source, reader.missing)
    return blocks


def pdfminer_pages(data: bytes) -> Iterator[list[str]]:
    """Paragraphs (pdfminer's text boxes) of each page, in page order, read by pdfminer.six."""
    from pdfminer.high_level import extract_pages  # lazy: on the first PDF
    from pdfminer.layout import LAParams, LTTextContainer  # lazy: on the first PDF

    for page in extract_pages(io.BytesIO(data), laparams=LAParams()):
        paragraphs = []
        for item in page:
            if isinstance(item, LTTextContainer):
                text = " ".join(item.get_text().split())
                if text:
                    paragraphs.append(text)
        yield paragraphs


def partition_pdf_text(data: bytes, pages: Callable[[bytes], Iterator[list[str]]] = pdfium_pages) -> list[Element]:
    elements: list[Element] = []
    for page_number, paragraphs in enumerate(pages(data), start=1):
        if not paragraphs:
            continue
        elements.extend(partition_plain_text("\n\n".join(paragraphs), group_paragraphs=False, page_number=page_number))
    return elements
