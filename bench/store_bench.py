"""Thin wrapper kept for old instructions: the store benchmark is ``korag bench store``
(``korag.bench.store``).

    python bench/store_bench.py [--points 100000] [--local-points 5000] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from korag.cli.store import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["bench", "store", *sys.argv[1:]]))
