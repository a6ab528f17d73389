"""`korag migrate` and `korag bench store`: the embedded store's own commands.

``korag.cli.build_parser`` registers them with ``add_commands(sub, bench)`` (``bench``: what
``korag.cli.bench.add_bench_commands`` returns); :func:`main` runs them without the rest of the
CLI (tests, ``bench/store_bench.py``).
"""

from __future__ import annotations

import argparse
import sys

from korag.bench.store import render, run
from korag.cli.common import EXIT_ERROR, print_json
from korag.errors import StoreError
from korag.settings import Settings
from korag.storage.migrate import migrate


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    if settings.qdrant_url is not None:
        print("korag migrate: KORAG_QDRANT_URL is set; migrate converts the embedded store under KORAG_DATA_DIR "
              "(unset KORAG_QDRANT_URL)", file=sys.stderr)
        return EXIT_ERROR
    try:
        done = migrate(settings.qdrant_path)
    except StoreError as exc:
        print(f"korag migrate: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print_json(done.to_json())
    elif not done.migrated:
        print(f"nothing to migrate: {done.reason}")
    else:
        for copy in done.collections:
            print(f"{copy.name}: {copy.points} points")
        print(f"migrated {done.points} points in {done.seconds} s into {done.store}; the old store is kept as "
              f"{done.backup}")
    return 0


def cmd_bench_store(args: argparse.Namespace, settings: Settings) -> int:
    result = run(points=args.points, local_points=args.local_points, upkeep=args.upkeep,
                 store_process=args.store_process)
    if args.json:
        print_json(result)
    else:
        print(render(result))
    return 0


def add_commands(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction | None = None) -> None:
    """Register ``migrate`` on ``sub`` and ``store`` on ``bench`` (the subcommands of ``korag bench``
    that ``korag.cli.bench.add_bench_commands`` returns; None: a ``bench`` parser of its own)."""
    p = sub.add_parser("migrate", help="copy an embedded store of the old local mode into the new one (no re-embedding)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_migrate)

    if bench is None:
        bench = sub.add_parser("bench", help="measure korag on this machine").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("store", help="the embedded store against the old local mode: upsert, search, reopen")
    p.add_argument("--points", type=_positive, default=100_000, help="points for the embedded store (default 100000)")
    p.add_argument("--local-points", type=_count, default=5_000,
                   help="points for the old local mode (default 5000: it writes ~50-100 points/s; 0: skip it)")
    p.add_argument("--upkeep", choices=("inline", "process", "both"), default="inline",
                   help="the embedded store's index upkeep (KORAG_EDGE_UPKEEP): inline (this benchmark's default), process "
                   "(korag's default), or both in one run (process under 'process')")
    p.add_argument("--store-process", action="store_true",
                   help="the embedded store in a store process (KORAG_EDGE_STORE_PROCESS): the figures of a server "
                   "process that holds no Edge object")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_store)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a count")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("needs at least 1 point")
    return value


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="korag")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args, settings if settings is not None else Settings())
