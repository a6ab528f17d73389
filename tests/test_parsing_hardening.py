"""Hostile and pathological input: deep HTML, killed parents, huge unbroken text, damaged text
encodings, DTDs hidden behind long prologs. Real parsers, real tokenizer, real Kiwi, real processes."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import ingest.sentences as sentences
from bench.documents import SECRET_SENTENCE, long_korean_text, make_docx
from ingest.chunking import Chunker, ChunkingOptions
from ingest.parsing import parse_document
from ingest.parsing.blocks import Block
from ingest.parsing.text_decoding import decode
from ingest.tokens import TokenBudget
from korag.errors import DocumentError

REPO = Path(__file__).resolve().parents[1]


def _all_text(blocks) -> str:
    return "\n".join(b.text for b in blocks)


# -- 1. HTML nested deeper than libxml2's default limit -------------------------------------------
def test_html_nested_past_256_levels_keeps_every_line_and_the_last_paragraph():
    lines = "".join(f"<font>{i}번째 줄의 내용입니다.\n" for i in range(300))
    page = f"<html><body>{lines}<p>{SECRET_SENTENCE}</p></body></html>"
    text = _all_text(parse_document(page.encode(), "깊은.html"))
    assert SECRET_SENTENCE in text  # libxml2's 256-level cap used to drop it, status "indexed"
    assert all(f"{i}번째 줄의 내용입니다." in text for i in range(300))


def test_markdown_nested_300_levels_keeps_its_last_paragraph():
    # Markdown becomes HTML before partitioning: a deep list used to lose its end the same way.
    page = "".join("  " * i + f"- {i}번 항목\n" for i in range(300)) + f"\n{SECRET_SENTENCE}\n"
    text = _all_text(parse_document(page.encode(), "목록.md"))
    assert SECRET_SENTENCE in text and "299번 항목" in text


def test_html_nested_past_what_the_parser_can_read_is_refused_not_cut():
    for levels in (3_000, 100_000):
        page = "<html><body>" + "<div>깊은 문단입니다. " * levels + f"<p>{SECRET_SENTENCE}</p></body></html>"
        with pytest.raises(DocumentError, match=r"깊은\.html: HTML nested 2048 or more levels deep"):
            parse_document(page.encode(), "깊은.html")


def test_html_text_the_parser_drops_is_detected():
    # libxml2 silently ignores everything after a premature </html>; a browser shows it.
    page = f"<html><body><p>첫 문단입니다.</p></html><p>{SECRET_SENTENCE} {long_korean_text(1)}</p>"
    with pytest.raises(DocumentError, match=r"잘린\.html: the HTML parser kept only \d+ of the page's \d+ visible"):
        parse_document(page.encode(), "잘린.html")
    # What unstructured leaves out on purpose (navigation, forms, scripts, one-character
    # paragraphs) is no loss: such a page is still indexed.
    ordinary = (
        "<html><head><title>안내</title><script>var x = '<p>';</script></head><body>"
        "<nav><ul><li>홈</li><li>소개</li><li>연락처</li></ul></nav>"
        "<form><label>이름</label><select><option>하나</option><option>둘</option></select></form>"
        f"<p>{SECRET_SENTENCE}</p><p>끝</p></body></html>"
    )
    assert SECRET_SENTENCE in _all_text(parse_document(ordinary.encode(), "보통.html"))


# -- 2. the guarded parser child never outlives its parent ----------------------------------------
_GUARDED_PARENT = """
import os, sys, time
from ingest.parsing.guard import run_guarded

def parse():
    with open(sys.argv[1] + ".tmp", "w") as out:
        out.write(str(os.getpid()))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(600)

