"""PDF text layer with pdfminer.six, classified into unstructured elements page by page.

unstructured's own ``partition_pdf`` imports ``unstructured_inference`` (and with it timm,
torchvision and a matching torch) even for the text-only "fast" strategy. korag reads the text
layer itself, which is what "fast" does, and lets unstructured's text partitioner classify each
page's paragraphs (titles, list items, narrative text). See the README for the measured trade-off.
"""

from __future__ import annotations

import io

from pdfminer.high_level import extract_pages
from pdfminer.layout import LAParams, LTTextContainer
from unstructured.documents.elements import Element
from unstructured.partition.text import partition_text


def _page_paragraphs(page) -> list[str]:
    paragraphs = []
    for item in page:
        if isinstance(item, LTTextContainer):
            # pdfminer breaks lines inside a text box; Korean wraps mid-phrase, so join with spaces.
            text = " ".join(item.get_text().split())
            if text:
                paragraphs.append(text)
    return paragraphs


def partition_pdf_text(data: bytes) -> list[Element]:
    elements: list[Element] = []
    for page_number, page in enumerate(extract_pages(io.BytesIO(data), laparams=LAParams()), start=1):
        paragraphs = _page_paragraphs(page)
        if not paragraphs:
            continue
        page_elements = partition_text(text="\n\n".join(paragraphs), paragraph_grouper=False)
        for element in page_elements:
            element.metadata.page_number = page_number
        elements.extend(page_elements)
    return elements
