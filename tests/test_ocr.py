"""Korean OCR of scanned PDFs and images (issue 21), with the real Tesseract (apt: tesseract-ocr,
tesseract-ocr-kor) on pages rendered here with a Korean font (apt: fonts-nanum); nothing
copyrighted is shipped. Skipped where either is missing, failed under CI (.ci/run installs them)."""

from __future__ import annotations

import difflib
import io
import json
import logging
import os
import re

import pytest

from bench import documents as docs
from ingest.parsing import OcrOptions, parse_document
from ingest.parsing.ocr import image_frames, layout, read_image, unavailable
from korag.errors import DocumentError
from tests.test_cli_hardening import json_lines, local_env, run

pytestmark = pytest.mark.slow  # every test here runs Tesseract processes


def _need(missing: str | None) -> None:
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{missing}; .ci/run must install it")
    pytest.skip(missing)


@pytest.fixture(scope="module")
def font() -> str:
    _need(unavailable("kor+eng"))
    found = docs.korean_font()
    _need(None if found is not None else "no Korean font (apt-get install fonts-nanum)")
    return found


@pytest.fixture(scope="module")
def pages(font):
    return [docs.render_page(lines, font) for lines in docs.SCANNED_PAGES]


def accuracy(expected: list[str], read: str) -> float:
    return difflib.SequenceMatcher(None, re.sub(r"\s", "", "".join(expected)), re.sub(r"\s", "", read)).ratio()


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_scanned_pdf_is_indexed_with_ocr_metadata_and_found_by_search(tmp_path, monkeypatch, capsys, pages):
    monkeypatch.chdir(tmp_path)
    docs.make_scanned_pdf(tmp_path / "스캔.pdf", pages)
    env = local_env(tmp_path)
    code, out, err = run(monkeypatch, capsys, ["ingest", "스캔.pdf", "--json"], **env)
    assert code == 0, err
    (line,) = json_lines(out)
    assert line["status"] == "indexed" and line["chunks"] >= 1, line

    code, out, _ = run(monkeypatch, capsys, ["chunks", "--doc-id", line["doc_id"], "--json"], **env)
    chunks = json_lines(out)
    assert chunks and all(c["metadata"]["ocr"] is True and 50 < c["metadata"]["ocr_confidence"] <= 100 for c in chunks)
    assert {c["metadata"]["page_number"] for c in chunks} == {1, 2}

    code, out, _ = run(monkeypatch, capsys, ["search", "지체상금", "--mode", "sparse", "--json", "-k", "1"], **env)
    (hit,) = json.loads(out)["results"]
    assert "지체상금" in hit["text"] and hit["metadata"]["page_number"] == 2


def test_mixed_pdf_keeps_its_text_layer_and_reads_the_scanned_page(tmp_path, pages):
    path = docs.make_mixed_pdf(tmp_path / "mixed.pdf", ["텍스트 층이 있는 첫 쪽입니다.", "두 번째 줄의 내용입니다."], pages[0])
    blocks = parse_document(path.read_bytes(), "mixed.pdf")
    first = [b for b in blocks if b.page_number == 1]
    second = [b for b in blocks if b.page_number == 2]
    assert [b.text for b in first] == ["텍스트 층이 있는 첫 쪽입니다.", "두 번째 줄의 내용입니다."]
    assert all(b.ocr_confidence is None for b in first)
    assert second and all(b.ocr_confidence is not None for b in second)
    assert accuracy(docs.SCANNED_PAGES[0], " ".join(b.text for b in second)) >= 0.95
    # paragraphs, not one blob per page; headings by the Korean heading rules
    assert len(second) >= 4
    assert [b.kind for b in second if b.text.replace(" ", "") in ("제1장총칙", "제2장이용")] == ["title", "title"]


def test_png_and_a_turned_phone_like_jpeg_are_read(pages):
    blocks = parse_document(_png(pages[1]), "계약서.png")
    assert {b.page_number for b in blocks} == {1} and all(b.ocr_confidence > 50 for b in blocks)
    assert accuracy(docs.SCANNED_PAGES[1], " ".join(b.text for b in blocks)) >= 0.95

    photo = io.BytesIO()
    docs.phone_like(pages[0]).rotate(90, expand=True).save(photo, "JPEG", quality=70)  # page lying on its side
    blocks = parse_document(photo.getvalue(), "사진.jpg")
    assert accuracy(docs.SCANNED_PAGES[0], " ".join(b.text for b in blocks)) >= 0.90


