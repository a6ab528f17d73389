"""Bad input for OCR (issue 21, item 5): every file is made here at test time (nothing shipped) and
goes through a real `korag ingest` process in one batch with one good document, with the real
Tesseract (apt: tesseract-ocr, tesseract-ocr-kor), a Korean font (apt: fonts-nanum) and the
offline MiniLM model. Each bad file ends with the outcome its user sees: ``failed`` with a reason,
or ``indexed``; the rest of the batch goes on. The batch's peak memory is measured against the
good file ingested alone in the same run (the bad input adds nothing), and issue 21's bound, below
2 GiB, is this machine's figure in bench/RESULTS.md."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

from bench import documents as docs
from tests.conftest import korag_env, offline_model_path
from tests.test_ocr import accuracy, font  # noqa: F401 - font is a fixture

pytestmark = pytest.mark.slow  # a `korag ingest` process running Tesseract

GIB = 1 << 30
MAX_PAGES = 3  # KORAG_OCR_MAX_PAGES for the batch
PARSE_TIMEOUT_S = 60  # KORAG_PARSE_TIMEOUT_S for the batch: each document's bound


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def white_png(side: int) -> bytes:
    """A valid all-white 1-bit PNG of ``side`` x ``side`` pixels, written row by row without ever
    holding the image (50000 x 50000 is 2.5 billion pixels in about 400 KB)."""
    row = b"\x00" + b"\xff" * ((side + 7) // 8)  # filter type 0, then the row's bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _saved(image, kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def bad_inputs(font_path: str) -> dict[str, bytes]:
    import numpy as np
    from PIL import Image

    page = docs.render_page(docs.SCANNED_PAGES[1], font_path)
    png, jpeg = _saved(page, "PNG"), _saved(page, "JPEG", quality=80)
    corrupt = bytearray(png)
    corrupt[len(png) // 2:len(png) // 2 + 64] = bytes(64)  # zeros in the middle of the compressed pixels
    deep = Image.fromarray(np.asarray(page, dtype=np.uint16) * 257)  # mode I;16
    cover = docs.render_page(["스캔 문서 표지"], font_path, dpi=30, size_pt=24)  # an A4 page drawn at 30 dpi: tiny
    return {
        "bomb.png": white_png(50_000),  # 20 times Pillow's limit (MAX_IMAGE_PIXELS, 89,478,485)
        "over-limit.png": white_png(10_000),  # 1.1 times the limit: Pillow only warns below twice it
        "corrupt.png": bytes(corrupt),
        "truncated.jpg": jpeg[:len(jpeg) // 2],
        "dot.png": _saved(Image.new("L", (1, 1), 0), "PNG"),
        "cmyk.tif": _saved(page.convert("CMYK"), "TIFF", compression="tiff_lzw", dpi=(300, 300)),
        "deep16.tif": _saved(deep, "TIFF", dpi=(300, 300)),
        "blank.png": _saved(Image.new("L", (1200, 1600), 255), "PNG"),
        "thousand.pdf": _saved(cover, "PDF", resolution=30, save_all=True, append_images=[cover] * 999),
        "good.md": "# 안내\n\n이 문서는 정상적으로 색인됩니다. 금고의 비밀번호는 ZEBRA-QUARTZ-7781 입니다.\n".encode(),
    }


class TreeMemory:
    """The memory a process and its descendants (forked parsers, Tesseract) hold, sampled every
    0.2 s: the sum of their proportional set sizes (``Pss`` in /proc/PID/smaps_rollup), in which a
    page the forked parsers share with their parent counts once, not once per process as in a sum
    of RSS; and each process's own peak RSS (``VmHWM``, kept by the kernel between samples) with its
    command line, so that a peak can be traced to the process that reached it."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kb, self.done = pid, 0, threading.Event()
        self.peaks: dict[int, tuple[int, str]] = {}  # pid: (VmHWM in KiB, command line)
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _tree(self) -> list[int]:
        pids, frontier = [self.pid], [self.pid]
        while frontier:
            pid = frontier.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            pids += map(int, children)
            frontier += map(int, children)
        return pids

    def _sample(self) -> None:
        while not self.done.wait(0.2):
            total = 0
            for pid in self._tree():
                try:
                    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                    status = Path(f"/proc/{pid}/status").read_text()
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                total += _field_kb(rollup, "Pss:")
                hwm = _field_kb(status, "VmHWM:")
                if hwm >= self.peaks.get(pid, (0, ""))[0]:
                    self.peaks[pid] = (hwm, command.strip()[:120])
            self.peak_kb = max(self.peak_kb, total)

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.peak_kb

    def largest(self) -> str:
        """The sampled processes by peak RSS, largest first: where a peak came from."""
        ranked = sorted(self.peaks.values(), reverse=True)[:4]
        return "; ".join(f"{kb / 1024:.0f} MiB {command}" for kb, command in ranked)


