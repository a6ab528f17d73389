"""HWP 5.0 and HWPX: generated documents, the shared real-world samples, and hostile files."""

from __future__ import annotations

import io
import os
import unicodedata
import zipfile

import pytest

from bench import documents as docs
from ingest.parsing import parse_document
from korag.errors import DocumentError
from tests.conftest import shared_path


def _parse(path):
    return parse_document(path.read_bytes(), path.name, str(path))


@pytest.mark.parametrize("suffix", [".hwp", ".hwpx"])
def test_generated_document_becomes_the_usual_blocks(tmp_path, suffix):
    blocks = _parse(docs.make_hwp_document(tmp_path / f"규정{suffix}"))
    assert blocks[0].kind == "title" and blocks[0].text == "제1장 총칙"
    (table,) = [b for b in blocks if b.kind == "table"]
    assert table.rows[1] == "김철수 | 90 | 85 | 77"
    texts = [b.text for b in blocks]
    assert "분해된 한글 글자입니다." in texts  # private-use bullet gone, NFD → NFC
    assert all(unicodedata.is_normalized("NFC", t) for t in texts)
    assert texts[-1] == docs.SECRET_SENTENCE


def test_hwp_and_hwpx_twins_agree(tmp_path):
    hwp = _parse(docs.make_hwp_document(tmp_path / "a.hwp"))
    hwpx = _parse(docs.make_hwp_document(tmp_path / "a.hwpx"))
    assert hwp == hwpx


# -- real documents ------------------------------------------------------------------------------
EXPECTED_TEXT = {
    "tika_testHWP-v5b.hwp": "Apache Tika - 컨텐츠 분석 툴킷",
    "tika_testHWP_5.0.hwp": "테스트",
    "hwprs_hello_world.hwp": "Hello World!",
    "hwprs_draw_text.hwp": "글상자1",  # text only inside a text box
    "hwpxlib_HeaderFooter.hwpx": "머리말",  # text only in header/footer
    "hwplib_merging-cell.hwp": "3,4",
    "hwpxlib_Table.hwpx": "이름 | 국어 | 영어 | 수학",
    "ohah_example.hwp": "삼강오륜",
    "ohah_example.hwpx": "삼강오륜",
    "unhwp_two_sections.hwpx": "Section one content",
    "gen_small.hwp": "2026년 운영계획",
    "gen_small.hwpx": "2026년 운영계획",
}
REFUSED = {
    "tika_testHWP-v5-dist.hwp": "배포용",
    "tika_testHWP_3.0.hwp": "HWP 3.0",
}


def _samples():
    folder = shared_path("samples", "hwp")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".hwp", ".hwpx"))


def test_every_shared_sample_is_read_or_clearly_refused():
    for path in _samples():
        if path.name in REFUSED:
            with pytest.raises(DocumentError, match=REFUSED[path.name]) as info:
                _parse(path)
            assert str(info.value).startswith(str(path))
            continue
        blocks = _parse(path)
        text = "\n".join(b.text for b in blocks)
        assert text.strip(), path.name
        assert "배포용 문서" not in text  # never the placeholder some libraries return
        assert not any(0xE000 <= ord(ch) <= 0xF8FF or ord(ch) >= 0xF0000 for ch in text), path.name
        if path.name in EXPECTED_TEXT:
            assert EXPECTED_TEXT[path.name] in text, path.name


def test_distribution_twin_has_the_same_text_as_its_original():
    """The 배포용 copy is refused rather than indexed with different (placeholder) text."""
    original = "\n".join(b.text for b in _parse(shared_path("samples", "hwp", "tika_testHWP-v5b.hwp")))
    assert len(original) > 1000
    with pytest.raises(DocumentError, match="encrypted"):
        _parse(shared_path("samples", "hwp", "tika_testHWP-v5-dist.hwp"))


def test_outline_headings_of_a_hancom_document():
    blocks = _parse(shared_path("samples", "hwp", "pyhwpx_hancom-native-toc-A.hwpx"))
    assert sum(b.kind == "title" for b in blocks) >= 4


# -- hostile input ---------------------------------------------------------------------------------
def _hwpx_with(section_xml: bytes, compress: bool = True) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), b"application/hwp+zip")
        zf.writestr("Contents/section0.xml", section_xml)
    return out.getvalue()


@pytest.mark.parametrize("suffix", [".hwp", ".hwpx"])
def test_malformed_files_fail_with_a_reason(tmp_path, suffix):
    good = docs.make_hwp_document(tmp_path / f"good{suffix}").read_bytes()
    cases = {
        "empty": b"",
        "random": os.urandom(4096),
        "truncated": good[: len(good) // 2],
    }
    for name, data in cases.items():
        with pytest.raises(DocumentError) as info:
            parse_document(data, f"{name}{suffix}")
        message = str(info.value)
        assert message.startswith(f"{name}{suffix}: ") and len(message) > len(name) + 10


def test_zip_bomb_is_refused_before_inflating():
    section = b"<hs:sec xmlns:hs='s'>" + b"0" * (300 * 1024 * 1024) + b"</hs:sec>"
    bomb = _hwpx_with(section)
    assert len(bomb) < 1024 * 1024
    with pytest.raises(DocumentError, match=r"bomb\.hwpx: .*(ratio|limit|large|size)"):
        parse_document(bomb, "bomb.hwpx")


def test_billion_laughs_is_refused():
    lol = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10))
        + b']><hs:sec xmlns:hs="s"><hp:p xmlns:hp="p"><hp:run><hp:t>&lol9;</hp:t></hp:run></hp:p></hs:sec>'
    )
    with pytest.raises(DocumentError, match=r"laughs\.hwpx: .*(DTD|entity)"):
        parse_document(_hwpx_with(lol), "laughs.hwpx")
