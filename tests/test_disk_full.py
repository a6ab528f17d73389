"""A full disk never kills korag (issue 18, item 4): below ``KORAG_MIN_FREE_DISK_MB`` uploads are
507 (before or while their body is written), documents fail with "disk full", `korag serve` and
`korag ingest` refuse to start with one line and exit 2, and nothing indexed is lost.

Each test mounts small tmpfs filesystems (root only; CI runs as root) and fills them with a filler
file to the free space it needs: a real filesystem with really little space, no patched statvfs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from korag.storage.blobs import BlobStore
from korag.storage.disk import MIB, DiskFullError, free_bytes
from korag.storage.uploads import BlobWriter
from tests.api_server import serve
from tests.conftest import korag_env

V1 = "제1조 (목적) 이 규정은 연차휴가에 관한 사항을 정한다.\n\n제2조 (연차휴가) 근로자는 1년에 15일의 연차휴가를 받는다.\n"
V2 = "제1조 (목적) 이 규정은 출장비 정산에 관한 사항을 정한다.\n\n제2조 (숙박비) 출장 숙박비는 1박에 12만원까지 지급한다.\n"
RESERVE_MB = 16


@contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root and must mount a tmpfs: {mounted.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def leave_free(fs: Path, free_mb: float) -> None:
    """Grow or shrink the filler file of ``fs`` (written bytes: tmpfs keeps no holes) so that
    about ``free_mb`` MiB stay free."""
    filler = fs / "filler"
    filler.touch()
    size = filler.stat().st_size
    target = max(0, size + free_bytes(fs) - int(free_mb * MIB))
    with open(filler, "r+b") as handle:
        handle.truncate(min(size, target))
        handle.seek(0, os.SEEK_END)
        for left in range(target - min(size, target), 0, -MIB):
            handle.write(b"\xff" * min(MIB, left))
    assert abs(free_bytes(fs) - free_mb * MIB) < 2 * MIB, free_bytes(fs) / MIB


def _stored(blob_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(blob_dir)) for p in blob_dir.rglob("*") if p.is_file() and p.name != ".lock")


def test_a_really_full_disk_is_disk_full_and_leaves_no_temp_file(tmp_path):
    """No reserve (KORAG_MIN_FREE_DISK_MB=0) and a disk that really runs out while an upload is
    written: ENOSPC becomes the same refusal, and the partial file is gone."""
    with tmpfs(tmp_path / "fs", 4) as fs:
        blobs = BlobStore(fs / "blobs")
        writer = BlobWriter(blobs, 100 * MIB, "test:1", min_free=0)
        with pytest.raises(DiskFullError, match="disk full"):
            for _ in range(8):
                writer.write(b"x" * MIB)
            writer.finish()
        writer.discard()
        assert _stored(blobs.root) == []


def test_a_writer_stops_at_the_reserve(tmp_path):
    with tmpfs(tmp_path / "fs", 16) as fs:
        blobs = BlobStore(fs / "blobs")
        leave_free(fs, 6)
        with pytest.raises(DiskFullError, match="KORAG_MIN_FREE_DISK_MB"):
            BlobWriter(blobs, 100 * MIB, "test:1", min_free=8 * MIB)  # before a byte is written
        writer = BlobWriter(blobs, 100 * MIB, "test:1", min_free=4 * MIB)
        with pytest.raises(DiskFullError, match="KORAG_MIN_FREE_DISK_MB"):
            for _ in range(6):
                writer.write(b"x" * MIB)  # the reserve is reached at the third MiB
        writer.discard()
        assert _stored(blobs.root) == [] and free_bytes(fs) > 5 * MIB


def _upload(url: str, name: str, data: bytes, wait: bool = True) -> httpx.Response:
    return httpx.post(f"{url}/v1/documents", params={"wait": wait, "timeout": 120},
                      files={"file": (name, data, "text/plain")}, timeout=180)


def _korag(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "korag.cli", *args], env=korag_env(env), capture_output=True,
                          text=True, timeout=300, cwd=cwd)


@pytest.mark.slow
def test_a_full_disk_refuses_uploads_fails_documents_and_keeps_what_is_indexed(tmp_path):
    with tmpfs(tmp_path / "data", 96) as data, tmpfs(tmp_path / "blobs", 48) as blob_fs:
        env = {"KORAG_DATA_DIR": str(data / "korag"), "KORAG_BLOB_DIR": str(blob_fs / "blobs"),
               "KORAG_MIN_FREE_DISK_MB": str(RESERVE_MB)}
        with serve(tmp_path / "serve", env) as server:
            url = server.url
            first = _upload(url, "leave.txt", V1.encode())
            assert first.json()["documents"][0]["status"] == "indexed", first.text
            kept = _stored(blob_fs / "blobs")

            # the blob store's disk under the reserve: 507 before the body is read
            leave_free(blob_fs, RESERVE_MB - 6)
            refused = _upload(url, "trip.txt", V2.encode())
            assert refused.status_code == 507, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["title"] == "Disk full" and "KORAG_MIN_FREE_DISK_MB" in refused.json()["detail"]
            # ... and while it is written: 6 MiB above the reserve, an 12 MiB file
            leave_free(blob_fs, RESERVE_MB + 6)
            big = _upload(url, "big.txt", ("가나다라마바사 " * 600_000).encode()[:12 * MIB])
            assert big.status_code == 507, big.text
            assert _stored(blob_fs / "blobs") == kept  # no partial file left

            # the store's disk under the reserve: the upload is taken, the document fails "disk full"
            leave_free(blob_fs, 40)
            leave_free(data, RESERVE_MB - 6)
            failed = _upload(url, "trip.txt", V2.encode()).json()["documents"][0]
            assert failed["status"] == "failed" and failed["error"].startswith("disk full"), failed
            assert httpx.get(f"{url}/readyz").status_code == 200  # still serving
            hits = httpx.post(f"{url}/v1/search", json={"query": "연차휴가 며칠", "k": 3}, timeout=60).json()
            assert hits["results"] and "연차휴가" in hits["results"][0]["text"]
            assert server.alive()

        # a restart with the disk still full: one line, exit 2, before the store is opened
        for args in (["serve", "--port", "1"], ["ingest", str(tmp_path / "serve" / "leave.txt")]):
            (tmp_path / "serve" / "leave.txt").write_text(V1)
            result = _korag(args, env, tmp_path)
            assert result.returncode == 2, (args, result.stderr)
            lines = [line for line in result.stderr.splitlines() if "korag" in line and "disk full" in line]
            assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
            assert str(data / "korag") in lines[0]

        # space again: everything indexed before is there
        leave_free(data, 80)
        with serve(tmp_path / "serve", env) as server:
            docs = httpx.get(f"{server.url}/v1/documents").json()["documents"]
            assert sorted((d["status"], (d["error"] or "")[:9]) for d in docs) == [("failed", "disk full"),
                                                                                   ("indexed", "")]
            hits = httpx.post(f"{server.url}/v1/search", json={"query": "연차휴가 며칠", "k": 3}, timeout=60).json()
            assert "연차휴가" in hits["results"][0]["text"]
            again = _upload(server.url, "trip.txt", V2.encode()).json()["documents"][0]
            assert again["status"] == "indexed", again
            print(json.dumps({"free_mb": free_bytes(data) / MIB}))
