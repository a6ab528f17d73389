"""Free disk space, checked before korag writes (``KORAG_MIN_FREE_DISK_MB``).

The embedded store memory-maps its files: a write that finds the disk full does not fail with an
error, it kills the process (SIGBUS), at the write and again at every start. So korag keeps a
reserve: below it, uploads are refused (507), documents fail with "disk full", and the commands
that write refuse to start, before anything touches the store.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from korag.errors import KoragError
from korag.settings import Settings

MIB = 1024 * 1024


class DiskFullError(KoragError):
    """Less free space than KORAG_MIN_FREE_DISK_MB where korag writes. Nothing was written."""


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s filesystem (the nearest existing
    ancestor when ``path`` is not created yet)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def check_free(paths: Iterable[Path], min_bytes: int) -> None:
    """Raise :class:`DiskFullError` naming the first path with less than ``min_bytes`` free."""
    for path in paths:
        free = free_bytes(path)
        if free < min_bytes:
            raise DiskFullError(
                f"disk full: {free / MIB:.0f} MiB free on {path}, korag keeps {min_bytes / MIB:.0f} MiB free "
                "(KORAG_MIN_FREE_DISK_MB); free some space and try again")


def written_paths(settings: Settings) -> tuple[Path, ...]:
    """Where korag writes: the data directory (embedded store, keys, webhooks) and the blob store."""
    return tuple(dict.fromkeys((settings.data_dir, settings.blobs_path)))


def check_disk(settings: Settings) -> None:
    """The start-up and per-document check: every place korag writes has its reserve free."""
    check_free(written_paths(settings), settings.min_free_disk_mb * MIB)
