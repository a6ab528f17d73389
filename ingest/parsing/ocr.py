"""Korean OCR of scanned pages and images: Tesseract (``tesseract-ocr``, ``tesseract-ocr-kor``),
fully offline, run as a subprocess per page.

Why the binary and not a binding: the parse runs in a forked, memory-capped parser worker
(:mod:`ingest.parsing.pool`); a subprocess keeps Tesseract's own threads and memory out of that
process, dies with it (``setpriv --pdeathsig``), and needs no Python package (pytesseract is the
same subprocess call behind a wrapper).

Why ``--psm 6`` (one uniform block of text): Tesseract's default page segmentation (``--psm 3``)
reads Korean pages as vertical text and returns garbage; measured in ``bench/ocr_bench.py``
(bench/RESULTS.md, "Korean OCR (issue 21)"). Paragraphs come from Tesseract's TSV output: its
paragraphs, split again at vertical gaps and around Korean heading lines, then classified as
every text page is (:func:`ingest.parsing.plain_text.partition_plain_text`).

Columns: ``--psm 6`` reads a line across the whole page, so two columns of text came out
interleaved line by line (character accuracy 0.58 on a two-column page; ``--psm 3``, ``4`` and
``1`` the same). Before Tesseract, :func:`layout` finds a gutter (a vertical band without ink
between two sides that both carry text) and cuts the page into bands and columns, read in order:
a title or a table row that crosses the gutter stays one full-width band. A table ruled with
vertical lines has ink in its gutters and is read row by row, as one block.

Rotation: a page whose words Tesseract reads with low confidence is checked with its orientation
detector (``--psm 0``, ``osd.traineddata``), turned, and read again; the better reading is kept.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache
from typing import Literal, NamedTuple

import numpy as np

from ingest.parsing.blocks import Block, Refusal
from ingest.parsing.from_unstructured import blocks_from_elements
from ingest.parsing.korean_headings import heading_depth
from ingest.parsing.plain_text import partition_plain_text
from korag.settings import OCR_LANGUAGES

log = logging.getLogger("korag.parsing")

INSTALL_HINT = "apt-get install tesseract-ocr tesseract-ocr-kor"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
PSM = 6  # one uniform block of text: --psm 3 (the default) reads Korean pages as vertical text
SPACE_GAP = 0.25  # two Hangul words closer than this share of the line height are one word
LINE_GAP = 0.5  # a gap above this share of the line height starts a paragraph (as in ingest.parsing.pdf)
USABLE_TEXT_CHARS = 10  # a PDF page whose text layer has fewer letters and digits than this is scanned
GUTTER_SHARE = 0.03  # a gutter is at least this share of the text's width wide (0.2 inch on A4)
GUTTER_LINES = 0.1  # lines allowed across a gutter (titles, a line across both columns): this share
COLUMN_SHARE = 0.2  # each side of a gutter is at least this share of the text's width
COLUMN_LINES = 0.3  # and carries ink in at least this share of the lines that do not cross it
PAD_SHARE = 0.005  # white kept above and below a part's text, as a share of the page height
DOUBTFUL_CONFIDENCE = 60.0  # below this mean word confidence, the page's orientation is checked
OCR_THREADS = min(4, os.cpu_count() or 1)  # a document's pages read at once (one Tesseract process each)
PAGE_TIMEOUT_S = 600  # a backstop per Tesseract call; the parser's own time limit comes first
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_LANGUAGES = re.compile(OCR_LANGUAGES)


@dataclass(frozen=True)
class OcrOptions:
    """KORAG_OCR, KORAG_OCR_LANGUAGES, KORAG_OCR_DPI and KORAG_OCR_MAX_PAGES, as the parsers take them."""

    mode: Literal["auto", "off", "force"] = "auto"  # auto: only pages without usable text
    languages: str = "kor+eng"
    dpi: int = 300  # PDF pages are rendered at this resolution
    max_pages: int = 100  # pages OCR'd per document; the rest are not read (a note says so)
    memory_mb: int = 2048  # KORAG_PARSE_MEMORY_MB: Tesseract's address space, as a parser's allowance

    def __post_init__(self) -> None:
        if not _LANGUAGES.fullmatch(self.languages):
            raise ValueError(f"OCR languages {self.languages!r}: write Tesseract model names joined by +, e.g. kor+eng")


DEFAULT_MEMORY_BYTES = OcrOptions.memory_mb << 20  # Tesseract's address space when no options say


class OcrPage(NamedTuple):
    paragraphs: list[str]
    confidence: float | None  # mean word confidence, 0-100; None when no word was read


class _Word(NamedTuple):
    left: int
    top: int
    right: int
    bottom: int
    text: str


class _Line(NamedTuple):
    paragraph: tuple[int, int]  # Tesseract's (block, paragraph)
    top: int
    bottom: int
    text: str


@cache
def _tesseract() -> str | None:
    return shutil.which("tesseract")


@cache
def _installed_languages() -> frozenset[str]:
    binary = _tesseract()
    if binary is None:
        return frozenset()
    listed = subprocess.run([binary, "--list-langs"], capture_output=True, text=True, timeout=60)
    return frozenset(line.strip() for line in listed.stdout.splitlines()[1:] if line.strip())


def unavailable(languages: str = "kor+eng") -> str | None:
    """Why OCR cannot run here (one line naming what to install), or None when it can."""
    if _tesseract() is None:
        return f"OCR needs Tesseract, which is not installed: {INSTALL_HINT}"
    missing = [lang for lang in languages.split("+") if lang not in _installed_languages()]
    if missing:
        packages = " ".join(f"tesseract-ocr-{lang.lower().replace('_', '-')}" for lang in missing)
        return f"OCR needs Tesseract's {'+'.join(missing)} model(s), which are not installed: apt-get install {packages}"
    return None


def availability(options: OcrOptions) -> str:
    """What ``korag status`` and ``GET /v1/info`` say about OCR: ``off``, ``ready (...)`` with the
    mode, languages and resolution, or why it cannot run (what to install)."""
    if options.mode == "off":
        return "off (KORAG_OCR=off)"
    missing = unavailable(options.languages)
    if missing is not None:
        return f"unavailable: {missing}"
    return f"ready ({options.mode}, {options.languages}, {options.dpi} dpi)"


@cache
def _setpriv() -> list[str]:
    """``setpriv --pdeathsig KILL``: Tesseract dies with the parser worker that started it (a
    worker killed at its time limit leaves no Tesseract behind). Empty where util-linux lacks it."""
    binary = shutil.which("setpriv")
    return [binary, "--pdeathsig", "KILL"] if binary is not None else []


def _prlimit(memory_bytes: int) -> list[str]:
    """``prlimit --as``: Tesseract's own address-space cap, the parser's allowance. Without it, it
    would inherit the parser worker's cap, which counts everything the worker already maps (the
    parent's model and Kiwi: gigabytes), not what one page may cost (a 300-dpi A4 page maps
    ~150 MB). Empty where util-linux lacks it."""
    binary = shutil.which("prlimit")
    return [binary, f"--as={memory_bytes}"] if binary is not None else []


def _run(image, *args: str, memory_bytes: int = DEFAULT_MEMORY_BYTES) -> str:
    """Tesseract's stdout for ``image`` (8-bit greyscale, handed over as PGM on stdin)."""
    buffer = io.BytesIO()
    image.save(buffer, "PPM")
    # one thread per page: pages and documents run in parallel in the parser pool instead
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    done = subprocess.run([*_setpriv(), *_prlimit(memory_bytes), _tesseract(), "stdin", "stdout", *args],
                          input=buffer.getvalue(), capture_output=True, timeout=PAGE_TIMEOUT_S, env=env)
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise OSError(f"tesseract failed: {detail[-1] if detail else f'exit status {done.returncode}'}")
    return done.stdout.decode("utf-8", errors="replace")


