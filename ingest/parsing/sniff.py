"""Cheap checks before any parser runs: does the content match its extension, and is an
archive safe to open? Office files and HWPX are zip archives; their declared sizes and
compression ratios are checked before anything is inflated, and their XML parts may not
declare a DTD or entities (billion laughs)."""

from __future__ import annotations

import io
import zipfile

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
}
_ZIP_FORMATS = {".docx", ".pptx", ".xlsx", ".hwpx"}
_TEXT_FORMATS = {".txt", ".text", ".md", ".markdown", ".html", ".htm"}

MAX_ENTRIES = 10_000
MAX_TOTAL_UNCOMPRESSED = 512 * 1024 * 1024
MAX_RATIO = 200.0
_XML_HEAD = 4096


def _what(data: bytes) -> str | None:
    head = data[:32]
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
                        head = member.read(_XML_HEAD).lower()
                except (zipfile.BadZipFile, EOFError, OSError, RuntimeError) as exc:  # zlib errors surface as these
                    raise Refusal(f"damaged or truncated {label} file ({info.filename}: {exc})") from None
                except Exception as exc:
                    raise Refusal(f"damaged or truncated {label} file ({info.filename}: {type(exc).__name__})") from None
                if b"<!doctype" in head or b"<!entity" in head:
                    raise Refusal(f"refused as unsafe: {info.filename} declares a DTD or entities (XML entity expansion)")
