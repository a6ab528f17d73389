"""``korag`` command line. The commands, flags and JSON fields here are a contract: extend, never rename.

    korag ingest PATH... [--wait] [--json]
    korag search QUERY [-k N] [--json]
    korag chunks [--doc-id ID] [--json]
    korag worker
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from korag.cli_common import (
    EXIT_ERROR,
    EXIT_FAILED_DOCUMENTS,
    STORE_WAIT_S,
    print_json,
    progress,
)
from korag.cli_documents import cmd_delete, cmd_docs, cmd_status, cmd_sweep
from korag.cli_eval import cmd_eval
from korag.errors import KoragError
from korag.settings import Settings


# -- input discovery -------------------------------------------------------------------------------
def discover(paths: Iterable[str]) -> Iterator[tuple[Path, str]]:
    """``(path, source)`` per document. A file is taken as given (and fails later if its type is
    unsupported); a folder contributes its supported files, recursively, in sorted order. The
    source is the path as the caller spelled it."""
    from ingest.parsing import SUPPORTED_SUFFIXES

    seen: set[Path] = set()
    for path, source in _expand(paths, SUPPORTED_SUFFIXES):
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            yield path, source


def _expand(paths: Iterable[str], suffixes: frozenset[str]) -> Iterator[tuple[Path, str]]:
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path)
                if child.is_file() and child.suffix.lower() in suffixes and not any(
                    part.startswith(".") for part in relative.parts
                ):
                    yield child, str(Path(given) / relative)
        else:
            yield path, given


# -- commands ---------------------------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    documents = list(discover(args.paths))
    if not documents:
        print("korag ingest: no documents found in " + ", ".join(args.paths), file=sys.stderr)
        return EXIT_FAILED_DOCUMENTS
    from ingest.pipeline import DocumentInfo

    info = DocumentInfo(tenant=args.tenant, meta=tuple(_pairs(args.meta, "--meta")))
    if settings.broker_url is None:
        results = _ingest_in_process(documents, settings, info, show_progress=True)
    else:
        results = _ingest_queued(documents, settings, info, wait=args.wait)
    failed = 0
    for result in results:
        failed += result.status == "failed"
        if args.json:
            print_json(result.to_json())
        elif result.status == "failed":
            print(f"failed   {result.source}: {result.error}")
        else:
            print(f"{result.status:<8} {result.source}  ({result.chunks} chunks, doc_id {result.doc_id})")
    if not args.json:
        print(f"{len(documents) - failed} of {len(documents)} documents ok", file=sys.stderr)
    return EXIT_FAILED_DOCUMENTS if failed else 0


def _pairs(values: list[str] | None, flag: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes key=value, got {value!r}")
        pairs.append((key, val))
    return pairs


def _ingest_in_process(documents: list[tuple[Path, str]], settings: Settings, info, show_progress: bool) -> Iterator:
    from ingest.embedder import Embedder
    from ingest.pipeline import Pipeline, doc_id_for
    from korag.store import store_session
    from korag.types import IngestResult

    embedder = Embedder.load(settings)
    with store_session(settings, wait_s=STORE_WAIT_S) as store:
        pipeline = Pipeline.build(embedder, store, settings)
        for path, source in progress(documents, show_progress, "ingest"):
            try:
                yield pipeline.ingest_path(path, source, info=info)
            except Exception as exc:  # one document must not stop the batch
                yield IngestResult(source, doc_id_for(source, info.tenant), "failed", error=f"{type(exc).__name__}: {exc}")


def _ingest_queued(documents: list[tuple[Path, str]], settings: Settings, info, wait: bool) -> Iterator:
    from korag.blobs import BlobStore
    from korag.registry import DocumentRegistry
    from korag.store import store_session
    from workers.app import create_app
    from workers.client import enqueue

    app = create_app(settings)
    blobs = BlobStore(settings.blobs_path)
    with store_session(settings, wait_s=STORE_WAIT_S) as store:
        registry = DocumentRegistry(store.client, store.collection)
        sent = [enqueue(app, blobs, registry, path, source, settings.max_file_bytes, info) for path, source in documents]
    for item in progress(sent, wait, "wait"):
        yield item.wait() if wait else item.pending_result()


def _open_retriever(settings: Settings, stack):
    from ingest.embedder import Embedder
    from korag.store import store_session
    from retrieval.search import Retriever

    embedder = Embedder.load(settings)
    store = stack.enter_context(store_session(settings, wait_s=STORE_WAIT_S))
    return Retriever.from_settings(embedder, store, settings)


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from contextlib import ExitStack

    from retrieval.context import citation

    filters = dict(_pairs(args.filter, "--filter")) or None
    with ExitStack() as stack:
        results = _open_retriever(settings, stack).search(
            args.query, k=args.k, filters=filters, mode=args.mode, tenant=args.tenant
        )
    if args.json:
        print_json({"query": args.query, "results": [r.to_json() for r in results]})
        return 0
    if not results:
        print("no results (is anything ingested into collection %r?)" % settings.collection)
    for rank, result in enumerate(results, start=1):
        snippet = " ".join(result.text.split())
        snippet = snippet if len(snippet) <= 200 else snippet[:199] + "…"
        print(f"{rank:>2}. {result.score:.4f}  {citation(result)}\n    {snippet}")
    return 0


def cmd_chunks(args: argparse.Namespace, settings: Settings) -> int:
    from korag.store import store_session

    filters = {"doc_id": args.doc_id} if args.doc_id else None
    with store_session(settings, wait_s=STORE_WAIT_S) as store:
        if not store.exists():
            return 0
        for chunk in store.iter_chunks(filters):
            if args.json:
                print_json({"id": chunk.id, "text": chunk.text, "metadata": chunk.metadata})
            else:
                meta = chunk.metadata
                print(f"{meta.get('source')} #{meta.get('chunk_index')} ({meta.get('token_count')} tokens) {chunk.id}")
                print("    " + " ".join(chunk.text.split())[:200])
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    if settings.broker_url is None:
        print("korag worker: set KORAG_BROKER_URL (e.g. redis://localhost:6379/0)", file=sys.stderr)
        return EXIT_ERROR
    from workers.app import create_app

    app = create_app(settings)
    argv = ["worker", f"--loglevel={args.loglevel}", f"--concurrency={args.concurrency or settings.worker_concurrency}"]
    if args.pool:
        argv.append(f"--pool={args.pool}")
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    app.worker_main(argv)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="korag", description="Korean-first document ingestion and retrieval")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="ingest files or folders")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--wait", action="store_true", help="with a broker: wait for the workers' results")
    p.add_argument("--json", action="store_true", help="one JSON object per document per line")
    p.add_argument("--tenant", help="the tenant these documents belong to")
    p.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata stored with every chunk (repeatable)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="top-k chunks for a question")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("--mode", choices=["dense", "sparse", "hybrid"], help="default: KORAG_SEARCH_MODE (hybrid)")
    p.add_argument("--tenant", help="search only this tenant's documents")
    p.add_argument("--filter", action="append", metavar="KEY=VALUE", help="metadata must match (repeatable)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("chunks", help="list stored chunks")
    p.add_argument("--doc-id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_chunks)

    p = sub.add_parser("docs", help="list documents with status, version, chunks, error, timestamps")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_docs)

    p = sub.add_parser("status", help="one document's state, or progress over all")
    p.add_argument("doc_id", nargs="?", metavar="DOC_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("delete", help="remove a document and every chunk of it")
    p.add_argument("doc_id", metavar="DOC_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("sweep", help="re-queue documents left unfinished by a crash")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("eval", help="retrieval quality on a BEIR-layout dataset")
    p.add_argument("dataset", metavar="DATASET_DIR")
    p.add_argument("--modes", default="dense,sparse,hybrid")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.add_argument("--tune", action="store_true", help="search hybrid fusion weights and print the best")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("worker", help="run a Celery worker for KORAG_BROKER_URL")
    p.add_argument("--concurrency", type=int)
    p.add_argument("--pool", help="prefork (default), solo, threads")
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--hostname")
    p.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        return args.func(args, settings)
    except KoragError as exc:
        print(f"korag {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, FileNotFoundError) as exc:  # settings validation, bad arguments, missing dataset
        print(f"korag {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `korag chunks --json | head`: the reader left, not an error
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
