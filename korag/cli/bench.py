"""`korag bench ...`: benchmarks users run on their own machine and corpus."""

from __future__ import annotations

import argparse
from pathlib import Path

from korag.bench.ingest import DEFAULT_CORPUS, print_human, run
from korag.cli.common import print_json
from korag.settings import Settings


def cmd_bench_ingest(args: argparse.Namespace, settings: Settings) -> int:
    overrides = {} if args.workers is None else {"parse_workers": args.workers}
    report = run(Path(args.dataset), args.limit, args.model, show_progress=not args.json, settings_overrides=overrides,
                 extra=args.add)
    if args.json:
        print_json(report)
    else:
        print_human(report)
    return 0


def add_bench_commands(sub) -> argparse._SubParsersAction:
    """``korag bench``'s parser; returns its subcommands so other benchmarks can be added."""
    p = sub.add_parser("bench", help="measure korag on this machine")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("ingest", help="whole pipeline vs the model alone vs a naive baseline")
    b.add_argument("dataset", nargs="?", default=str(DEFAULT_CORPUS), metavar="DATASET_DIR")
    b.add_argument("--limit", type=int, help="first N passages only")
    b.add_argument("--model", help="default: the offline all-MiniLM-L6-v2 package")
    b.add_argument("--workers", type=int, help="parser processes (default KORAG_PARSE_WORKERS: one per core)")
    b.add_argument("--add", nargs="+", type=Path, default=[], metavar="FILE",
                   help="also ingest these files (scanned PDFs, images: the report gives their OCR time)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench_ingest)
    return bench