def read_once(image, languages: str, dpi: int | None, psm: int = PSM,
              memory_bytes: int = DEFAULT_MEMORY_BYTES) -> OcrPage:
    """One Tesseract reading of a greyscale page, as it lies (``bench/ocr_bench.py`` compares ``psm``)."""
    args = ["-l", languages, "--psm", str(psm)]
    if dpi is not None:
        args += ["--dpi", str(dpi)]
    return page_from_tsv(_run(image, *args, "tsv", memory_bytes=memory_bytes))


def page_from_tsv(tsv: str) -> OcrPage:
    """Paragraphs and mean word confidence from Tesseract's TSV output (level 5 rows are words)."""
    lines: dict[tuple[int, int, int], list[_Word]] = {}
    confidences = []
    for row in tsv.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) < 12 or cells[0] != "5" or not cells[11].strip():
            continue
        left, top, width, height = (int(c) for c in cells[6:10])
        conf = float(cells[10])
        word = _Word(left, top, left + width, top + height, cells[11].strip())
        lines.setdefault((int(cells[2]), int(cells[3]), int(cells[4])), []).append(word)
        if conf >= 0:
            confidences.append(conf)
    ordered = [_Line((b, p), min(w.top for w in words), max(w.bottom for w in words), _line_text(words))
               for (b, p, _), words in lines.items()]
    confidence = round(sum(confidences) / len(confidences), 1) if confidences else None
    return OcrPage(_paragraphs(ordered), confidence)


