"""Hancom Hangul documents: HWPX (zip + OWPML XML) and HWP 5.0 (OLE compound file).

python-hwpx 6.9.0 (Apache-2.0, pure Python) does the risky parts with limits: it guards zip
archives (entry count, member and total sizes, compression ratio), parses XML with DTDs and
entities refused and a depth limit, inflates HWP 5.0 streams with a size bound, and converts
HWP 5.0 into the same OWPML parts HWPX carries. korag walks those parts into blocks:
paragraphs, tables row by row, text in text boxes, headers, footers and notes, and headings
from outline styles (개요 1…) or the usual Korean heading markers.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from xml.etree.ElementTree import Element

from ingest.parsing.blocks import Block, Refusal
from ingest.parsing.korean_headings import heading_depth, reads_as_sentence

HWP3_SIGNATURE = b"HWP Document File V3"
OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_SECTION = re.compile(r"^Contents/section(\d+)\.xml$", re.IGNORECASE)
_OUTLINE_STYLE = re.compile(r"^Outline\s+(\d+)$", re.IGNORECASE)

_REFUSALS = {
    "hwp5-distribution": "배포용 (distribution) document: its body is encrypted and korag does not decrypt it; "
    "ask the author for the original, or save it in Hancom Office as a normal document",
    "hwp5-password": "password-protected HWP document",
    "hwp5-drm": "DRM-protected HWP document",
}


class HwpRefusal(Refusal):
    """A Hancom file korag will not read, with the reason for the person who sent it."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


# -- entry points -----------------------------------------------------------------------------
def partition_hwpx(data: bytes) -> list[Block]:
    from hwpx.opc.security import HwpxSecurityError  # lazy: on its format's first document

    try:
        return _partition_hwpx(data)
    except HwpxSecurityError as exc:
        raise HwpRefusal(f"refused as unsafe: {exc}") from None


def _partition_hwpx(data: bytes) -> list[Block]:
    from hwpx.opc.security import guard_zip_file, parse_xml_stdlib, read_member  # lazy: on its format's first document

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise HwpRefusal(f"not an HWPX file (not a zip archive: {exc})") from None
    with archive:
        guard_zip_file(archive)
        names = sorted((n for n in archive.namelist() if _SECTION.match(n)), key=lambda n: int(_SECTION.match(n).group(1)))
        if not names:
            raise HwpRefusal("not an HWPX file (no Contents/section*.xml)")
        header = None
        if "Contents/header.xml" in archive.namelist():
            header = parse_xml_stdlib(read_member(archive, "Contents/header.xml"), part_name="Contents/header.xml")
        sections = [parse_xml_stdlib(read_member(archive, n), part_name=n) for n in names]
    return _blocks(header, sections)


def partition_hwp(data: bytes) -> list[Block]:
    if data.startswith(HWP3_SIGNATURE):
        raise HwpRefusal("HWP 3.0 document: korag reads HWP 5.0 and HWPX; save it in a newer Hancom Office")
    if not data.startswith(OLE_SIGNATURE):
        raise HwpRefusal("not an HWP 5.0 file (no OLE compound-file signature)")
    from hwpx.hwp5.errors import Hwp5Error  # lazy: on its format's first document
    from hwpx.hwp5.package import convert  # lazy: on its format's first document
    from hwpx.opc.security import parse_xml_stdlib  # lazy: on its format's first document

    try:
        converted = convert(data)
    except Hwp5Error as exc:
        raise HwpRefusal(_REFUSALS.get(exc.code, f"cannot read HWP 5.0 document: {exc}")) from None
    files = converted.files
    names = sorted((n for n in files if _SECTION.match(n)), key=lambda n: int(_SECTION.match(n).group(1)))
    header = parse_xml_stdlib(files["Contents/header.xml"], part_name="Contents/header.xml")
    sections = [parse_xml_stdlib(files[n], part_name=n) for n in names]
    return _blocks(header, sections)


