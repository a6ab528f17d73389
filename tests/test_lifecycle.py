"""Document identity, versions, deletion, durable status, guarded parsing and hostile input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile

import pytest

from bench import documents as docs
from ingest.parsing.guard import run_guarded
from ingest.pipeline import Pipeline
from korag.errors import DocumentError
from korag.storage.registry import DocumentRegistry
from korag.storage.store import QdrantStore, open_client
from tests.conftest import korag_cli, korag_env, make_settings, offline_model_path


@pytest.fixture
def parts(tmp_path, minilm):
    settings = make_settings(tmp_path)
    store = QdrantStore(open_client(settings), settings.collection)
    return Pipeline.build(minilm, store, settings), store, DocumentRegistry(store.client, settings.collection)


def test_same_content_is_unchanged_and_new_content_replaces_the_old(tmp_path, parts):
    pipeline, store, registry = parts
    path = docs.make_text(tmp_path / "공지.txt", text=docs.long_korean_text(10))
    first = pipeline.ingest_path(path, source="공지.txt")
    points = {c.id: c.text for c in store.iter_chunks({"doc_id": first.doc_id})}
    again = pipeline.ingest_path(path, source="공지.txt")
    assert (again.status, again.chunks) == ("unchanged", first.chunks)
    assert {c.id: c.text for c in store.iter_chunks({"doc_id": first.doc_id})} == points
    assert registry.get(first.doc_id).version == 1

    docs.make_text(path, text="새 공지입니다. 내용이 완전히 바뀌었습니다.")
    changed = pipeline.ingest_path(path, source="공지.txt")
    stored = list(store.iter_chunks({"doc_id": first.doc_id}))
    assert changed.status == "indexed" and len(stored) == changed.chunks == 1
    assert {c.metadata["content_hash"] for c in stored} == {registry.get(first.doc_id).content_hash}
    record = registry.get(first.doc_id)
    assert (record.status, record.version, record.chunks, record.error) == ("indexed", 2, 1, None)


def test_a_failed_new_version_keeps_the_indexed_one(tmp_path, parts):
    pipeline, store, registry = parts
    path = docs.make_docx(tmp_path / "보고서.docx")
    good = pipeline.ingest_path(path, source="보고서.docx")
    path.write_bytes(path.read_bytes()[:300])  # truncated upload of a new version
    bad = pipeline.ingest_path(path, source="보고서.docx")
    assert bad.status == "failed" and "damaged or truncated DOCX" in bad.error
    assert store.count({"doc_id": good.doc_id}) == good.chunks
    record = registry.get(good.doc_id)
    assert record.status == "failed" and record.version == 1 and record.error == bad.error


def test_guarded_parsing_limits_time_and_memory():
    with pytest.raises(DocumentError, match="longer than 1 s"):
        run_guarded(lambda: time.sleep(30), "slow.pdf", timeout_s=1, memory_bytes=256 << 20)
    with pytest.raises(DocumentError, match="memory"):
        run_guarded(lambda: bytearray(2 << 30), "huge.docx", timeout_s=30, memory_bytes=256 << 20)
    with pytest.raises(DocumentError, match="crashed"):
        run_guarded(lambda: os._exit(3), "crash.hwp", timeout_s=30, memory_bytes=256 << 20)
    assert run_guarded(lambda: [1, 2], "ok.txt", timeout_s=30, memory_bytes=256 << 20) == [1, 2]


# -- hostile input, one batch through the CLI ----------------------------------------------------
def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def _bad_inputs(folder) -> dict[str, str]:
    """file name → expected fragment of its error (None: must be indexed)."""
    folder.mkdir()
    good_docx = docs.make_docx(folder / "정상.docx").read_bytes()
    (folder / "empty.pdf").write_bytes(b"")
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    (folder / "image.pdf").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    docs.make_pdf(folder / "renamed.txt", [["PDF를 txt로 바꾼 파일"]])
    (folder / "notes.rtf").write_bytes(b"{\\rtf1 hello}")
    (folder / "truncated.docx").write_bytes(good_docx[: len(good_docx) // 2])
    (folder / "bomb.docx").write_bytes(_zip({"word/document.xml": b"<w/>" + b" " * (600 * 1024 * 1024)}))
    laughs = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><x>&b;</x>'
    (folder / "laughs.docx").write_bytes(_zip({"[Content_Types].xml": laughs, "word/document.xml": laughs}))
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(folder / "scan.pdf"))
    c.rect(100, 100, 300, 300, fill=1)
    c.showPage()
    c.save()
    (folder / "huge.txt").write_bytes("가".encode() * 400_000)
    docs.make_text(folder / "euckr.txt", "euc-kr", "EUC-KR로 저장한 공지입니다.")
    docs.make_text(folder / "cp949.txt", "cp949", "CP949에만 있는 똠방각하 글자입니다.")
    return {
        "정상.docx": None,
        "empty.pdf": "empty file",
        "corrupt.pdf": "cannot parse as PDF",
        "image.pdf": "PNG image",
        "renamed.txt": "content is PDF",
        "notes.rtf": "unsupported file type '.rtf'",
        "truncated.docx": "damaged or truncated DOCX",
        "bomb.docx": "zip bomb",
        "laughs.docx": "DTD or entities",
        "scan.pdf": "no text layer",  # and, with OCR, "no text found by OCR" (issue 21)
        "huge.txt": "over the limit",
        "euckr.txt": None,
        "cp949.txt": None,
    }


def _run_measured(argv, env, cwd) -> tuple[int, str, str, int]:
    """Run a command; return its exit code, output and peak RSS in KiB — of that process alone,
    read from /proc/PID/status VmHWM (per address space, so neither this test process's memory
    nor the command's forked parsers, which RLIMIT_AS caps separately, are counted)."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0

    def poll() -> None:
        nonlocal peak
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate(timeout=600)
    watcher.join()
    return proc.returncode, stdout, stderr, peak


@pytest.mark.slow
def test_bad_inputs_fail_alone_with_clear_errors_and_bounded_memory(tmp_path):
    expected = _bad_inputs(tmp_path / "in")
    env = korag_env({"KORAG_EMBEDDING_MODEL": offline_model_path(), "KORAG_DATA_DIR": str(tmp_path / "data"),
                     "KORAG_MAX_FILE_BYTES": str(1024 * 1024)})
    files = [f"in/{name}" for name in expected]
    returncode, stdout, stderr, peak_kib = _run_measured(
        [sys.executable, "-m", "korag.cli", "ingest", *files, "--json"], env, tmp_path)
    lines = {json.loads(l)["source"]: json.loads(l) for l in stdout.splitlines()}
    assert returncode == 1, stderr
    for name, fragment in expected.items():
        line = lines[f"in/{name}"]
        if fragment is None:
            assert line["status"] == "indexed", (name, line["error"])
        else:
            assert line["status"] == "failed" and fragment in line["error"], (name, line["error"])
    assert 200 * 1024 < peak_kib < 2 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"

    found = korag_cli(["search", "똠방각하", "-k", "1", "--json", "--mode", "sparse"], env, tmp_path)
    assert "똠방각하" in json.loads(found.stdout)["results"][0]["text"]


@pytest.mark.slow
def test_docs_status_and_delete_commands(tmp_path):
    env = korag_env({"KORAG_EMBEDDING_MODEL": offline_model_path(), "KORAG_DATA_DIR": str(tmp_path / "data")})
    docs.make_markdown(tmp_path / "a.md")
    (tmp_path / "b.pdf").write_bytes(b"")
    korag_cli(["ingest", "a.md", "b.pdf"], env, tmp_path)
    listed = [json.loads(l) for l in korag_cli(["docs", "--json"], env, tmp_path).stdout.splitlines()]
    by_source = {r["source"]: r for r in listed}
    assert by_source["a.md"]["status"] == "indexed" and by_source["a.md"]["version"] == 1
    assert by_source["b.pdf"]["status"] == "failed" and by_source["b.pdf"]["error"] == "empty file"
    assert all(r["created_at"] <= r["updated_at"] for r in listed)

    summary = json.loads(korag_cli(["status", "--json"], env, tmp_path).stdout)
    assert summary["total"] == 2 and summary["by_status"]["indexed"] == 1 and summary["by_status"]["failed"] == 1
    doc_id = by_source["a.md"]["doc_id"]
    one = json.loads(korag_cli(["status", doc_id, "--json"], env, tmp_path).stdout)
    assert one["chunks"] >= 1

    deleted = korag_cli(["delete", doc_id, "--json"], env, tmp_path)
    assert json.loads(deleted.stdout) == {"doc_id": doc_id, "deleted_chunks": one["chunks"]}
    assert korag_cli(["chunks", "--doc-id", doc_id, "--json"], env, tmp_path).stdout == ""
    assert korag_cli(["status", doc_id], env, tmp_path).returncode == 1


def test_sweeper_fails_interrupted_documents_without_a_broker(tmp_path, parts):
    from workers.sweeper import sweep

    pipeline, store, registry = parts
    result = pipeline.ingest_path(docs.make_markdown(tmp_path / "a.md"))
    record = registry.get(result.doc_id)
    record.status = "parsing"
    registry.put(record)
    settings = make_settings(tmp_path, sweep_after_s=60)
    assert sweep(registry, None, settings) == []  # too recent: maybe still running
    swept = sweep(registry, None, settings, now=time.time() + 120)
    assert [r.doc_id for r in swept] == [result.doc_id]
    assert registry.get(result.doc_id).status == "failed"
