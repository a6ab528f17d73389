"""Cheap checks before any parser runs: does the content match its extension, and is an
archive safe to open? Office files and HWPX are zip archives; their declared sizes and
compression ratios are checked before anything is inflated, and their XML parts may not
declare a DTD or entities (billion laughs).

The guarantee for every ``.xml`` and ``.rels`` member: its whole prolog, everything before the
root element's start tag, however long, is read (streamed, in the encoding its byte-order mark
or first bytes say, UTF-16 included), and it holds nothing but whitespace, the XML declaration
and other processing instructions, and comments. Any other ``<!`` markup there (``<!DOCTYPE``,
``<!ENTITY``, ``<!ELEMENT``, ...) refuses the file. A DTD, and with it any entity declaration,
can only appear in the prolog, so no parser of an accepted member meets one.
"""

from __future__ import annotations

import codecs
import io
import zipfile
from typing import IO

from ingest.parsing.blocks import Refusal

ZIP = b"PK\x03\x04"
OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_SIGNATURES = {  # a few common formats, to name what a mislabelled file really is
    b"%PDF-": "PDF",
    ZIP: "zip archive (DOCX/PPTX/XLSX/HWPX)",
    OLE: "OLE compound file (HWP 5.0, legacy DOC/XLS/PPT)",
    b"\x89PNG": "PNG image",
    b"\xff\xd8\xff": "JPEG image",
    b"GIF8": "GIF image",
    b"\x1f\x8b": "gzip archive",
    b"HWP Document File": "HWP 3.0",
    b"II*\x00": "TIFF image",
    b"MM\x00*": "TIFF image",
}
_IMAGES = {"PNG image", "JPEG image", "TIFF image", "BMP image", "WebP image"}
_ZIP_FORMATS = {".docx", ".pptx", ".xlsx", ".hwpx"}
_TEXT_FORMATS = {".txt", ".text", ".md", ".markdown", ".html", ".htm"}
_IMAGE_FORMATS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}

MAX_ENTRIES = 10_000
MAX_TOTAL_UNCOMPRESSED = 512 * 1024 * 1024
MAX_RATIO = 200.0
_READ = 64 * 1024  # bytes of a member inflated at a time while its prolog is scanned


def _what(data: bytes) -> str | None:
    head = data[:32]
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP image"
    if head.startswith(b"BM") and head[6:10] == b"\x00\x00\x00\x00":  # reserved fields: "BM" alone starts text too
        return "BMP image"
    return next((name for sig, name in _SIGNATURES.items() if head.startswith(sig)), None)


def check_content(data: bytes, suffix: str) -> None:
    """Raise :class:`Refusal` when the bytes are not what the extension says."""
    actual = _what(data)
    if suffix == ".pdf":
        if b"%PDF-" not in data[:1024]:
            raise Refusal(f"not a PDF: the extension says .pdf but the content is {actual or 'something else'}")
    elif suffix in _ZIP_FORMATS:
        if not data.startswith(ZIP):
            raise Refusal(f"not a {suffix[1:].upper()} file: it must be a zip archive, the content is {actual or 'something else'}")
        check_zip(data, suffix[1:].upper())
    elif suffix == ".hwp":
        if actual not in (_SIGNATURES[OLE], "HWP 3.0"):
            raise Refusal(f"not an HWP file: the content is {actual or 'something else'}")
    elif suffix in _IMAGE_FORMATS:
        # any of the images korag reads, whatever its extension says (a PNG saved as .jpg is common):
        # Pillow reads it by its content
        if actual not in _IMAGES:
            raise Refusal(f"not an image: the extension says {suffix} but the content is {actual or 'something else'}")
    elif suffix in _TEXT_FORMATS:
        if actual is not None:
            raise Refusal(f"not a text file: the extension says {suffix} but the content is {actual}")
        if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise Refusal(f"not a text file: binary content under a {suffix} extension")


def check_zip(data: bytes, label: str = "zip") -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise Refusal(f"damaged or truncated {label} file (zip archive: {exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            raise Refusal(f"refused as unsafe: {len(infos)} zip entries (limit {MAX_ENTRIES})")
        total = sum(i.file_size for i in infos)
        if total > MAX_TOTAL_UNCOMPRESSED:
            raise Refusal(f"refused as unsafe: declares {total} bytes uncompressed (limit {MAX_TOTAL_UNCOMPRESSED}); a zip bomb?")
        for info in infos:
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 1024 * 1024:
                raise Refusal(
                    f"refused as unsafe: {info.filename} compresses {info.file_size / info.compress_size:.0f}:1 "
                    f"(limit {MAX_RATIO:.0f}:1); a zip bomb?"
                )
        for info in infos:
            if info.filename.lower().endswith((".xml", ".rels")):
                try:
                    with archive.open(info) as member:
                        declaration = prolog_declaration(member)
                except (zipfile.BadZipFile, EOFError, OSError, RuntimeError) as exc:  # zlib errors surface as these
                    raise Refusal(f"damaged or truncated {label} file ({info.filename}: {exc})") from None
                except Exception as exc:
                    raise Refusal(f"damaged or truncated {label} file ({info.filename}: {type(exc).__name__})") from None
                if declaration is not None:
                    raise Refusal(
                        f"refused as unsafe: {info.filename} declares a DTD or entities ({declaration!r} before "
                        "its root element; XML entity expansion)"
                    )


def _xml_encoding(head: bytes) -> str:
    """The encoding to scan markup in: from the byte-order mark or the first bytes, else Latin-1
    (every byte is one character, and ``<``, ``!``, ``?``, ``-`` are ASCII in every
    ASCII-compatible encoding, UTF-8 included)."""
    for prefix, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (b"<\0\0\0", "utf-32-le"),
        (b"\0\0\0<", "utf-32-be"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
        (b"<\0", "utf-16-le"), (b"\0<", "utf-16-be"),
    ):
        if head.startswith(prefix):
            return encoding
    return "latin-1"


def prolog_declaration(stream: IO[bytes]) -> str | None:
    """The first markup in the XML prolog read from ``stream`` that is not a processing
    instruction or a comment (``<!DOCTYPE``, ``<!ENTITY`` ...), or None when the root element
    (or the end) comes first. Streams: memory stays bounded however long the prolog is."""
    head = stream.read(4)
    decoder = codecs.getincrementaldecoder(_xml_encoding(head))(errors="replace")
    text = decoder.decode(head)

    def more() -> bool:
        nonlocal text
        data = stream.read(_READ)
        text += decoder.decode(data, final=not data)
        return bool(data)

    while True:
        start = text.find("<")
        if start < 0:
            text = ""
            if not more():
                return None
            continue
        text = text[start:]
        while len(text) < 10 and more():
            pass
        if text.startswith("<!--"):
            end_mark, skip = "-->", 4
        elif text.startswith("<?"):
            end_mark, skip = "?>", 2
        elif text.startswith("<!"):
            return text[:10]
        else:
            return None  # the root element's start tag (or stray text): the prolog is over
        end = text.find(end_mark, skip)
        while end < 0:
            text = text[-(len(end_mark) - 1):]  # a mark may straddle two reads
            skip = 0
            if not more():
                return None
            end = text.find(end_mark)
        text = text[end + len(end_mark):]
