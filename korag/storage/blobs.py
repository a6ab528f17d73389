"""Content-addressed blob store: how a document's bytes travel from a client to a worker.

Blobs are named by their SHA-256, never by the caller's file name, under a directory both
sides can read (a shared volume in compose). Writes are atomic (temp file + rename).

**Retention.** A blob lives while a registry record refers to it (``record.blob``) and is removed
when none does any more (:func:`korag.services.lifecycle.release_blob`). Between the moment a writer puts
a blob in place and the moment its record refers to it, the writer *pins* it (a file under
``.pins/`` naming the writer's process). Placing a blob and removing one both happen under one
lock (``.lock``, ``flock``, shared by every process on the volume), and a remover checks the pins
before the records, while a writer claims its record before it drops its pin: so a blob is never
removed between an upload of the same bytes and its record. Temp files (``.incoming-*``) and pins
name their writer (``host:pid``), so what a dead process left behind can be told and removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HEX = re.compile(r"^[0-9a-f]{64}$")
INCOMING = ".incoming-"
PINS = ".pins"
PREPARED = "prepared"


class BlobStore:
    _threads = threading.Lock()  # flock is per open file; this keeps one process's threads in line too

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, digest: str) -> Path:
        if not _HEX.match(digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        return self.root / digest[:2] / digest

    @property
    def prepared(self) -> Path:
        """Where parse workers leave prepared documents (``<request>.json``) for embed workers."""
        return self.root / PREPARED

    # -- writing ----------------------------------------------------------------------------------
    def temp_file(self, owner: str | None) -> tuple[int, Path]:
        """A new ``.incoming-*`` file (descriptor, path) named after its writer ``owner`` (host:pid)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.root, prefix=INCOMING, suffix=f"@{owner}" if owner else "")
        return fd, Path(name)

    def put(self, data: bytes, owner: str | None = None) -> str:
        """Store ``data``; with ``owner`` (host:pid) the blob stays pinned while that process lives."""
        return self.put_pinned(data, owner)[0]

    def put_pinned(self, data: bytes, owner: str | None) -> tuple[str, Path | None]:
        """Store ``data``: its digest and, with ``owner``, the pin that keeps it until the caller's
        record refers to it (``korag.services.lifecycle.release_upload`` drops it)."""
        digest = hashlib.sha256(data).hexdigest()
        fd, tmp = self.temp_file(owner)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            pin = self.place(tmp, digest, owner)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return digest, pin

    def place(self, tmp: Path, digest: str, owner: str | None) -> Path | None:
        """Move a written temp file into place as blob ``digest`` (dropped when the blob is there
        already) and, with ``owner``, pin it. Returns the pin."""
        path = self._path(digest)
        with self.lock():
            if path.exists():
                tmp.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, path)
            return self._pin(digest, owner) if owner else None

    def _pin(self, digest: str, owner: str) -> Path:
        folder = self.root / PINS
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=f"{digest}.", suffix=f"@{owner}")
        os.close(fd)
        return Path(name)

    @staticmethod
    def unpin(pin: Path | None) -> None:
        if pin is not None:
            pin.unlink(missing_ok=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across processes (``flock`` on ``<root>/.lock``) and threads."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._threads, open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- reading ----------------------------------------------------------------------------------
    def get(self, digest: str) -> bytes:
        path = self._path(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"blob {digest} is not in {self.root}; client and worker must share KORAG_BLOB_DIR"
            ) from None

    def size(self, digest: str) -> int:
        """Bytes of the blob ``digest``; 0 when it is not there or ``digest`` names no blob."""
        try:
            return self._path(digest).stat().st_size
        except (OSError, ValueError):
            return 0

    def has(self, digest: str) -> bool:
        try:
            return self._path(digest).is_file()
        except ValueError:
            return False

    def digests(self) -> Iterator[str]:
        """Every stored blob's digest."""
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if len(folder.name) == 2 and folder.is_dir():
                yield from (p.name for p in folder.iterdir() if _HEX.match(p.name) and p.name[:2] == folder.name)

    def pins(self, digest: str | None = None) -> Iterator[tuple[Path, str]]:
        """``(pin, owner)`` of one blob's pins, or of all."""
        folder = self.root / PINS
        if not folder.is_dir():
            return
        for pin in folder.glob(f"{digest}.*" if digest is not None else "*"):
            yield pin, pin.name.rpartition("@")[2]

    def temp_files(self) -> Iterator[tuple[Path, str, float]]:
        """``(path, owner or "", age in seconds)`` of every temp file a writer left, here or in
        a blob folder or among the prepared documents."""
        now = time.time()
        for folder in (self.root, *(p for p in self.root.glob("??") if p.is_dir()), self.prepared):
            if not folder.is_dir():
                continue
            for path in folder.glob(f"{INCOMING}*"):
                try:
                    age = now - path.stat().st_mtime
                except FileNotFoundError:  # finished meanwhile
                    continue
                owner = path.name.rpartition("@")[2] if "@" in path.name else ""
                yield path, owner, age

    # -- removing ---------------------------------------------------------------------------------
    def remove(self, digest: str) -> bool:
        """Unlink a blob (call under :meth:`lock`, after checking nothing refers to it)."""
        try:
            self._path(digest).unlink()
        except FileNotFoundError:
            return False
        return True