# -- OWPML walking ------------------------------------------------------------------------------
def _outline_levels(header: Element | None) -> tuple[dict[str, int], dict[str, int]]:
    """Outline heading depth by paraPr id and by style id (개요 1 = Outline 1 → depth 0)."""
    by_para: dict[str, int] = {}
    by_style: dict[str, int] = {}
    if header is None:
        return by_para, by_style
    for element in header.iter():
        name = _local(element.tag)
        if name == "paraPr":
            for child in element.iter():
                if _local(child.tag) == "heading" and child.get("type") == "OUTLINE":
                    by_para[element.get("id", "")] = int(child.get("level", "0"))
                    break
        elif name == "style":
            match = _OUTLINE_STYLE.match(element.get("engName") or "")
            if match:
                by_style[element.get("id", "")] = int(match.group(1)) - 1
    return by_para, by_style


def _blocks(header: Element | None, sections: Iterable[Element]) -> list[Block]:
    walker = _Walker(*_outline_levels(header))
    for section in sections:
        walker.paragraphs(section)
    return walker.blocks


def _t_text(t: Element) -> str:
    parts = [t.text or ""]
    for child in t:
        name = _local(child.tag)
        parts.append("\t" if name == "tab" else "\n" if name == "lineBreak" else "")
        parts.append(child.tail or "")
    return "".join(parts)


def _all_text(element: Element) -> str:
    """Every text run under ``element`` (nested tables and boxes included), paragraphs by newline."""
    lines = []
    for p in element.iter():
        if _local(p.tag) == "p":
            line = "".join(_t_text(t) for run in p if _local(run.tag) == "run" for t in run if _local(t.tag) == "t")
            if line.strip():
                lines.append(line.strip())
    return " ".join(lines)


def _sublists(element: Element) -> Iterator[Element]:
    """The outermost subList elements under ``element`` (text boxes, headers, notes, cells)."""
    for child in element:
        if _local(child.tag) == "subList":
            yield child
        else:
            yield from _sublists(child)


class _Walker:
    def __init__(self, outline_by_para: dict[str, int], outline_by_style: dict[str, int]) -> None:
        self.outline_by_para = outline_by_para
        self.outline_by_style = outline_by_style
        self.blocks: list[Block] = []

    def paragraphs(self, container: Element) -> None:
        for child in container:
            if _local(child.tag) == "p":
                self.paragraph(child)

    def paragraph(self, p: Element) -> None:
        buffer: list[str] = []
        for run in p:
            if _local(run.tag) != "run":
                continue
            for item in run:
                name = _local(item.tag)
                if name == "t":
                    buffer.append(_t_text(item))
                elif name == "tbl":
                    self._flush(p, buffer)
                    self.table(item)
                else:  # text boxes, headers/footers, foot/endnotes, fields: their own paragraphs
                    for sub in _sublists(item):
                        self._flush(p, buffer)
                        self.paragraphs(sub)
        self._flush(p, buffer)

    def _flush(self, p: Element, buffer: list[str]) -> None:
        text = "".join(buffer).strip()
        buffer.clear()
        if not text:
            return
        depth = self.outline_by_para.get(p.get("paraPrIDRef", ""))
        if depth is None:
            depth = self.outline_by_style.get(p.get("styleIDRef", ""))
        if depth is not None and reads_as_sentence(text):
            depth = None  # an outline style on body text: authors misuse 개요 styles
        elif depth is None:
            depth = heading_depth(text)
        self.blocks.append(Block("title", text, depth=depth) if depth is not None else Block("text", text))

    def table(self, tbl: Element) -> None:
        rows = []
        for tr in tbl:
            if _local(tr.tag) != "tr":
                continue
            cells = [" ".join(_all_text(tc).split()) for tc in tr if _local(tc.tag) == "tc"]
            if any(cells):
                rows.append(" | ".join(cells))
        if rows:
            self.blocks.append(Block("table", "\n".join(rows), rows=tuple(rows)))
