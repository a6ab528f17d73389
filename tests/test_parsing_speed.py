"""No wasted parsing work: Korean text never goes through spaCy, PDFs are read by PDFium.

Behaviour, not timings: spaCy's work is counted at unstructured's one entry point into it
(``unstructured.nlp.tokenize._run_pipeline``) with its caches emptied, and the blocks are
compared with what unstructured's English rules give (korag before) or pdfminer.six reads.
Figures are in docs/parsing.md (``bench/parse_bench.py``).
"""

from __future__ import annotations

import os

import pytest

from bench import documents as docs
from ingest.parsing import parse_document, script_rules
from ingest.parsing.guard import run_guarded
from ingest.parsing.pdf import partition_pdf_text, pdfium_pages, pdfminer_pages
from korag.errors import DocumentError
from tests.conftest import SHARED


@pytest.fixture
def spacy_calls(monkeypatch) -> list[str]:
    """Every text unstructured hands to spaCy during the test."""
    from unstructured.nlp import tokenize

    parse_document(b"warm", "warm-up.txt")  # loads the parsers (and patches) before counting
    for cached in (tokenize._process_cached, tokenize.word_tokenize, tokenize.pos_tag, tokenize._tokenize_for_cache):
        cached.cache_clear()
    seen: list[str] = []
    original = tokenize._run_pipeline
    monkeypatch.setattr(tokenize, "_run_pipeline", lambda text: (seen.append(text), original(text))[1])
    return seen


def _parse(path):
    return parse_document(path.read_bytes(), path.name, str(path))


def _before(path):
    """The blocks with unstructured's English rules for every paragraph, as korag parsed before."""
    with script_rules.english_rules_everywhere():
        return _parse(path)


def _titles(blocks):
    return [(b.text, b.depth) for b in blocks if b.kind == "title"]


def test_korean_plain_text_never_reaches_spacy(tmp_path, spacy_calls):
    notice = _parse(docs.make_text(tmp_path / "공지.txt"))
    long = _parse(docs.make_text(tmp_path / "long.txt", text=docs.long_korean_text()))
    marked = _parse(docs.make_text(tmp_path / "규정.txt", text=(
        "운영 규정\n\n제1장 총칙\n\n제1절 목적\n\n이 규정은 도서관 운영에 필요한 사항을 정한다.\n\n"
        "□ 이용 시간\n\n평일 오전 9시부터 오후 6시까지 운영합니다.")))
    assert spacy_calls == []
    assert _titles(notice) == [("공지사항", 0)]
    assert [b.kind for b in long] == ["text"] * 40  # 40 paragraphs of sentences, no titles
    assert _titles(marked) == [("운영 규정", 0), ("제1장 총칙", 0), ("제1절 목적", 1), ("□ 이용 시간", 1)]
    assert [b.text for b in marked if b.kind == "text"] == [
        "이 규정은 도서관 운영에 필요한 사항을 정한다.", "평일 오전 9시부터 오후 6시까지 운영합니다."]


def test_latin_lines_of_a_korean_text_skip_spacy_too(tmp_path, spacy_calls):
    """A brand name, a citation or an English phrase inside a Korean document is classified by
    korag's rules like the Korean lines around it: no English tagger for a Korean document."""
    blocks = _parse(docs.make_text(tmp_path / "사례.txt", text=(
        "고객 포털 성공 사례\n\nAdobe Commerce\n\n이 회사는 고객 포털을 도입한 뒤 매출이 늘었습니다.\n\n"
        "(McKinsey & Company).\n\nSource: https://example.com/report?id=2020\n\n"
        "고객은 온라인 구매를 선호합니다. 응답자의 70%가 그렇다고 답했습니다.")))
    assert spacy_calls == []
    assert _titles(blocks) == [("고객 포털 성공 사례", 0), ("Adobe Commerce", 0)]
    texts = [b.text for b in blocks if b.kind == "text"]
    assert "(McKinsey & Company)." in texts and "Source: https://example.com/report?id=2020" in texts


def _markdown_and_html(tmp_path):
    files = [docs.make_markdown(tmp_path / "설치.md"), docs.make_html(tmp_path / "안내.html")]
    samples = SHARED / "samples"
    return files + (sorted(samples.glob("*.md")) if samples.is_dir() else [])


def test_markdown_and_html_keep_their_sections_and_spacy_sees_only_latin_text(tmp_path, spacy_calls):
    """Same blocks as before (titles from # and <h1>…<h6>, depths, text) on the fixtures and the
    shared Markdown samples; spaCy only ever gets paragraphs written mostly in Latin letters."""
    for path in _markdown_and_html(tmp_path):
        spacy_calls.clear()
        now = _parse(path)
        assert all(script_rules.needs_english_nlp(text) for text in spacy_calls), path.name
        if path.parent == tmp_path:  # korag's own Korean fixtures: not one call
            assert spacy_calls == [], path.name
        assert now == _before(path), path.name
        assert _titles(now), path.name


def test_korean_pdf_pages_without_spacy(tmp_path, spacy_calls):
    path = docs.make_pdf(tmp_path / "규정.pdf", [["제1장 총칙", "이 규정은 시험용입니다."], [], [docs.SECRET_SENTENCE]])
    blocks = _parse(path)
    assert spacy_calls == []
    assert [(b.kind, b.text, b.page_number) for b in blocks] == [
        ("title", "제1장 총칙", 1),
        ("text", "이 규정은 시험용입니다.", 1),  # a title by the English rules' chance reading (no "verb" found)
        ("text", docs.SECRET_SENTENCE, 3),
    ]


