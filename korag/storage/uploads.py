"""Uploaded bytes into the blob store as they arrive: hashed and counted while written, never
held whole in memory, refused the moment they pass the size limit or the disk's reserve."""

from __future__ import annotations

import errno
import hashlib
import os
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath

from korag.storage.blobs import BlobStore
from korag.storage.disk import MIB, DiskFullError, check_free

CHECK_EVERY = MIB  # bytes written between two looks at the free space


class TooLargeError(ValueError):
    """An upload passed a size limit while it was being read."""


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
    """``write`` chunks, then ``finish()`` → the blob's digest, then ``place()`` (or ``discard()``).

    The bytes stay in a temp file of the writer (``owner``: host:pid) until :meth:`place` puts
    them in the store, pinned: so a request refused after its body was read leaves nothing
    behind. Raises :class:`DiskFullError` when the disk's free space falls under ``min_free``
    bytes (or the disk is really full) while writing: the temp file is removed."""

    def __init__(self, blobs: BlobStore, limit: int, owner: str | None = None, min_free: int = 0) -> None:
        self.blobs = blobs
        self.limit = limit
        self.owner = owner
        self.min_free = min_free
        self.size = 0
        self.digest: str | None = None
        self.pin: Path | None = None
        self._hash = hashlib.sha256()
        self._unchecked = 0
        self._check_disk()
        fd, self._tmp = blobs.temp_file(owner)
        self._file = os.fdopen(fd, "wb")

    def _check_disk(self) -> None:
        if self.min_free > 0:
            check_free([self.blobs.root], self.min_free)

    @contextmanager
    def _no_space_is_disk_full(self) -> Iterator[None]:
        """The disk really filled up (below any reserve): the same refusal, not an I/O error."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise DiskFullError(f"disk full: no space left on {self.blobs.root} while writing an upload "
                                f"({exc.strerror}); free some space and try again") from None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise TooLargeError(f"file of more than {self.limit} bytes is over the limit of {self.limit} bytes "
                                "(KORAG_MAX_FILE_BYTES)")
        self._unchecked += len(data)
        if self._unchecked >= CHECK_EVERY:
            self._unchecked = 0
            self._check_disk()
        self._hash.update(data)
        with self._no_space_is_disk_full():
            self._file.write(data)

    def finish(self) -> str:
        """The whole file is written: its digest (still in the temp file)."""
        with self._no_space_is_disk_full():  # the last buffered bytes may find the disk full
            self._file.close()
        self.digest = self._hash.hexdigest()
        return self.digest

    def place(self) -> str:
        """Into the store, pinned (release the pin once a record refers to the blob)."""
        if self.digest is None:
            raise RuntimeError("place() before finish()")
        self.pin = self.blobs.place(self._tmp, self.digest, self.owner)
        return self.digest

    def discard(self) -> None:
        """Drop the temp file (the bytes of a refused or broken upload)."""
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:  # a full disk refused the last buffered bytes: they are being dropped anyway
                pass
        self._tmp.unlink(missing_ok=True)