def test_two_columns_are_read_one_after_the_other_under_their_title(font):
    """A title across the page over two columns whose lines sit at the same heights: read as one
    block (``--psm 6``), the columns interleave line by line (accuracy 0.58 measured); read by
    :func:`layout`'s parts, the title comes first, then the whole left column, then the right
    one, on a clean scan and on a phone photo of it."""
    page = docs.render_two_columns(font)
    expected = [docs.TWO_COLUMN_PAGE["title"], *docs.TWO_COLUMN_PAGE["left"], *docs.TWO_COLUMN_PAGE["right"]]
    for image, least in ((page, 0.95), (docs.phone_like(page).convert("L"), 0.90)):
        text = " ".join(b.text for b in parse_document(_png(image), "두단.png"))
        assert accuracy(expected, text) >= least, text
        squeezed = re.sub(r"\s", "", text)
        assert squeezed.index("여비규정") < squeezed.index("제1조") < squeezed.index("3일전까지") < squeezed.index("제3조")
    single = docs.render_page(docs.SCANNED_PAGES[0], font)
    assert layout(single) == [(0, 0, single.width, single.height)]  # one column: the page read whole, as before


def test_a_ruled_table_is_read_row_by_row(font):
    """A table ruled around every cell: Tesseract read it as "Ea" with its lines; without them
    (:func:`without_rules`) every row comes out in order, cells left to right, and the page is not
    cut into columns (its vertical lines cross the gaps between cells)."""
    table = docs.render_ruled_table(font)
    assert layout(table) == [(0, 0, table.width, table.height)]
    text = " ".join(b.text for b in parse_document(_png(table), "표.png"))
    rows = [" ".join(cells) for cells in docs.RULED_TABLE]
    assert accuracy(rows, text) >= 0.95, text
    squeezed = re.sub(r"\s", "", text)
    assert [squeezed.index(re.sub(r"\s", "", row)[:4]) for row in rows] == sorted(
        squeezed.index(re.sub(r"\s", "", row)[:4]) for row in rows)


def test_tesseract_runs_under_the_parsers_memory_allowance(pages):
    """Tesseract gets KORAG_PARSE_MEMORY_MB as its own address-space cap (``prlimit --as``) instead
    of the parser worker's, which counts all the worker maps: a page read within 2 GiB is not read
    within 16 MiB, where Tesseract cannot even load its Korean model."""
    page = pages[1].convert("L")
    assert accuracy(docs.SCANNED_PAGES[1], " ".join(read_image(page, OcrOptions(), 300).paragraphs)) >= 0.95
    with pytest.raises(OSError, match="tesseract failed"):
        read_image(page, OcrOptions(memory_mb=16), 300)


def test_bench_ingest_reports_the_ocr_time_of_added_scans(tmp_path, monkeypatch, capsys, pages):
    """`korag bench ingest --add` takes scanned files beside the corpus and reports their OCR
    pages and seconds per page (issue 21: "korag bench ingest reports OCR time")."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "corpus.jsonl").write_text(json.dumps({"_id": "p0", "title": "안내", "text": "숙박비는 실비로 정산한다."},
                                                    ensure_ascii=False) + "\n", encoding="utf-8")
    scan = tmp_path / "scan.png"
    scan.write_bytes(_png(pages[1]))
    code, out, err = run(monkeypatch, capsys, ["bench", "ingest", str(corpus), "--add", str(scan), "--json"],
                         **local_env(tmp_path))
    assert code == 0, err[-2000:]
    report = json.loads(out)
    assert report["documents"] == 2 and report["failed"] == 0
    assert report["ocr"]["documents"] == 1 and report["ocr"]["pages"] == 1
    assert report["ocr"]["s_per_page"] > 0 and report["ocr"]["tesseract_cpu_s_per_page"] > 0


def test_exif_orientation_is_applied():
    from PIL import Image

    image = Image.new("L", (200, 100), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    (frame,) = list(image_frames(buffer.getvalue()))
    assert frame.size == (100, 200)


def test_changed_ocr_settings_read_scanned_documents_again_and_leave_text_documents(tmp_path, monkeypatch, capsys,
                                                                                    pages):
    """The OCR options are part of a scanned document's settings key: ingesting the same scan
    again is `unchanged`, but after KORAG_OCR_LANGUAGES changes it is read again; a text document is
    `unchanged` either way (its key leaves the OCR options out)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scan.png").write_bytes(_png(pages[0]))
    (tmp_path / "note.md").write_text("# 안내\n\n숙박비는 영수증을 첨부하여 청구한다.\n", encoding="utf-8")
    env = local_env(tmp_path)

    def statuses(**extra: str) -> dict[str, str]:
        code, out, err = run(monkeypatch, capsys, ["ingest", "scan.png", "note.md", "--json"], **env, **extra)
        assert code == 0, err
        return {line["source"]: line["status"] for line in json_lines(out)}

    assert statuses() == {"scan.png": "indexed", "note.md": "indexed"}
    assert statuses() == {"scan.png": "unchanged", "note.md": "unchanged"}
    assert statuses(KORAG_OCR_LANGUAGES="kor") == {"scan.png": "indexed", "note.md": "unchanged"}


