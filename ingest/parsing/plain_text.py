"""Plain text into unstructured's elements, without the document-level work Korean text does not need.

:func:`partition_plain_text` returns the elements ``unstructured.partition.text.partition_text``
returns — the same paragraphs (unstructured's own paragraph grouper and splitter) classified by
the same ``element_from_text`` (Title, NarrativeText, ListItem, …; korag's script-aware rules for
non-Latin paragraphs and for every paragraph of a mostly Korean text, unstructured's English
rules for the rest) — but skips what
``partition_text``'s decorators add around them and korag never reads: language detection over
the whole text (langdetect, the largest cost on a short Korean document), a deep copy of the
metadata per element, hashed element ids, the parent hierarchy and telemetry. Used for ``.txt``
files and for each page of a PDF's text layer.
"""

from __future__ import annotations

from unstructured.cleaners.core import auto_paragraph_grouper
from unstructured.documents.elements import Element, ElementMetadata
from unstructured.partition import text as unstructured_text

from ingest.parsing import script_rules


def partition_plain_text(text: str, group_paragraphs: bool = True, page_number: int | None = None) -> list[Element]:
    """Elements of ``text``, one per paragraph. ``group_paragraphs``: join lines broken for
    layout as ``partition_text`` does by default (its ``paragraph_grouper=False`` otherwise)."""
    if not text.strip():
        return []
    if group_paragraphs:
        text = auto_paragraph_grouper(text)
    elements: list[Element] = []
    with script_rules.korean_document(text):  # a Korean text's Latin lines need no English tagger either
        for paragraph in unstructured_text._split_by_paragraph(text):
            paragraph = paragraph.strip()
            if paragraph and not unstructured_text._is_empty_bullet(paragraph):
                element = unstructured_text.element_from_text(paragraph)  # looks up the patched classifiers
                element.metadata = ElementMetadata(page_number=page_number)
                element.metadata.detection_origin = "text"
                elements.append(element)
    return elements