run_guarded(parse, "slow.txt", timeout_s=float(sys.argv[2]), memory_bytes=256 << 20)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def _wait_until(condition, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _start_guarded_parent(tmp_path: Path, timeout_s: float) -> tuple[subprocess.Popen, int]:
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", _GUARDED_PARENT, str(pid_file), str(timeout_s)], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert _wait_until(pid_file.exists, 60), "the guarded child never started"
    return parent, int(pid_file.read_text())


@pytest.mark.slow
def test_the_parser_child_dies_with_a_killed_parent(tmp_path):
    parent, child = _start_guarded_parent(tmp_path, timeout_s=300)
    try:
        parent.kill()  # SIGKILL: the parent cannot clean up
        parent.wait()
        assert _wait_until(lambda: not _alive(child), 5), "the orphaned parser child kept running"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.slow
def test_the_parser_child_enforces_its_own_time_limit(tmp_path):
    parent, child = _start_guarded_parent(tmp_path, timeout_s=1)
    try:
        parent.send_signal(signal.SIGSTOP)  # a parent that cannot enforce the deadline
        assert _wait_until(lambda: not _alive(child), 30), "the parser child outlived its time limit"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait()


# -- 3. chunking is linear in the text ----------------------------------------------------------------
class _RecordingTokenizer:
    """The real tokenizer, recording the length of every string it is handed."""

    def __init__(self, real) -> None:
        self.real, self.lengths = real, []

    def __call__(self, text, **kwargs):
        self.lengths.extend([len(t) for t in text] if isinstance(text, list) else [len(text)])  # a batch: each string
        return self.real(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)


class _RecordingKiwi:
    """The real Kiwi, recording the length of every string it splits."""

    def __init__(self, real) -> None:
        self.real, self.lengths = real, []

    def split_into_sents(self, text, *args, **kwargs):
        self.lengths.append(len(text))
        return self.real.split_into_sents(text, *args, **kwargs)


def _unbroken(size: int) -> str:
    """One line, no sentence end: words and numbers separated by spaces."""
    words = ("korag", "법원조직법", "retrieval", "문서", "검색", "budget", "토큰", "window")
    out, n, i = [], 0, 0
    while n < size:
        word = f"{words[i % len(words)]}{i % 97}"
        out.append(word)
        n += len(word) + 1
        i += 1
    return " ".join(out)


@pytest.mark.slow
def test_chunking_work_grows_linearly_and_no_call_sees_the_whole_text(minilm, monkeypatch):
    real_budget = minilm.passage_budget
    kiwi = _RecordingKiwi(sentences.kiwi())
    monkeypatch.setattr(sentences, "kiwi", lambda: kiwi)
    work = {}
    for size in (200_000, 1_000_000):
        tokenizer = _RecordingTokenizer(real_budget.tokenizer)
        budget = TokenBudget(tokenizer, real_budget.max_input_tokens, real_budget.prefix)
        kiwi.lengths.clear()
        text = _unbroken(size)
        chunks = Chunker(budget, ChunkingOptions(overlap_tokens=0)).chunk([Block("text", text)])
        # Bounded calls: neither Kiwi nor the tokenizer is ever handed the long line itself.
        assert max(kiwi.lengths) <= sentences.KIWI_WINDOW
        assert max(tokenizer.lengths) <= budget.window_chars(real_budget.max_input_tokens)
        work[size] = sum(tokenizer.lengths) + sum(kiwi.lengths)
        # Every chunk fits, and not one character is lost.
        assert all(real_budget.fits(c.header, c.text) for c in chunks)
        assert "".join("".join(c.text.split()) for c in chunks) == "".join(text.split())
    assert work[1_000_000] <= 5 * work[200_000] * 1.1  # five times the text, five times the work


def test_token_split_of_a_long_line_keeps_every_character_in_bounded_calls(minilm):
    real_budget = minilm.passage_budget
    tokenizer = _RecordingTokenizer(real_budget.tokenizer)
    budget = TokenBudget(tokenizer, real_budget.max_input_tokens, real_budget.prefix)
    text = _unbroken(60_000)
    pieces = budget.split(text, 100)
    assert max(tokenizer.lengths) <= budget.window_chars(100) < len(text)
    assert all(real_budget.count(p) <= 100 for p in pieces)
    assert "".join("".join(p.split()) for p in pieces) == "".join(text.split())
    assert sum(tokenizer.lengths) <= 3 * len(text)  # each character tokenized a bounded number of times


# -- 4. text decoding: a damaged byte costs one character, not the file -------------------------------
def test_one_invalid_byte_in_utf8_is_replaced_and_reported(caplog):
    text = long_korean_text(150)  # about 90 KB of UTF-8
    good = text.encode("utf-8")
    cut = len(text[:40_000].encode("utf-8"))  # a character boundary
    data = good[:cut] + b"\xff" + good[cut:]
    decoded = decode(data)
    assert (decoded.encoding, decoded.replaced, decoded.first_bad) == ("utf-8", 1, cut)
    assert decoded.text == text[:40_000] + "\ufffd" + text[40_000:]
    with caplog.at_level(logging.WARNING, logger="korag.parsing"):
        blocks = parse_document(data, "공지.txt")
    assert "제150절의 6번째 문장은" in _all_text(blocks)
    assert any("공지.txt" in r.getMessage() and "1 undecodable byte" in r.getMessage() for r in caplog.records)


def test_cp949_stays_preferred_and_a_damaged_cp949_file_is_still_read():
    text = long_korean_text(20)
    assert decode(text.encode("cp949")).encoding == "cp949"
    good = text.encode("cp949")
    cut = len(text[:5_000].encode("cp949"))
    decoded = decode(good[:cut] + b"\xff" + good[cut:])
    assert (decoded.encoding, decoded.replaced, decoded.first_bad) == ("cp949", 1, cut)
    assert decoded.text == text[:5_000] + "\ufffd" + text[5_000:]


def test_mostly_undecodable_text_is_refused_naming_the_first_bad_byte():
    data = bytearray(long_korean_text(20).encode("utf-8"))
    for i in range(1_000, len(data), 3):
        data[i] = 0xFF  # a third of the bytes, the first at offset 1000
    with pytest.raises(DocumentError, match=r"망가진\.txt: not text in a known encoding: of its \d+ bytes, \d+ as UTF-8 \(the first at byte offset 1000\)"):
        parse_document(bytes(data), "망가진.txt")


# -- 5. a DTD behind a long prolog is still found ---------------------------------------------------
def _docx_with_prolog(path: Path, prolog: str, encoding: str = "utf-8") -> bytes:
    source = zipfile.ZipFile(io.BytesIO(make_docx(path).read_bytes()))
    out = io.BytesIO()
    with source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "word/document.xml":
                body = data.decode("utf-8").split("?>", 1)[1]  # drop the XML declaration
                declaration = f'<?xml version="1.0" encoding="{encoding.upper()}" standalone="yes"?>'
                data = (declaration + prolog + body).encode(encoding)
            target.writestr(info, data)
    return out.getvalue()


def test_a_dtd_after_8_kb_of_comment_is_refused(tmp_path):
    laughs = '<!DOCTYPE w:document [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
    hidden = _docx_with_prolog(tmp_path / "a.docx", "\n<!--" + " 주석" * 3_000 + "-->\n<?pi x?>\n" + laughs)
    with pytest.raises(DocumentError, match=r"폭탄\.docx: refused as unsafe: word/document\.xml declares a DTD"):
        parse_document(hidden, "폭탄.docx")
    utf16 = _docx_with_prolog(tmp_path / "b.docx", laughs, encoding="utf-16")
    with pytest.raises(DocumentError, match="declares a DTD"):
        parse_document(utf16, "폭탄.docx")
    # Comments and processing instructions alone, however long, are fine.
    harmless = _docx_with_prolog(tmp_path / "c.docx", "\n<!--" + " 주석" * 3_000 + "-->\n")
    assert SECRET_SENTENCE in _all_text(parse_document(harmless, "문서.docx"))
