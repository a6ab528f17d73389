"""Helpers shared by the `korag` subcommands."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable

from tqdm import tqdm

EXIT_FAILED_DOCUMENTS = 1
EXIT_ERROR = 2
STORE_WAIT_S = 60.0  # embedded Qdrant: how long to wait for a worker to release the directory
DEFAULT_WAIT_S = 600.0  # `ingest --wait`: how long to wait for the workers' results in all


def print_json(obj: object) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


def progress_of(items: Iterable, total: int, enabled: bool, desc: str) -> Iterable:
    """A progress bar over an iterator of known length, on a terminal only."""
    if not enabled or not sys.stderr.isatty():
        return items
    return tqdm(items, total=total, desc=desc, unit="doc", file=sys.stderr)


def progress(items: list, enabled: bool, desc: str) -> Iterable:
    if not enabled or not sys.stderr.isatty():
        return items
    return tqdm(items, desc=desc, unit="doc", file=sys.stderr)


