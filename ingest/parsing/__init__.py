"""Parse a document's bytes into blocks. One entry point: :func:`parse_document`."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from pathlib import PurePath

import markdown

from ingest.parsing import offline_nlp, script_rules
from ingest.parsing.blocks import Block, Refusal
from ingest.parsing.from_unstructured import blocks_from_elements
from ingest.parsing.ocr import IMAGE_SUFFIXES, OcrOptions, OcrReader, image_blocks
from ingest.parsing.sniff import check_content
from ingest.parsing.text_cleaning import clean_text
from ingest.parsing.text_decoding import decode
from korag.errors import DocumentError, EmptyDocumentError, UnsupportedFormatError

log = logging.getLogger("korag.parsing")
_OBJECT_REPR = re.compile(r":?\s*<[\w.]+ object at 0x[0-9a-f]+>")
# unstructured's partitioners detect the language of every document (langdetect) for a metadata
# field korag never reads; on a short Korean document that was the largest parsing cost.
NO_LANGUAGE_DETECTION = [""]

__all__ = ["Block", "OcrOptions", "SUPPORTED_SUFFIXES", "parse_document", "warm_up"]


def _pdf(data: bytes, reader: OcrReader) -> list[Block]:
    from ingest.parsing.pdf import pdf_blocks  # lazy: on its format's first document

    return pdf_blocks(data, reader)


def _docx(data: bytes) -> list[Block]:
    from unstructured.partition.docx import partition_docx  # lazy: on its format's first document

    return blocks_from_elements(partition_docx(file=io.BytesIO(data), infer_table_structure=True, languages=NO_LANGUAGE_DETECTION))


def _pptx(data: bytes) -> list[Block]:
    from unstructured.partition.pptx import partition_pptx  # lazy: on its format's first document

    return blocks_from_elements(partition_pptx(file=io.BytesIO(data), infer_table_structure=True, languages=NO_LANGUAGE_DETECTION))


def _xlsx(data: bytes) -> list[Block]:
    from unstructured.partition.xlsx import partition_xlsx  # lazy: on its format's first document

    return blocks_from_elements(partition_xlsx(file=io.BytesIO(data), infer_table_structure=True, languages=NO_LANGUAGE_DETECTION))


def _html(text: str) -> list[Block]:
    from ingest.parsing.html_input import partition_html_fully  # lazy: on its format's first document

    return blocks_from_elements(partition_html_fully(text))


def _markdown(text: str) -> list[Block]:
    """Markdown becomes HTML as in unstructured's ``partition_md``, then takes the HTML path, so
    deep nesting (a list 300 levels deep) is read in full or refused, never cut."""
    from unstructured.partition import md  # lazy: on its format's first document

    from ingest.parsing.html_input import partition_html_fully  # lazy: on its format's first document

    extensions = getattr(md, "_DEFAULT_MARKDOWN_EXTENSIONS", ["tables"])
    return blocks_from_elements(partition_html_fully(markdown.markdown(text, extensions=extensions)))


def _plain_text(text: str) -> list[Block]:
    from ingest.parsing.plain_text import partition_plain_text  # lazy: on its format's first document

    return blocks_from_elements(partition_plain_text(text))


def _hwp(data: bytes) -> list[Block]:
    from ingest.parsing.hwp import partition_hwp  # lazy: on its format's first document

    return partition_hwp(data)


def _hwpx(data: bytes) -> list[Block]:
    from ingest.parsing.hwp import partition_hwpx  # lazy: on its format's first document

    return partition_hwpx(data)


def _clean(block: Block) -> Block | None:
    """NFC, no private-use glyphs or broken surrogates; None when nothing is left."""
    if block.kind == "table":
        rows = tuple(row for row in (clean_text(r) for r in block.rows) if row.strip(" |"))
        return replace(block, rows=rows, text="\n".join(rows)) if rows else None
    text = clean_text(block.text)
    return replace(block, text=text) if text else None


_OCR_PARSERS: dict[str, Callable[[bytes, OcrReader], list[Block]]] = {  # these may OCR pages
    ".pdf": _pdf,
    **{suffix: image_blocks for suffix in IMAGE_SUFFIXES},
}
_PARSERS: dict[str, Callable[[bytes], list[Block]]] = {
    ".docx": _docx,
    ".pptx": _pptx,
    ".xlsx": _xlsx,
    ".hwp": _hwp,
    ".hwpx": _hwpx,
}
_TEXT_PARSERS: dict[str, Callable[[str], list[Block]]] = {  # these get the decoded text
    ".html": _html,
    ".htm": _html,
    ".md": _markdown,
    ".markdown": _markdown,
    ".txt": _plain_text,
    ".text": _plain_text,
}

SUPPORTED_SUFFIXES = frozenset(_OCR_PARSERS) | frozenset(_PARSERS) | frozenset(_TEXT_PARSERS)


@cache
def warm_up() -> None:
    """Load the parsers' lazy parts (imports, unstructured's spaCy model) once in this process,
    so forked parser children inherit them instead of loading them for every document."""
    offline_nlp.ensure_spacy_model()
    script_rules.install()
    import unstructured.partition.docx  # noqa: F401  # lazy: loaded here on purpose, before the fork
    import unstructured.partition.html  # noqa: F401  # lazy: loaded here on purpose, before the fork
    import unstructured.partition.md  # noqa: F401  # lazy: loaded here on purpose, before the fork
    import unstructured.partition.pptx  # noqa: F401  # lazy: loaded here on purpose, before the fork
    import unstructured.partition.text  # noqa: F401  # lazy: loaded here on purpose, before the fork
    import unstructured.partition.xlsx  # noqa: F401  # lazy: loaded here on purpose, before the fork
    from unstructured.nlp.tokenize import _get_nlp  # lazy: loaded here on purpose, before the fork

    import ingest.parsing.hwp  # noqa: F401  # lazy: loaded here on purpose, before the fork
    import ingest.parsing.pdf  # noqa: F401  # lazy: loaded here on purpose, before the fork

    _get_nlp()
    parse_document("준비. Warm-up sentence for the classifier.".encode(), "warm-up.txt")


def _decoded(data: bytes, source: str) -> str:
    decoded = decode(data)
    if decoded.replaced:
        log.warning("%s: %d undecodable byte(s) replaced with U+FFFD (%s; the first at byte offset %d)",
                    source, decoded.replaced, decoded.encoding, decoded.first_bad)
    return decoded.text


def _parse(data: bytes, suffix: str, source: str, ocr: OcrOptions) -> list[Block]:
    if suffix in _TEXT_PARSERS:
        return _TEXT_PARSERS[suffix](_decoded(data, source))
    if suffix in _OCR_PARSERS:
        return _OCR_PARSERS[suffix](data, OcrReader(ocr, source))
    return _PARSERS[suffix](data)


def parse_document(data: bytes, filename: str, source: str | None = None, ocr: OcrOptions | None = None) -> list[Block]:
    """Blocks of one document. ``filename`` picks the format; ``source`` names it in errors;
    ``ocr``: how scanned PDF pages and images are read (default: :class:`OcrOptions`).

    Raises :class:`DocumentError` (with the source and the reason) for anything that cannot
    become text; never returns an empty list.
    """
    source = source if source is not None else filename
    suffix = PurePath(filename).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise UnsupportedFormatError(source, f"unsupported file type {suffix or '(none)'!r}; korag reads {supported}")
    if not data:
        raise EmptyDocumentError(source, "empty file")
    offline_nlp.ensure_spacy_model()
    script_rules.install()  # Korean paragraphs are classified without spaCy
    try:
        check_content(data, suffix)
        raw = _parse(data, suffix, source, ocr if ocr is not None else OcrOptions())
        blocks = [cleaned for block in raw if (cleaned := _clean(block)) is not None]
    except DocumentError:
        raise
    except Refusal as exc:
        raise DocumentError(source, str(exc)) from None
    except Exception as exc:  # parsers raise anything from KeyError to zipfile.BadZipFile
        detail = _OBJECT_REPR.sub("", f"{type(exc).__name__}: {exc}").rstrip(": ")
        raise DocumentError(source, f"cannot parse as {suffix[1:].upper()}: {detail}") from exc
    if not blocks:
        raise EmptyDocumentError(source, "no extractable text")
    return blocks
