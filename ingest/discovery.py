"""Which files a path given on the command line names: every supported document under a folder,
in sorted order, and every path left out with the reason (not a regular file, a symbolic link out
of the folder, a name no source may hold). The CLI's ``korag ingest`` and the demo both read
their inputs through :func:`scan`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from korag.rules import normalize_source, source_problem


@dataclass(frozen=True)
class Found:
    """A document to ingest (``path``), or something given or found that is not (``problem``)."""

    path: Path | None
    source: str
    problem: str | None = None


def discover(paths: Iterable[str]) -> Iterator[tuple[Path, str]]:
    """``(path, source)`` per document to ingest; see :func:`scan` for what is left out and why."""
    for found in scan(paths):
        if found.problem is None:
            yield found.path, found.source


def scan(paths: Iterable[str]) -> Iterator[Found]:
    """Every document to ingest and every path left out with the reason. A file is taken as given
    (and fails later if its type is unsupported) unless it is not a regular file; a folder
    contributes its supported files, recursively, in sorted order, never following a symbolic
    link out of the folder. The source is the path as the caller spelled it, in NFC, with
    ``dir/..`` collapsed, so one file is one document however it is reached; a path with a
    character no source may hold (a control character ...) is left out with the reason."""
    from ingest.parsing import SUPPORTED_SUFFIXES  # lazy: it loads unstructured (0.5 s) and `korag --help` need not

    seen: set[Path] = set()
    for found in _expand(paths, SUPPORTED_SUFFIXES):
        if found.problem is None and (problem := source_problem(found.source)) is not None:
            found = Found(None, found.source, problem)
        if found.problem is None:
            key = found.path.resolve()
            if key in seen:
                continue
            seen.add(key)
        yield found


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def _regular(path: Path, source: str) -> Found:
    """Checked with stat before anything opens it: reading a FIFO blocks, a device never ends."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing or unreadable: the ingest reports it with the reason
        return Found(path, source)
    if not stat.S_ISREG(mode):
        return Found(None, source, f"not a regular file ({_kind(mode)}); korag reads regular files only")
    return Found(path, source)


def _expand(paths: Iterable[str], suffixes: frozenset[str]) -> Iterator[Found]:
    for given in paths:
        path = Path(given)
        if path.is_dir():
            yield from _walk(path, path.resolve(), given, path, suffixes)
        else:
            yield _regular(path, normalize_source(given))


def _walk(folder: Path, root: Path, given: str, top: Path, suffixes: frozenset[str]) -> Iterator[Found]:
    """Depth first in name order (the order of sorting the paths), hidden entries left out."""
    def source_of(child: Path) -> str:
        return normalize_source(str(Path(given) / child.relative_to(top)))

    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        yield Found(None, source_of(folder), f"cannot read folder: {exc.strerror or exc}; its files were not ingested")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        child = Path(entry.path)
        wanted = child.suffix.lower() in suffixes
        try:
            if entry.is_symlink():
                target = child.resolve()
                is_dir = target.is_dir()
                if not target.is_relative_to(root):
                    if is_dir or wanted:
                        yield Found(None, source_of(child),
                                    f"symbolic link to {target}, outside {given}: not followed")
                    continue
                if is_dir:  # a folder inside the tree: its files are reached through the folder itself
                    continue
            elif entry.is_dir(follow_symlinks=False):
                yield from _walk(child, root, given, top, suffixes)
                continue
            if wanted:
                yield _regular(child, source_of(child))
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop
            yield Found(None, source_of(child), f"cannot read: {getattr(exc, 'strerror', None) or exc}")
