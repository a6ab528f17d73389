"""``korag`` command line. The commands, flags and JSON fields here are a contract: extend, never rename.

    korag ingest PATH... [--wait [--timeout S]] [--json]
    korag search QUERY [-k N] [--json]
    korag chunks [--doc-id ID] [--json]
    korag worker [--queues parse|embed|parse,embed]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path

from ingest.discovery import scan
from korag.cli import root
from korag.cli.bench import add_bench_commands
from korag.cli.common import (
    DEFAULT_WAIT_S,
    EXIT_ERROR,
    EXIT_FAILED_DOCUMENTS,
    print_json,
    progress_of,
)
from korag.cli.documents import cmd_delete, cmd_docs, cmd_status, cmd_sweep
from korag.cli.eval import cmd_eval
from korag.cli.keys import add_commands as add_keys_commands
from korag.cli.serve import add_commands as add_serve_commands
from korag.cli.store import add_commands as add_store_commands
from korag.errors import KoragError
from korag.rules import check_tenant, printable
from korag.services.schemas import ChunkOut, IngestOutcome, SearchHit, SearchOutput
from korag.settings import Settings
from korag.storage.disk import check_disk
from korag.storage.filters import build_filter
from korag.types import DocumentInfo, IngestResult, doc_id_for
from retrieval.context import citation


# -- commands ---------------------------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    info = DocumentInfo(tenant=args.tenant, meta=tuple(_pairs(args.meta, "--meta")))
    if args.timeout <= 0:
        raise ValueError("--timeout takes a number of seconds above 0")
    check_disk(settings)  # a full disk would kill the embedded store's writes (SIGBUS): one line, exit 2
    found = list(scan(args.paths))
    documents = [(f.path, f.source) for f in found if f.problem is None]
    skipped = [IngestResult(f.source, doc_id_for(f.source, info.tenant), "failed", error=f.problem)
               for f in found if f.problem is not None]
    if not found:
        print("korag ingest: no documents found in " + ", ".join(printable(p) for p in args.paths), file=sys.stderr)
        return EXIT_FAILED_DOCUMENTS
    if not documents:
        results: Iterable = []
    elif settings.broker_url is None:
        results = _ingest_in_process(documents, settings, info, show_progress=True)
    else:
        results = _ingest_queued(documents, settings, info, wait=args.wait, timeout_s=args.timeout)
    failed = total = 0
    for result in itertools.chain(skipped, results):
        total += 1
        failed += result.status == "failed" or result.error is not None
        if args.json:
            print_json(IngestOutcome.of(result).model_dump())
        elif result.error is not None:
            print(f"{result.status:<8} {printable(result.source)}: {printable(result.error)}")
        else:
            print(f"{result.status:<8} {printable(result.source)}  ({result.chunks} chunks, doc_id {result.doc_id})")
    if not args.json:
        print(f"{total - failed} of {total} documents ok", file=sys.stderr)
    return EXIT_FAILED_DOCUMENTS if failed else 0


def _pairs(values: list[str] | None, flag: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values if values is not None else []:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes key=value, got {value!r}")
        pairs.append((key, val))
    return pairs


def _ingest_in_process(documents: list[tuple[Path, str]], settings: Settings, info: DocumentInfo,
                       show_progress: bool) -> Iterator[IngestResult]:
    with root.webhooks(settings, "korag ingest") as hooks:  # document.indexed/failed, as the service sends them
        with ExitStack() as stack:  # the store is closed before the events are waited for
            batch = root.batch_ingest(root.open_pipeline(settings, stack), settings)
            for result in progress_of(batch.run(documents, info), len(documents), show_progress, "ingest"):
                if hooks is not None:
                    hooks.report(result, info.tenant)
                yield result


def _ingest_queued(documents: list[tuple[Path, str]], settings: Settings, info: DocumentInfo, wait: bool,
                   timeout_s: float) -> Iterator[IngestResult]:
    from korag.services.queue_client import BrokerView, enqueue, wait_all  # lazy: celery, only with a broker
    from workers.sweeper import resend  # lazy: celery, only with a broker

    app = root.queue_app(settings)  # the broker answers before anything is recorded as queued
    broker = BrokerView(app) if wait else None  # who the broker is now: a restart during the wait is noticed
    blobs = root.blob_store(settings)
    with ExitStack() as stack:
        _, registry = root.open_registry(settings, stack)
        sent = [enqueue(app, blobs, registry, path, source, settings.max_file_bytes, info) for path, source in documents]
    if wait:
        outcomes = wait_all(sent, timeout_s, look=lambda ids: _records(settings, ids), broker=broker,
                            resend=lambda records: resend(app, settings, records), sweep_after_s=settings.sweep_age_s)
        yield from progress_of(outcomes, len(sent), True, "wait")
    else:
        for item in sent:
            yield item.pending_result()


def _records(settings: Settings, doc_ids: list[str]) -> dict:
    """The registry's records (tombstones included) of ``doc_ids``, read in one short session, so
    an embedded store is held only for the moment (the workers write to it)."""
    with ExitStack() as stack:
        _, registry = root.open_registry(settings, stack)
        return {doc_id: registry.get(doc_id, include_deleted=True) for doc_id in doc_ids}


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    check_tenant(args.tenant)
    filters = dict(_pairs(args.filter, "--filter")) or None
    build_filter(filters)  # refuse an unusable key before the model loads
    with ExitStack() as stack:
        retriever = root.open_retriever(settings, stack)
        response = retriever.search_with_notes(args.query, k=args.k, filters=filters, mode=args.mode,
                                               tenant=args.tenant, context=args.context)
        results = response.results
        empty = not results and (not retriever.store.exists() or retriever.store.count() == 0)
    if args.json:
        output = SearchOutput(query=args.query, results=[SearchHit.of(r) for r in results], notice=response.notice)
        print_json(output.cli_json())
        return 0
    if response.notice is not None:
        print(f"note: {response.notice}", file=sys.stderr)
    if empty:
        print("no results: collection %r is empty (ingest documents with `korag ingest PATH`)" % settings.collection)
    elif not results:
        print("no results")
    for rank, result in enumerate(results, start=1):
        snippet = " ".join(result.text.split())
        snippet = snippet if len(snippet) <= 200 else snippet[:199] + "…"
        print(f"{rank:>2}. {result.score:.4f}  {citation(result)}\n    {printable(snippet)}")
    return 0


def cmd_chunks(args: argparse.Namespace, settings: Settings) -> int:
    filters = {"doc_id": args.doc_id} if args.doc_id else None
    with ExitStack() as stack:
        store = root.open_store(settings, stack)
        if not store.exists():
            return 0
        for chunk in store.iter_chunks(filters):
            if args.json:
                print_json(ChunkOut.of(chunk).model_dump())
            else:
                meta = chunk.metadata
                print(f"{printable(meta.get('source'))} #{meta.get('chunk_index')} ({meta.get('token_count')} tokens) "
                      f"{chunk.id}")
                print("    " + printable(" ".join(chunk.text.split())[:200]))
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    if settings.broker_url is None:
        print("korag worker: set KORAG_BROKER_URL (e.g. redis://localhost:6379/0)", file=sys.stderr)
        return EXIT_ERROR
    from workers.app import create_app, queues_for  # lazy: celery, for `korag worker` only

    try:
        queues = queues_for(args.queues) if args.queues else None
    except ValueError as exc:
        print(f"korag worker: {exc}", file=sys.stderr)
        return EXIT_ERROR
    app = create_app(settings)  # the worker's root: its tasks take their objects from it (workers.root)
    argv = ["worker", f"--loglevel={args.loglevel}", f"--concurrency={args.concurrency or settings.worker_concurrency}"]
    if queues is not None:
        argv.append(f"--queues={','.join(queues)}")
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
    p.add_argument("--meta", action="append", metavar="KEY=VALUE",
                   help="metadata stored with every chunk (repeatable); korag's own fields and keys with . [ ] \" "
                        "are refused")
    p.add_argument("--timeout", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS",
                   help=f"with --wait: stop waiting after this long in all (default {DEFAULT_WAIT_S:g}); documents "
                        "without a result are reported queued, with an error")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="top-k chunks for a question")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("--mode", choices=["dense", "sparse", "hybrid"], help="default: KORAG_SEARCH_MODE (hybrid)")
    p.add_argument("--context", choices=["chunk", "section"],
                   help="chunk: the top k chunks; section: the top k runs of a section (up to the model's limit) "
                        "that matching chunks belong to, each once. Default: KORAG_SEARCH_CONTEXT (chunk)")
    p.add_argument("--tenant", help="search only this tenant's documents")
    p.add_argument("--filter", action="append", metavar="KEY=VALUE",
                   help="metadata must match (repeatable); 3 also matches the number 3, true the boolean")
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
    p.add_argument("--contexts", metavar="LIST",
                   help="chunk, section or chunk,section: what each search returns (korag search --context); "
                        "the first is reported under modes, every one under by_context. Default: KORAG_SEARCH_CONTEXT")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.add_argument("--tune", action="store_true", help="search hybrid fusion weights and print the best")
    p.add_argument("--failures", type=int, default=0, metavar="N",
                   help="print the first N questions per mode whose gold passage missed the top k")
    p.set_defaults(func=cmd_eval)

    bench = add_bench_commands(sub)
    add_store_commands(sub, bench)  # korag migrate, korag bench store
    add_keys_commands(sub)  # korag keys add/list/revoke
    add_serve_commands(sub)  # korag serve

    p = sub.add_parser("worker", help="run a Celery worker for KORAG_BROKER_URL")
    p.add_argument("--concurrency", type=int)
    p.add_argument("--pool", help="prefork (default), solo, threads")
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--hostname")
    p.add_argument("--queues", metavar="ROLES",
                   help="parse (CPU: parsing, chunking, keyword terms), embed (the model, upsert; GPU) or parse,embed "
                        "(the default: a document from start to end)")
    p.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        return args.func(args, settings)
    except BrokenPipeError:  # `korag chunks --json | head`: the reader left, not an error
        sys.stdout = open(os.devnull, "w")
        return 0
    except (KoragError, ValueError, OSError) as exc:
        # Setup errors (store, broker, model, settings, bad arguments, a missing dataset): one line,
        # exit 2. A document's own failure never gets here; it is reported per document.
        print(f"korag {args.command}: {printable(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
