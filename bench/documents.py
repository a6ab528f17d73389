"""Documents the tests and benchmarks build themselves, in every supported format, with Korean content
(a benchmark never imports tests, so they live here)."""

from __future__ import annotations

from pathlib import Path

SECRET_SENTENCE = "마지막 조항에 따르면 금고의 비밀번호는 ZEBRA-QUARTZ-7781 입니다."

TABLE = [["이름", "국어", "영어", "수학"], ["김철수", "90", "85", "77"], ["이영희", "88", "92", "95"]]


def long_korean_text(paragraphs: int = 40) -> str:
    """Many distinct sentences, so a test can check each one landed in some chunk."""
    out = []
    for p in range(paragraphs):
        sentences = [
            f"제{p + 1}절의 {s + 1}번째 문장은 법원조직법 제{p * 7 + s}조에 관한 설명입니다."
            for s in range(6)
        ]
        out.append(" ".join(sentences))
    return "\n\n".join(out)


def make_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A text-layer PDF with Korean text (Adobe's Korean CID font, no font file needed)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("HYSMyeongJo-Medium"))
    c = canvas.Canvas(str(path))
    for lines in pages:
        _text_page(c, lines)
    c.save()
    return path


def _text_page(c, lines: list[str]) -> None:
    """One page of Korean text lines in Adobe's Korean CID font (registered by the caller)."""
    c.setFont("HYSMyeongJo-Medium", 11)
    y = 780
    for line in lines:
        c.drawString(50, y, line)
        y -= 18
    c.showPage()


def make_docx(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.add_heading("제1장 총칙", level=1)
    d.add_paragraph("이 규정은 korag의 문서 처리 시험을 위하여 작성되었습니다.")
    d.add_heading("제2장 성적", level=1)
    table = d.add_table(rows=len(TABLE), cols=len(TABLE[0]))
    for r, row in enumerate(TABLE):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    d.add_paragraph(SECRET_SENTENCE)
    d.save(str(path))
    return path


def make_pptx(path: Path) -> Path:
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[1])
    slide.shapes.title.text = "분기 실적 보고"
    slide.placeholders[1].text = "매출은 전년 대비 12% 증가했습니다."
    slide = prs.slides.add_slide(prs.slide_layouts[5])
    slide.shapes.title.text = "성적표"
    shape = slide.shapes.add_table(len(TABLE), len(TABLE[0]), Inches(1), Inches(2), Inches(6), Inches(2))
    for r, row in enumerate(TABLE):
        for c, value in enumerate(row):
            shape.table.cell(r, c).text = value
    prs.save(str(path))
    return path


def make_xlsx(path: Path) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "성적"
    for row in TABLE:
        ws.append(row)
    wb.save(str(path))
    return path


def make_html(path: Path) -> Path:
    rows = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in TABLE)
    path.write_text(
        "<html><head><meta charset='utf-8'><title>안내</title></head><body>"
        "<h1>도서관 이용 안내</h1><p>도서관은 평일 오전 9시부터 오후 6시까지 운영합니다.</p>"
        f"<h2>성적</h2><table>{rows}</table></body></html>",
        encoding="utf-8",
    )
    return path


def make_markdown(path: Path) -> Path:
    path.write_text(
        "# 설치 안내\n\n파이썬 3.11 이상이 필요합니다.\n\n## 실행\n\n`korag ingest` 명령으로 문서를 넣습니다.\n",
        encoding="utf-8",
    )
    return path


def make_text(path: Path, encoding: str = "utf-8", text: str | None = None) -> Path:
    body = text if text is not None else "공지사항\n\n내일은 정기 점검으로 서비스가 중단됩니다. 불편을 드려 죄송합니다."
    path.write_bytes(body.encode(encoding))
    return path


