"""Korean OCR (issue 21): character accuracy and seconds per page of Tesseract's page
segmentation modes and render resolutions, on pages this script renders itself.

    python bench/ocr_bench.py [--psm 3 4 6] [--dpi 200 300] [--languages kor+eng kor]
    python bench/ocr_bench.py --threads 1 2 [--repeats 3]

``--threads``: instead, seconds to read one scanned PDF of every clean page through the parser
(``parse_document``, KORAG_OCR=auto) with ``ocr.OCR_THREADS`` pages at a time, the settings taking
turns ``--repeats`` times in one run, with the load average before and after: the speed-up of
reading a document's pages in parallel. It needs idle cores to show one.

Pages: bench/documents.py's SCANNED_PAGES printed at 11 pt with a Korean font found by
``fc-list :lang=ko`` (Debian: fonts-nanum), clean and phone-like (turned 1.5 degrees, grey noise,
lower contrast, JPEG quality 70). Each page is read once per setting with one Tesseract thread
(``OMP_THREAD_LIMIT=1``, as the parsers run it), as it lies, with no orientation check.
Accuracy: difflib's ratio between the printed text and Tesseract's, whitespace removed (Korean
spacing is not scored). Prints one JSON line per setting and the machine's CPU flags.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import documents as docs  # noqa: E402
from ingest.parsing import ocr  # noqa: E402


def accuracy(expected: str, read: str) -> float:
    strip = re.compile(r"\s+")
    return difflib.SequenceMatcher(None, strip.sub("", expected), strip.sub("", read), autojunk=False).ratio()


def cpu_flags() -> str:
    """The CPU model and its vector extensions, as /proc/cpuinfo names them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    model = re.search(r"model name\s*:\s*(.+)", info)
    flags = re.search(r"flags\s*:\s*(.+)", info)
    wanted = [f for f in (flags.group(1).split() if flags else []) if f.startswith(("avx", "sse4", "fma", "amx"))]
    return f"{model.group(1) if model else '?'}; {os.cpu_count()} cores; {' '.join(sorted(set(wanted)))}"


def pages(font: str, dpi: int) -> dict[str, list]:
    from PIL import Image

    clean = [docs.render_page(lines, font, dpi=dpi) for lines in docs.SCANNED_PAGES]
    phone = []
    for page in clean:
        buffer = io.BytesIO()
        docs.phone_like(page).save(buffer, "JPEG", quality=70)
        phone.append(Image.open(io.BytesIO(buffer.getvalue())).convert("L"))
    return {"clean": clean, "phone": phone}


def parallel(font: str, threads: list[int], repeats: int) -> None:
    """Whole-document OCR time per ``OCR_THREADS`` setting, the settings interleaved."""
    import tempfile

    from ingest.parsing import OcrOptions, parse_document

    with tempfile.TemporaryDirectory() as tmp:
        data = docs.make_scanned_pdf(Path(tmp) / "scan.pdf", pages(font, 300)["clean"]).read_bytes()
    seconds: dict[int, list[float]] = {n: [] for n in threads}
    load = [os.getloadavg()[0]]
    for _ in range(repeats):
        for n in threads:
            ocr.OCR_THREADS = n
            started = time.perf_counter()
            parse_document(data, "scan.pdf", "scan.pdf", OcrOptions())
            seconds[n].append(time.perf_counter() - started)
    load.append(os.getloadavg()[0])
    for n, values in seconds.items():
        print(json.dumps({"ocr_threads": n, "pages": len(docs.SCANNED_PAGES), "seconds": [round(v, 1) for v in values],
                          "best_s": round(min(values), 1), "load_1min": load}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", help="time one document's pages read this many at a time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--psm", type=int, nargs="+", default=[3, 4, 6])
    parser.add_argument("--dpi", type=int, nargs="+", default=[200, 300])
    parser.add_argument("--languages", nargs="+", default=["kor+eng"])
    args = parser.parse_args()
    missing = ocr.unavailable("+".join(args.languages))
    font = docs.korean_font()
    if missing is not None or font is None:
        sys.exit(missing if missing is not None else "no Korean font: apt-get install fonts-nanum")
    print(json.dumps({"cpu": cpu_flags(), "font": Path(font).name}, ensure_ascii=False))
    if args.threads:
        parallel(font, args.threads, args.repeats)
        return
    expected = ["".join(lines) for lines in docs.SCANNED_PAGES]
    for dpi in args.dpi:
        for kind, images in pages(font, dpi).items():
            for languages in args.languages:
                for psm in args.psm:
                    scores, seconds = [], []
                    for image, text in zip(images, expected):
                        started = time.perf_counter()
                        page = ocr.read_once(image, languages, dpi, psm)
                        seconds.append(time.perf_counter() - started)
                        scores.append(accuracy(text, " ".join(page.paragraphs)))
                    print(json.dumps({"dpi": dpi, "pages": kind, "languages": languages, "psm": psm,
                                      "accuracy_min": round(min(scores), 3),
                                      "accuracy_mean": round(sum(scores) / len(scores), 3),
                                      "s_per_page": round(sum(seconds) / len(seconds), 2)}), flush=True)


if __name__ == "__main__":
    main()