def _field_kb(text: str, name: str) -> int:
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith(name)), 0)


class Measured(NamedTuple):
    code: int
    out: str
    err: str
    largest_kb: int  # the peak RSS of its largest process (the kernel's ru_maxrss)
    tree_kb: int  # the sampled peak of all its processes together (TreeMemory)
    processes: str  # TreeMemory.largest()


def run_measured(args: list[str], **options) -> Measured:
    """Run ``args``: exit code, output, the peak RSS of its largest process (the kernel's
    ``ru_maxrss`` from ``wait4``: the process and every descendant it waited for), the sampled
    peak of all its processes' memory together and the sampled processes with their peaks."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)
    memory = TreeMemory(process.pid)
    with ThreadPoolExecutor(2) as readers:
        out, err = readers.submit(process.stdout.read), readers.submit(process.stderr.read)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stdout.close()
    process.stderr.close()
    tree_kb = memory.stop()
    return Measured(process.returncode, out.result(), err.result(), usage.ru_maxrss, tree_kb, memory.largest())


def _cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return " ".join(flag for flag in flags.split(":", 1)[1].split() if flag in wanted)


def test_bad_images_and_a_thousand_page_scan_in_one_batch_with_a_good_document(tmp_path, font):  # noqa: F811
    files = bad_inputs(font)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    env = korag_env({"KORAG_EMBEDDING_MODEL": offline_model_path(), "KORAG_DATA_DIR": str(tmp_path / "data"),
                     "KORAG_EMBEDDING_DEVICE": "cpu", "KORAG_OCR_MAX_PAGES": str(MAX_PAGES),
                     "KORAG_PARSE_TIMEOUT_S": str(PARSE_TIMEOUT_S)})
    # the good document alone, first, in its own store: what a batch costs on this machine
    alone = run_measured([sys.executable, "-m", "korag.cli", "ingest", "good.md", "--json"], cwd=tmp_path,
                         env={**env, "KORAG_DATA_DIR": str(tmp_path / "alone")})
    assert alone.code == 0, alone.err[-3000:]
    started = time.monotonic()
    batch = run_measured([sys.executable, "-m", "korag.cli", "ingest", *files, "--json"], cwd=tmp_path, env=env)
    code, out, err = batch.code, batch.out, batch.err
    print(f"CPU flags: {_cpu_flags()}; batch: {time.monotonic() - started:.0f} s; peak RSS of the largest process: "
          f"{batch.largest_kb / 1024:.0f} MiB (the good file alone: {alone.largest_kb / 1024:.0f} MiB); all processes "
          f"together: {batch.tree_kb / 1024:.0f} MiB (sampled sum of PSS); by process: {batch.processes}")
    results = {line["source"]: line for line in map(json.loads, out.splitlines())}
    assert code == 1 and set(results) == set(files), err[-3000:]
    status = {name: (line["status"], line["error"]) for name, line in results.items()}

    for name in ("bomb.png", "over-limit.png"):  # refused before a pixel is decoded
        assert status[name][0] == "failed" and status[name][1].startswith("refused as unsafe"), status[name]
        assert "pixels" in status[name][1]
    for name in ("corrupt.png", "truncated.jpg"):
        assert status[name][0] == "failed" and status[name][1].startswith("damaged or unreadable image"), status[name]
    assert status["dot.png"] == ("failed", "no text found by OCR")
    assert status["blank.png"] == ("failed", "no text found by OCR")
    assert status["good.md"][0] == "indexed"
    # the thousand-page scan: its first MAX_PAGES pages are read, well within the parse time
    # limit, and a line on stderr names the file and the first page left unread
    assert status["thousand.pdf"][0] == "indexed", status["thousand.pdf"]
    assert f"thousand.pdf: OCR stopped at page {MAX_PAGES + 1}: KORAG_OCR_MAX_PAGES={MAX_PAGES}" in err
    # the bad input costs no memory a good document does not: the batch's largest process stays
    # within 256 MiB of the good file's alone (a bomb decoded would add 2.5 GB). Issue 21's bound,
    # below 2 GiB, is this machine's figure (bench/RESULTS.md): a CPU with native bf16 runs the
    # model another way, so the bound is checked against the good file measured in the same run.
    assert batch.largest_kb < max(2 * GIB, alone.largest_kb * 1024 + GIB // 4) // 1024, (
        f"the batch: {batch.largest_kb / 1024:.0f} MiB, the good file alone: {alone.largest_kb / 1024:.0f} MiB; "
        f"CPU flags: {_cpu_flags()}; by process (sampled): {batch.processes}")

    def chunks(name: str) -> list[dict]:
        listed = subprocess.run([sys.executable, "-m", "korag.cli", "chunks", "--doc-id", results[name]["doc_id"],
                                 "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        return [json.loads(line) for line in listed.stdout.splitlines()]

    for name in ("cmyk.tif", "deep16.tif"):  # Korean text read from CMYK and 16-bit pixels
        assert status[name][0] == "indexed", status[name]
        read = sorted(chunks(name), key=lambda c: c["metadata"]["chunk_index"])
        body = [line for line in docs.SCANNED_PAGES[1] if not line.startswith("□")]  # headings: in "section"
        assert accuracy(body, " ".join(c["text"] for c in read)) >= 0.95, read
        assert all(c["metadata"]["ocr"] is True for c in read)
    assert {c["metadata"]["page_number"] for c in chunks("thousand.pdf")} <= set(range(1, MAX_PAGES + 1))



def _declare_size(tiff: bytes, frame: int, side: int) -> bytes:
    """``tiff`` (little-endian, as Pillow writes it) with frame ``frame`` (0-based) declaring
    ``side`` x ``side`` pixels: its ImageWidth and ImageLength tags rewritten, nothing else."""
    patched = bytearray(tiff)
    (offset,) = struct.unpack_from("<I", patched, 4)
    for _ in range(frame):
        (count,) = struct.unpack_from("<H", patched, offset)
        (offset,) = struct.unpack_from("<I", patched, offset + 2 + 12 * count)
    (count,) = struct.unpack_from("<H", patched, offset)
    for entry in range(offset + 2, offset + 2 + 12 * count, 12):
        tag, kind = struct.unpack_from("<HH", patched, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
            struct.pack_into("<H" if kind == 3 else "<I", patched, entry + 8, side)
    return bytes(patched)


def test_a_tiff_page_past_the_cap_is_never_decoded_and_one_over_the_pixel_limit_is_refused(font, caplog):  # noqa: F811
    """A TIFF whose second page declares 50000 x 50000 pixels: under a cap of one page it is
    never decoded, and the first page is indexed with the cap's note (it once failed the whole
    file as a decompression bomb); without the cap the file is refused as unsafe. A TIFF with
    exactly the cap's pages gets no note."""
    import logging

    from PIL import Image

    from ingest.parsing import OcrOptions, parse_document
    from korag.errors import DocumentError

    page = docs.render_page(docs.SCANNED_PAGES[1], font)
    bomb = _declare_size(_saved(page, "TIFF", save_all=True, append_images=[Image.new("L", (8, 8), 255)]), 1, 50_000)
    with caplog.at_level(logging.WARNING, logger="korag.parsing"):
        blocks = parse_document(bomb, "two.tif", ocr=OcrOptions(max_pages=1))
    assert {b.page_number for b in blocks} == {1}
    assert "two.tif: OCR stopped at page 2: KORAG_OCR_MAX_PAGES=1" in caplog.text
    with pytest.raises(DocumentError, match="refused as unsafe"):
        parse_document(bomb, "two.tif", ocr=OcrOptions(max_pages=2))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="korag.parsing"):
        blocks = parse_document(_saved(page, "TIFF", save_all=True, append_images=[page]), "two.tif",
                                ocr=OcrOptions(max_pages=2))
    assert {b.page_number for b in blocks} == {1, 2} and "OCR stopped" not in caplog.text