def all_formats(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "pdf": make_pdf(folder / "규정.pdf", [["제1장 총칙", "이 규정은 시험용입니다."], [SECRET_SENTENCE]]),
        "docx": make_docx(folder / "문서.docx"),
        "pptx": make_pptx(folder / "발표.pptx"),
        "xlsx": make_xlsx(folder / "성적.xlsx"),
        "html": make_html(folder / "안내.html"),
        "md": make_markdown(folder / "설치.md"),
        "txt": make_text(folder / "공지.txt"),
        "euc-kr": make_text(folder / "공지-euckr.txt", "euc-kr"),
    }




def make_hwp_document(path: Path) -> Path:
    """HWPX or HWP 5.0 (by suffix), written by python-hwpx: a heading, paragraphs, a table,
    a Hancom private-use bullet and decomposed (NFD) Hangul to be cleaned."""
    import unicodedata

    from hwpx import HwpxDocument

    doc = HwpxDocument.new()
    doc.add_heading("제1장 총칙", level=1)
    doc.add_paragraph("이 규정은 한글 문서 처리를 시험하기 위한 것입니다.")
    doc.add_paragraph("\uf0a7 " + unicodedata.normalize("NFD", "분해된 한글 글자입니다."))
    table = doc.add_table(len(TABLE), len(TABLE[0]))
    for r, row in enumerate(TABLE):
        for c, value in enumerate(row):
            table.set_cell_text(r, c, value)
    doc.add_paragraph(SECRET_SENTENCE)
    doc.save_to_path(str(path))
    return path


# -- scanned pages (OCR, issue 21): rendered at run time with a Korean font found on the system ----
SCANNED_PAGES = [
    ["제1장 총칙",
     "이 규정은 서울특별시 도서관 운영에 관한 사항을 정한다.",
     "도서관은 매주 월요일과 법정 공휴일에 휴관한다.",
     "제2장 이용",
     "회원증을 분실한 경우 즉시 신고하여야 하며 재발급",
     "수수료는 삼천 원으로 한다.",
     "대출 기간은 십사 일이며 한 번 연장할 수 있다."],
    ["□ 계약의 목적",
     "갑은 을에게 물품 공급을 의뢰하고 을은 이를 성실히 이행한다.",
     "계약 금액은 일금 오백만 원이며 부가가치세를 포함한다.",
     "□ 납품 기한",
     "을은 계약일로부터 삼십 일 이내에 물품을 납품하여야 한다.",
     "기한을 넘기면 하루마다 계약 금액의 천분의 일을 지체상금으로 낸다."],
]


def korean_font() -> str | None:
    """A font file with Hangul (``fc-list :lang=ko``; Debian: fonts-nanum), or None."""
    import shutil
    import subprocess

    if shutil.which("fc-list") is None:
        return None
    listed = subprocess.run(["fc-list", ":lang=ko", "file"], capture_output=True, text=True).stdout
    files = sorted(line.split(":")[0].strip() for line in listed.splitlines() if line.strip())
    regular = [f for f in files if f.endswith((".ttf", ".otf")) and "Bold" not in f and "Coding" not in f]
    return (regular or files or [None])[0]


