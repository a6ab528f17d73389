"""Uploaded bytes into the blob store as they arrive: hashed and counted while written, never
held whole in memory, refused the moment they pass the size limit."""

from __future__ import annotations

import hashlib
import os
import tempfile
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath

from korag.blobs import BlobStore


class TooLargeError(ValueError):
    """An upload passed a size limit while it was being read."""


def blob_path(blobs: BlobStore, digest: str) -> Path:
    return blobs._path(digest)


def has_blob(blobs: BlobStore, digest: str) -> bool:
    try:
        return blob_path(blobs, digest).is_file()
    except ValueError:
        return False


def clean_filename(name: str | None) -> str:
    """The last component of a client's file name (either slash), NFC, without control characters;
    ``upload`` when nothing is left. Only the extension matters to korag (it picks the parser)."""
    name = unicodedata.normalize("NFC", name or "")
    name = PureWindowsPath(PurePosixPath(name).name).name
    name = "".join(c for c in name if c.isprintable()).strip()
    if name in ("", ".", ".."):
        return "upload"
    while len(name.encode("utf-8")) > 255:
        name = name[1:]
    return name


class BlobWriter:
    """``write`` chunks, then ``finish()`` → the blob's digest (or ``discard()``)."""

    def __init__(self, blobs: BlobStore, limit: int) -> None:
        self.blobs = blobs
        self.limit = limit
        self.size = 0
        self._hash = hashlib.sha256()
        blobs.root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=blobs.root, prefix=".incoming-")
        self._tmp = Path(name)
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise TooLargeError(f"file of more than {self.limit} bytes is over the limit of {self.limit} bytes "
                                "(KORAG_MAX_FILE_BYTES)")
        self._hash.update(data)
        self._file.write(data)

    def finish(self) -> str:
        self._file.close()
        digest = self._hash.hexdigest()
        target = blob_path(self.blobs, digest)
        if target.exists():
            self._tmp.unlink(missing_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, target)
        return digest

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)
