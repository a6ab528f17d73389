"""`korag docs`, `status`, `delete`, `sweep`: the document lifecycle from the command line."""

from __future__ import annotations

import argparse
import datetime
import sys
from contextlib import ExitStack

from ingest.parsing.ocr import availability as ocr_availability
from ingest.pipeline import ParseLimits
from korag.cli.common import EXIT_FAILED_DOCUMENTS, print_json
from korag.cli.root import blob_store, open_registry, queue_app, webhooks
from korag.rules import printable
from korag.services.lifecycle import delete_document, stalled
from korag.services.liveness import Liveness, owner_alive
from korag.services.schemas import Deleted, Document, StatusSummary
from korag.settings import Settings


def _when(ts: float | None) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


STALLED = "stalled: its worker process is gone; a worker's sweep sends it again"


def _stalled_check(settings: Settings, stack: ExitStack):
    """record → stalled? (mid-flight under a worker process that is gone), with the workers' beats
    in the broker's Redis when there is one."""
    liveness = Liveness.from_url(settings.broker_url)
    if liveness is not None:
        stack.callback(liveness.close)
    return lambda record: stalled(record, lambda owner: owner_alive(liveness, owner))


def cmd_docs(args: argparse.Namespace, settings: Settings) -> int:
    with ExitStack() as stack:
        _, registry = open_registry(settings, stack)
        is_stalled = _stalled_check(settings, stack)
        records = [(r, is_stalled(r)) for r in sorted(registry.all(), key=lambda r: r.created_at)]
    for r, stuck in records:
        if args.json:
            print_json(Document.of(r, stuck).model_dump())
        else:
            print(f"{r.status:<9} v{r.version:<3} {r.chunks:>5} chunks  {_when(r.updated_at)}  {r.doc_id}  "
                  f"{printable(r.source)}" + (f"\n          error: {printable(r.error)}" if r.error else "")
                  + (f"\n          {STALLED}" if stuck else ""))
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    with ExitStack() as stack:
        store, registry = open_registry(settings, stack)
        is_stalled = _stalled_check(settings, stack)
        backend = store.backend
        if args.doc_id:
            record = registry.get(args.doc_id)
            if record is None:
                print(f"korag status: no document {printable(args.doc_id)}", file=sys.stderr)
                return EXIT_FAILED_DOCUMENTS
            stuck = is_stalled(record)
            if args.json:
                print_json(Document.of(record, stuck).model_dump())
            else:
                print(f"{record.doc_id}  {printable(record.source)}\n  status {record.status}, version "
                      f"{record.version}, {record.chunks} chunks, updated {_when(record.updated_at)}"
                      + (f"\n  error: {printable(record.error)}" if record.error else "")
                      + (f"\n  {STALLED}" if stuck else ""))
            return 0
        summary = StatusSummary.of(registry.all(), is_stalled, backend,
                                   ocr_availability(ParseLimits.from_settings(settings).ocr))
    if args.json:
        print_json(summary.model_dump())
    else:
        print(f"{summary.done} of {summary.total} documents finished: "
              + ", ".join(f"{s} {n}" for s, n in summary.by_status.items()))
        if summary.stalled:
            print(f"stalled: {summary.stalled} (parsing or embedding under a worker process that is gone; a worker's "
                  "sweep sends them again)")
        print(f"store: {backend}")
        print(f"OCR: {summary.ocr}")
    return 0


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    with webhooks(settings, "korag delete") as hooks:  # document.deleted, as the service's DELETE sends it
        with ExitStack() as stack:  # the store is closed before the events are waited for
            store, registry = open_registry(settings, stack)
            blobs = blob_store(settings)  # the uploaded bytes go too
            # leaves a tombstone for queued messages
            deletion = delete_document(store, registry, args.doc_id, blobs=blobs, webhooks=hooks)
    deleted = deletion.deleted_chunks
    if args.json:
        print_json(Deleted(doc_id=args.doc_id, deleted_chunks=deleted).model_dump())
    else:
        print(f"deleted {printable(args.doc_id)}: {deleted} chunks")
    if not deletion.known:
        print(f"korag delete: no document {printable(args.doc_id)}", file=sys.stderr)
        return EXIT_FAILED_DOCUMENTS
    return 0


def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from workers.sweeper import sweep  # lazy: celery

    app = queue_app(settings, check=False) if settings.broker_url is not None else None
    with ExitStack() as stack:
        _, registry = open_registry(settings, stack)
        swept = sweep(registry, app, settings, liveness=Liveness.from_url(settings.broker_url))
    for r in swept:
        if args.json:
            print_json({"doc_id": r.doc_id, "source": r.source, "status": r.status})
        else:
            print(f"{r.status:<8} {printable(r.source)} ({r.doc_id})")
    return 0