def _line_text(words: list[_Word]) -> str:
    """A line's words, spaced as printed. Tesseract's Korean "words" are often single syllables
    (its TSV has no spacing flag), so two Hangul words join unless the gap between them is a
    space's width: more than :data:`SPACE_GAP` of the line's median height. Latin words and
    numbers keep their spaces."""
    heights = sorted(w.bottom - w.top for w in words)
    space = SPACE_GAP * heights[len(heights) // 2]
    text = words[0].text
    for before, word in zip(words, words[1:]):
        hangul = _HANGUL.match(before.text[-1]) and _HANGUL.match(word.text[0])
        text += word.text if hangul and word.left - before.right <= space else " " + word.text
    return text


def _paragraphs(lines: list[_Line]) -> list[str]:
    """Lines into paragraphs: a new one at Tesseract's paragraph breaks, at a vertical gap, and
    around a heading line (제1장, □, 가. …), which Tesseract often runs into the text below it."""
    paragraphs: list[list[str]] = []
    previous: _Line | None = None
    for line in lines:
        starts = (previous is None or line.paragraph != previous.paragraph
                  or line.top - previous.bottom > LINE_GAP * max(previous.bottom - previous.top, 1)
                  or heading_depth(line.text) is not None or heading_depth(previous.text) is not None)
        if starts:
            paragraphs.append([line.text])
        else:
            paragraphs[-1].append(line.text)
        previous = line
    return [" ".join(p) for p in paragraphs]


def _rotation(image, memory_bytes: int) -> int:
    """Degrees to turn the page clockwise, by Tesseract's orientation detector; 0 when it cannot tell."""
    try:
        found = re.search(r"Rotate:\s*(\d+)", _run(image, "--psm", "0", memory_bytes=memory_bytes))
    except OSError:  # too few characters to tell
        return 0
    return int(found.group(1)) % 360 if found else 0


def _better(first: OcrPage, second: OcrPage) -> OcrPage:
    return second if (second.confidence or 0.0) > (first.confidence or 0.0) else first


class Box(NamedTuple):
    left: int
    top: int
    right: int
    bottom: int


def layout(image) -> list[Box]:
    """The parts of a greyscale page to read one after the other: the whole page, or, where a
    gutter divides the text into columns, full-width bands (a title, a line across the gutter)
    and, between them, the left column's part before the right one's. Each part keeps a margin
    of white around its text (Tesseract misreads text cut tight)."""
    from PIL import ImageFilter  # lazy: only scanned pages need Pillow

    whole = Box(0, 0, image.width, image.height)
    ink = np.asarray(image.filter(ImageFilter.MaxFilter(3))) < 128  # specks of noise dropped
    lines = [(a, b) for a, b, inked in _runs(ink.any(axis=1)) if inked]
    gutter = _gutter(ink, lines)
    if gutter is None:
        return [whole]
    start, end = gutter
    pad = max(4, round(image.height * PAD_SHARE))
    boxes: list[Box] = []
    for top, bottom in lines:
        band = ink[top:bottom]
        top, bottom = max(0, top - pad), min(image.height, bottom + pad)
        if band[:, start:end].any():  # a line across the gutter: read whole
            boxes.append(Box(0, top, image.width, bottom))
        else:
            middle = (start + end) // 2
            boxes += [Box(0, top, middle, bottom) if band[:, :start].any() else None,
                      Box(middle, top, image.width, bottom) if band[:, end:].any() else None]
    return _in_reading_order([box for box in boxes if box is not None], image.width)


def _gutter(ink, lines: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The widest band of columns between two sides of text that no text line inks, apart from
    lines that run across the whole band (a title); None for a single column."""
    if len(lines) < 2:
        return None
    touched = np.zeros(ink.shape[1], dtype=np.int32)  # per column: the lines with ink there
    for top, bottom in lines:
        touched += ink[top:bottom].any(axis=0)
    inked = np.flatnonzero(touched)
    left, right = int(inked[0]), int(inked[-1]) + 1
    width = right - left
    best: tuple[int, int] | None = None
    for start, end, few in _runs(touched[left:right] <= max(1, GUTTER_LINES * len(lines))):
        start, end = left + start, left + end
        if not few or end - start < GUTTER_SHARE * width:
            continue
        rest = [(a, b) for a, b in lines if not _across(ink[a:b, start:end])]
        clear = np.zeros(end - start, dtype=np.int32)
        for top, bottom in rest:  # what reaches into the band from one side narrows it
            clear += ink[top:bottom, start:end].any(axis=0)
        for first, last, empty in _runs(clear == 0):
            gap = (start + first, start + last)
            if not empty or gap[1] - gap[0] < GUTTER_SHARE * width:
                continue
            if gap[0] - left < COLUMN_SHARE * width or right - gap[1] < COLUMN_SHARE * width:
                continue
            sides = (sum(bool(ink[a:b, :gap[0]].any()) for a, b in rest),
                     sum(bool(ink[a:b, gap[1]:].any()) for a, b in rest))
            if min(sides) >= COLUMN_LINES * len(rest) and (best is None or gap[1] - gap[0] > best[1] - best[0]):
                best = gap
    return best


def _across(band) -> bool:
    """Does a line's ink in a band of columns run across it (a title), not only into it from one side?"""
    columns = np.flatnonzero(band.any(axis=0))
    return columns.size > 0 and columns[0] <= 0.25 * band.shape[1] and columns[-1] >= 0.75 * band.shape[1]


def _in_reading_order(boxes: list[Box], width: int) -> list[Box]:
    """Full-width lines and column lines in reading order: a run of column lines between two
    full-width ones is its left column, then its right column, each joined into one part (a
    column's lines read together keep their paragraphs); consecutive full-width lines join too."""
    parts: list[Box] = []
    columns: list[list[Box]] = [[], []]

    def flush() -> None:
        for side in columns:
            if side:
                parts.append(Box(side[0].left, side[0].top, side[0].right, side[-1].bottom))
            side.clear()

    for box in boxes:
        if box.left == 0 and box.right == width:
            flush()
            if parts and parts[-1].left == 0 and parts[-1].right == width and box.top <= parts[-1].bottom:
                parts[-1] = parts[-1]._replace(bottom=box.bottom)
            else:
                parts.append(box)
        else:
            columns[0 if box.left == 0 else 1].append(box)
    flush()
    return parts


def _runs(values) -> list[tuple[int, int, bool]]:
    """(start, end, value) of each run of equal values in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(values.astype(np.int8))) + 1
    bounds = [0, *edges.tolist(), len(values)]
    return [(a, b, bool(values[a])) for a, b in zip(bounds, bounds[1:])]


def without_rules(image):
    """The page with its ruling lines painted white: runs of ink longer than a twentieth of the
    page's width across, or a thirtieth of its height down (a glyph's longest stroke is a few
    times shorter). Tesseract reads a ruled table's cells as garbage (``Ea`` for a 5-row table),
    and the same table without its lines row by row."""
    from PIL import Image  # lazy: only scanned pages need Pillow

    pixels = np.asarray(image)
    ink = pixels < 128
    rules = _long_runs(ink, max(8, image.width // 20)) | _long_runs(ink.T, max(8, image.height // 30)).T
    if not rules.any():
        return image
    cleaned = pixels.copy()
    cleaned[rules] = 255
    return Image.fromarray(cleaned, "L")


def _long_runs(ink, length: int):
    """True where a pixel is in a run of ink of at least ``length`` along its row."""
    padded = np.zeros((ink.shape[0], ink.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = ink
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # row-major: the n-th end closes the n-th start
    marks = np.zeros((ink.shape[0], ink.shape[1] + 1), dtype=np.int32)
    long = ends - starts >= length
    np.add.at(marks, (rows[long], starts[long]), 1)
    np.add.at(marks, (rows[long], ends[long]), -1)
    return np.cumsum(marks, axis=1)[:, :-1] > 0


def read_page(image, options: OcrOptions, dpi: int | None) -> OcrPage:
    """OCR one page part by part (:func:`layout`, on the page as it is: a table's vertical lines
    keep it whole): their paragraphs in order, read without ruling lines (:func:`without_rules`),
    and the mean word confidence of the page (each part's weighted by its paragraphs' length)."""
    cleaned = without_rules(image)
    parts = [read_image(cleaned.crop(box), options, dpi) for box in layout(image)]
    paragraphs = [p for part in parts for p in part.paragraphs]
    weighted = [(part.confidence, sum(map(len, part.paragraphs))) for part in parts if part.confidence is not None]
    total = sum(weight for _, weight in weighted)
    confidence = round(sum(c * w for c, w in weighted) / total, 1) if total else None
    return OcrPage(paragraphs, confidence)


def read_image(image, options: OcrOptions, dpi: int | None) -> OcrPage:
    """OCR one page; a doubtful reading is checked for a turned page (90/180/270) and read again."""
    memory = options.memory_mb << 20
    page = read_once(image, options.languages, dpi, memory_bytes=memory)
    if page.confidence is not None and page.confidence >= DOUBTFUL_CONFIDENCE:
        return page
    degrees = _rotation(image, memory)
    if degrees == 0:
        return page
    return _better(page, read_once(image.rotate(-degrees, expand=True), options.languages, dpi, memory_bytes=memory))


def greyscale(image):
    """8-bit greyscale on white, whatever the mode: palette, alpha, CMYK, 16- and 32-bit."""
    from PIL import Image  # lazy: only scanned pages and images need Pillow

    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = pixels.max() if pixels.size and pixels.max() > 0 else 1.0
        return Image.fromarray((pixels * (255.0 / top)).clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("L")
    return image.convert("L")


class OcrReader:
    """One document's OCR: what to read (:meth:`wants`), the page cap, and the blocks of its pages
    (:meth:`page`). Use as a context manager: its threads end with it."""

    def __init__(self, options: OcrOptions, source: str) -> None:
        self.options, self.source = options, source
        self.pages = 0  # pages OCR'd so far
        self.capped_at: int | None = None  # the first page left unread by the cap
        self.missing: str | None = None  # why OCR could not run, once a page needed it
        self.wanted = False  # a page needed OCR
        self._executor: ThreadPoolExecutor | None = None
        self._running: deque[Future] = deque()  # pages being read, oldest first

    def wants(self, paragraphs: list[str]) -> bool:
        """Does a PDF page with this text layer get OCR? force: every page; auto: a page without usable text."""
        usable = sum(ch.isalnum() for p in paragraphs for ch in p) >= USABLE_TEXT_CHARS
        wanted = self.options.mode == "force" or (self.options.mode == "auto" and not usable)
        self.wanted = self.wanted or wanted
        return wanted

    def available(self) -> bool:
        self.missing = unavailable(self.options.languages)
        return self.missing is None

    def room(self, page_number: int) -> bool:
        """May page ``page_number`` still be OCR'd? Asked before a page is rendered or decoded, so
        that a long scan costs the cap's pages, not a render of every page (a 1,000-page scan
        took 72 s here with a cap of 2, rendering pages only to drop them); the first page
        refused is noted."""
        if self.pages < self.options.max_pages:
            return True
        if self.capped_at is None:
            self.capped_at = page_number
            log.warning("%s: OCR stopped at page %d: KORAG_OCR_MAX_PAGES=%d pages were read; the rest of the "
                        "document is not indexed", self.source, page_number, self.options.max_pages)
        return False

    def page(self, image, page_number: int, dpi: int | None) -> Callable[[], list[Block]]:
        """Start reading a page; call the result for its blocks (OCR'd, with its mean word
        confidence; none past the page cap). Tesseract runs as a process of its own, so a
        document's pages are read in parallel, :data:`OCR_THREADS` at a time (a scan uploaded
        alone no longer leaves all cores but one idle); no more pages than that wait in memory."""
        if not self.room(page_number):
            return list
        self.pages += 1
        if self._executor is None:
            self._executor = ThreadPoolExecutor(OCR_THREADS, thread_name_prefix="ocr")
        while len(self._running) >= OCR_THREADS:
            self._running.popleft().result()
        future = self._executor.submit(self._read, greyscale(image), page_number, dpi)
        self._running.append(future)
        return future.result

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> "OcrReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, image, page_number: int, dpi: int | None) -> list[Block]:
        try:
            page = read_page(image, self.options, dpi)
        except OSError as exc:  # a page Tesseract cannot read (too small, say) has no text
            log.info("%s: page %d: %s", self.source, page_number, exc)
            return []
        if not page.paragraphs:
            return []
        elements = partition_plain_text("\n\n".join(page.paragraphs), group_paragraphs=False, page_number=page_number)
        return [replace(block, ocr_confidence=page.confidence) for block in blocks_from_elements(elements)]

    def nothing_read(self) -> str:
        """The reason a document that needed OCR gave no text."""
        if self.missing is not None:
            return self.missing
        if self.capped_at is not None and self.pages == 0:
            return f"no text: OCR reads at most KORAG_OCR_MAX_PAGES={self.options.max_pages} pages"
        return "no text found by OCR"


def _within_pixel_limit(frame) -> None:
    """Refuse a frame over Pillow's pixel limit (``Image.MAX_IMAGE_PIXELS``) before it is decoded.
    Pillow itself only warns up to twice its limit, and a white 10000 x 10000 PNG of 25 KB then
    cost a parser 23 s and 0.8 GB with Tesseract, to find no text."""
    from PIL import Image  # lazy: only images need Pillow

    limit = Image.MAX_IMAGE_PIXELS
    width, height = frame.size
    if limit is not None and width * height > limit:
        raise Refusal(f"refused as unsafe: {width} x {height} = {width * height} pixels is over the limit of "
                      f"{limit} pixels (a decompression bomb?)")


def image_frames(data: bytes, room: Callable[[int], bool] = lambda number: True) -> Iterator:
    """The frames of an image file (a TIFF's pages), EXIF orientation applied, each refused when
    over Pillow's pixel limit; they end before the first frame ``room`` refuses (the OCR page
    cap, :meth:`OcrReader.room`), which is not decoded."""
    from PIL import Image, ImageOps, ImageSequence  # lazy: only images need Pillow

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with the size
            image = Image.open(io.BytesIO(data))
        with image:
            for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
                if not room(number):
                    return
                _within_pixel_limit(frame)
                frame.load()
                yield ImageOps.exif_transpose(frame)
    except Image.DecompressionBombError as exc:  # twice the limit: Pillow refuses it at open
        raise Refusal(f"refused as unsafe: {exc}") from None
    except (Image.UnidentifiedImageError, SyntaxError, EOFError, OSError, ValueError) as exc:
        raise Refusal(f"damaged or unreadable image: {exc}") from None


def image_dpi(image) -> int | None:
    """The resolution the file declares, when it is believable; Tesseract estimates it otherwise."""
    dpi = image.info.get("dpi")
    try:
        value = round(float(dpi[0])) if dpi else 0
    except (TypeError, ValueError, IndexError):
        return None
    return value if 70 <= value <= 2400 else None


def image_blocks(data: bytes, reader: OcrReader) -> list[Block]:
    """Blocks of an image file, page by page (multi-page TIFF), read by OCR."""
    if reader.options.mode == "off":
        raise Refusal("an image's text is read only by OCR, and KORAG_OCR=off")
    if not reader.available():
        raise Refusal(reader.missing)
    with reader:
        pages = [reader.page(frame, number, image_dpi(frame))
                 for number, frame in enumerate(image_frames(data, reader.room), start=1)]
        blocks = [block for page in pages for block in page()]
    if not blocks:
        raise Refusal(reader.nothing_read())
    return blocks