def test_ocr_off_keeps_the_no_text_failure_and_refuses_images(tmp_path, monkeypatch, capsys, pages):
    monkeypatch.chdir(tmp_path)
    docs.make_scanned_pdf(tmp_path / "scan.pdf", pages[:1])
    (tmp_path / "scan.png").write_bytes(_png(pages[0]))
    code, out, _ = run(monkeypatch, capsys, ["ingest", "scan.pdf", "scan.png", "--json"], KORAG_OCR="off",
                       **local_env(tmp_path))
    by_source = {line["source"]: line for line in json_lines(out)}
    assert code == 1
    assert by_source["scan.pdf"]["status"] == "failed" and by_source["scan.pdf"]["error"] == "no extractable text"
    assert by_source["scan.png"]["status"] == "failed" and "KORAG_OCR=off" in by_source["scan.png"]["error"]


def test_an_image_without_text_fails_and_the_page_cap_is_noted(tmp_path, pages, caplog):
    from PIL import Image

    with pytest.raises(DocumentError, match="no text found by OCR"):
        parse_document(_png(Image.new("L", (1200, 1600), 255)), "blank.png")
    scanned = docs.make_scanned_pdf(tmp_path / "scan.pdf", pages).read_bytes()
    with caplog.at_level(logging.WARNING, logger="korag.parsing"):
        blocks = parse_document(scanned, "scan.pdf", ocr=OcrOptions(max_pages=1))
    assert {b.page_number for b in blocks} == {1}
    assert "OCR stopped at page 2: KORAG_OCR_MAX_PAGES=1" in caplog.text


def test_image_extensions_are_checked_by_content(tmp_path):
    with pytest.raises(DocumentError, match="not an image"):
        parse_document("그림이 아닙니다".encode(), "fake.png")
    # "BM" starts a BMP file, and text too: a text file that starts with it is still text
    assert parse_document("BMW 차량 안내문입니다.".encode(), "bmw.txt")[0].text.startswith("BMW")


def test_status_says_whether_ocr_can_run(tmp_path, monkeypatch, capsys):
    """`korag status` (text and JSON) says whether scanned pages can be read here, and why not:
    off by setting, or a Tesseract model that is not installed (named with its package)."""
    env = local_env(tmp_path)
    code, out, _ = run(monkeypatch, capsys, ["status", "--json"], KORAG_OCR="off", **env)
    assert code == 0 and json.loads(out)["ocr"] == "off (KORAG_OCR=off)"
    code, out, _ = run(monkeypatch, capsys, ["status"], KORAG_OCR_LANGUAGES="kor+nosuchlang", **env)
    line = next(line for line in out.splitlines() if line.startswith("OCR: "))
    assert code == 0 and "unavailable" in line and "tesseract-ocr-nosuchlang" in line
    if unavailable("kor+eng") is None:
        code, out, _ = run(monkeypatch, capsys, ["status", "--json"], **env)
        assert json.loads(out)["ocr"] == "ready (auto, kor+eng, 300 dpi)"