def render_page(lines: list[str], font_path: str, dpi: int = 300, size_pt: float = 11.0):
    """A white A4 page (PIL image, greyscale) with ``lines`` printed at ``size_pt`` points, a blank
    line before each heading (a line that starts with 제, □ or a digit)."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = round(8.27 * dpi), round(11.69 * dpi)
    font = ImageFont.truetype(font_path, round(size_pt * dpi / 72))
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    step = round(size_pt * dpi / 72 * 1.8)
    y = round(dpi * 0.8)
    for index, line in enumerate(lines):
        if index and line[:1] in "제□0123456789":
            y += step
        draw.text((round(dpi * 0.8), y), line, font=font, fill=0)
        y += step
    page.info["dpi"] = (dpi, dpi)
    return page


TWO_COLUMN_PAGE = {
    "title": "출장 여비 규정 (2026년 개정판, 인사팀 제정 및 시행 안내)",
    "left": ["제1조(목적) 이 규정은 직원의", "출장 여비 지급 기준을 정한다.", "숙박비는 1박당 7만원 한도에서",
             "실비로 정산한다.", "식비는 하루 2만5천원을 정액으로", "지급한다.", "제2조(신청) 출장자는 출발",
             "3일 전까지 신청서를 낸다."],
    "right": ["제3조(정산) 출장자는 복귀 후", "14일 이내에 영수증을 첨부해", "정산서를 제출한다.",
              "교통비는 실제 운임을 지급하되", "항공기는 일반석으로 한다.", "제4조(예외) 부득이한 사유가",
              "있으면 대표이사의 승인으로", "한도를 넘을 수 있다."],
}


def render_two_columns(font_path: str, dpi: int = 300, size_pt: float = 11.0):
    """A white A4 page (greyscale) with :data:`TWO_COLUMN_PAGE`: a title across the page, then two
    columns of text whose lines sit at the same heights (read across, they interleave)."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = round(8.27 * dpi), round(11.69 * dpi)
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    draw.text((round(dpi * 0.8), round(dpi * 0.6)), TWO_COLUMN_PAGE["title"], fill=0,
              font=ImageFont.truetype(font_path, round(14 * dpi / 72)))
    font = ImageFont.truetype(font_path, round(size_pt * dpi / 72))
    step, top = round(size_pt * dpi / 72 * 1.8), round(dpi * 1.8)
    for index, (left, right) in enumerate(zip(TWO_COLUMN_PAGE["left"], TWO_COLUMN_PAGE["right"])):
        draw.text((round(dpi * 0.8), top + index * step), left, font=font, fill=0)
        draw.text((round(width / 2 + dpi * 0.2), top + index * step), right, font=font, fill=0)
    page.info["dpi"] = (dpi, dpi)
    return page


RULED_TABLE = [("항목", "금액", "비고"), ("숙박비", "70,000원", "1박 기준"), ("식비", "25,000원", "정액"),
               ("교통비", "실비", "영수증 첨부"), ("기타", "없음", "-")]


def render_ruled_table(font_path: str, dpi: int = 300, size_pt: float = 11.0):
    """A white A4 page (greyscale) with :data:`RULED_TABLE` drawn as a table ruled on every side
    of every cell, as Korean forms and public notices print them."""
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("L", (round(8.27 * dpi), round(11.69 * dpi)), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(font_path, round(size_pt * dpi / 72))
    edges = [round(dpi * x) for x in (0.8, 3.0, 5.0, 7.47)]
    top, row = dpi, round(dpi * 0.37)
    for index, cells in enumerate(RULED_TABLE):
        for left, cell in zip(edges, cells):
            draw.text((left + dpi // 10, top + index * row + dpi // 12), cell, font=font, fill=0)
    bottom = top + len(RULED_TABLE) * row
    for y in range(top, bottom + 1, row):
        draw.line((edges[0], y, edges[-1], y), fill=0, width=max(1, dpi // 75))
    for x in edges:
        draw.line((x, top, x, bottom), fill=0, width=max(1, dpi // 75))
    page.info["dpi"] = (dpi, dpi)
    return page


def phone_like(page, angle: float = 1.5, seed: int = 7):
    """A page as a phone photo of it: turned slightly, grey noise, lower contrast (save as JPEG 70)."""
    import numpy as np
    from PIL import Image

    turned = page.rotate(angle, expand=True, fillcolor=235, resample=Image.BICUBIC)
    pixels = np.asarray(turned, dtype=np.float64) * 0.8 + 30
    pixels += np.random.default_rng(seed).normal(0, 12, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "L")


def make_scanned_pdf(path: Path, images: list) -> Path:
    """An image-only PDF: one page per image, no text layer (as a scanner writes it)."""
    images[0].save(path, "PDF", resolution=300, save_all=True, append_images=images[1:])
    return path


def make_mixed_pdf(path: Path, text_lines: list[str], image) -> Path:
    """Page 1 with a text layer, page 2 a scanned image only."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("HYSMyeongJo-Medium"))
    c = canvas.Canvas(str(path), pagesize=A4)
    _text_page(c, text_lines)
    c.drawImage(ImageReader(image), 0, 0, width=A4[0], height=A4[1])
    c.showPage()
    c.save()
    return path