def test_english_text_keeps_unstructured_rules(tmp_path, spacy_calls):
    path = docs.make_text(tmp_path / "risk.txt", text=(
        "RISK FACTORS\n\nThe company faces many risks that could hurt its business and its results.\n\n"
        "Competition is intense and we may lose market share."))
    now = _parse(path)
    assert spacy_calls, "English paragraphs still go through unstructured's English rules"
    assert now == _before(path)
    assert _titles(now) == [("RISK FACTORS", 0)]


def test_pdfium_reads_what_pdfminer_reads_on_a_multi_page_korean_pdf(tmp_path):
    """Same pages, same paragraphs in the same order, same Korean text, character for character."""
    pages = [[f"제{p + 1}장 시험", *docs.long_korean_text(2).replace("\n\n", " ").split(". ")[:8]] for p in range(12)]
    pages[5] = []  # a page without text keeps its place
    data = docs.make_pdf(tmp_path / "long.pdf", pages).read_bytes()
    assert list(pdfium_pages(data)) == list(pdfminer_pages(data))
    numbers = {e.metadata.page_number for e in partition_pdf_text(data)}
    assert numbers == set(range(1, 13)) - {6}


def test_parse_document_reads_pdfs_with_pdfium_not_pdfminer(tmp_path, monkeypatch):
    import pdfminer.high_level

    def refuse(*args, **kwargs):
        raise AssertionError("pdfminer.six was used")

    monkeypatch.setattr(pdfminer.high_level, "extract_pages", refuse)
    path = docs.make_pdf(tmp_path / "a.pdf", [["제1장 총칙", docs.SECRET_SENTENCE]])
    assert [b.text for b in _parse(path)] == ["제1장 총칙", docs.SECRET_SENTENCE]


def test_table_rows_stay_together():
    """PDFium reads a table row by row: a rule's name and its description land in one block
    (pdfminer.six read the table column by column, every name first, then every description)."""
    path = SHARED / "samples" / "kbo_only_table.pdf"
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared folder beside the checkout)")
    texts = [b.text for b in _parse(path)]
    assert any("KBO 피치클락 규정" in t and "카운트다운 타이머" in t for t in texts), texts
    assert any(t.startswith("구분 변경 전 변경 후") for t in texts), texts


@pytest.mark.parametrize("name, make", [
    ("corrupt.pdf", lambda good: b"%PDF-1.7\n" + os.urandom(2000)),
    ("truncated.pdf", lambda good: good[: len(good) // 2]),
    ("header-only.pdf", lambda good: b"%PDF-1.4\n"),
])
def test_damaged_pdf_is_a_clear_error_in_the_guarded_child(tmp_path, name, make):
    good = docs.make_pdf(tmp_path / "good.pdf", [["제1장 총칙", docs.SECRET_SENTENCE]] * 3).read_bytes()
    data = make(good)
    with pytest.raises(DocumentError, match=rf"^docs/{name}: cannot parse as PDF: .*PDFium"):
        run_guarded(lambda: parse_document(data, name, f"docs/{name}"), f"docs/{name}", timeout_s=60, memory_bytes=2 << 30)


def test_a_scanned_pdf_with_nothing_to_read_says_it_has_no_text_layer(tmp_path):
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(tmp_path / "scan.pdf"))
    c.rect(100, 100, 300, 300, fill=1)
    c.showPage()
    c.save()
    with pytest.raises(DocumentError, match=r"scan\.pdf: no text layer"):
        _parse(tmp_path / "scan.pdf")


def test_plain_text_elements_are_unstructureds_without_language_detection(tmp_path, monkeypatch):
    """.txt files (and PDF pages) get exactly the elements unstructured's ``partition_text``
    gives — same paragraphs, same classes, same text — without its per-document language
    detection (langdetect), which korag never reads."""
    from unstructured.partition.common import lang
    from unstructured.partition.text import partition_text

    from ingest.parsing.plain_text import partition_plain_text

    parse_document(b"warm", "warm-up.txt")  # korag's offline spaCy model and script-aware rules, as in use
    texts = [docs.make_text(tmp_path / "공지.txt").read_text(encoding="utf-8"), docs.long_korean_text(3),
             "RISK FACTORS\n\nThe company faces many risks.\n\n• 첫째 항목\n• 둘째 항목\n\n1. 번호 항목\n\nkorag@example.com",
             "줄이 끊긴\n문단입니다.\n레이아웃 때문에\n끊겼습니다."]
    expected = [[(type(e), e.text) for e in partition_text(text=t)] for t in texts]

    def refuse(*args, **kwargs):
        raise AssertionError("language detection ran")

    monkeypatch.setattr(lang, "detect_languages", refuse)
    got = [[(type(e), e.text) for e in partition_plain_text(t)] for t in texts]
    assert got == expected
    assert {cls.__name__ for part in got for cls, _ in part} >= {"Title", "NarrativeText", "ListItem"}
    _parse(docs.make_text(tmp_path / "again.txt"))  # the whole .txt path too
