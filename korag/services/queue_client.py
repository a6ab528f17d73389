"""The client side of the queue: put a document's bytes in the blob store, record it as
``queued``, send a task naming the blob, and (optionally) wait for the worker's result."""

from __future__ import annotations

import base64
import json
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath

from celery import Celery
from celery.exceptions import OperationalError
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult

from ingest.pipeline import read_document, unreadable
from korag.errors import KoragError
from korag.messages import EMBED_TASK, INGEST_TASK, EmbedMessage, IngestMessage
from korag.services.lifecycle import queue_request, registry_outcome, release_upload
from korag.services.liveness import redis_client, redis_module
from korag.storage.blobs import BlobStore
from korag.storage.registry import SUPERSEDED, DocumentRecord, DocumentRegistry, this_process
from korag.types import DocumentInfo, DocumentState, IngestResult, doc_id_for

BROKER_PROBE_S = 3.0


class BrokerUnreachableError(KoragError):
    """KORAG_BROKER_URL names a broker that does not answer. A setup error: nothing was queued."""


def check_broker(app: Celery, timeout_s: float = BROKER_PROBE_S) -> None:
    """Connect to the broker once, within ``timeout_s``, before anything is recorded as queued."""
    connection = app.connection_for_write(connect_timeout=timeout_s)
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout_s)
    except Exception as exc:  # kombu OperationalError, socket errors, a malformed URL
        raise BrokerUnreachableError(
            f"the broker {connection.as_uri()} (KORAG_BROKER_URL) does not answer within {timeout_s:g} s "
            f"({type(exc).__name__}: {exc}); nothing was queued. Start it, fix KORAG_BROKER_URL, or unset "
            "it to ingest in-process"
        ) from exc
    finally:
        connection.release()


@dataclass(frozen=True)
class CeleryQueue:
    """The queue as the service sees it, handed in by the service's root: the one place that
    knows it is Celery (the service imports no Celery)."""

    app: Celery

    def check(self, timeout_s: float = BROKER_PROBE_S) -> None:
        check_broker(self.app, timeout_s)

    def send(self, message: IngestMessage, countdown: float | None = None) -> AsyncResult:
        """:func:`send` through this queue's app."""
        return send(self.app, message, countdown)


@dataclass
class Enqueued:
    source: str
    doc_id: str
    task: AsyncResult | None  # None when the document failed before it could be sent
    failure: str | None = None
    request: str | None = None  # the request that owns the document from the send on (None without a registry)
    before: tuple[int, str | None] = (0, None)  # indexed version and content hash before it, to tell unchanged

    def pending_result(self) -> IngestResult:
        if self.task is None:
            return IngestResult(self.source, self.doc_id, "failed", error=self.failure)
        return IngestResult(self.source, self.doc_id, "queued", extra={"task_id": self.task.id})

    def wait(self, timeout: float | None = None) -> IngestResult:
        """The worker's result; after ``timeout`` seconds without one, ``queued`` with an error."""
        return self._wait(timeout, timeout)

    def _wait(self, remaining_s: float | None, total_s: float | None) -> IngestResult:
        if self.task is None:
            return self.pending_result()
        try:
            if remaining_s is not None and remaining_s <= 0 and not self.task.ready():
                raise CeleryTimeoutError()  # Celery reads a timeout of 0 as "wait forever"
            value = self.task.get(timeout=remaining_s, propagate=False)
        except CeleryTimeoutError:
            return IngestResult(
                self.source, self.doc_id, "queued", extra={"task_id": self.task.id},
                error=f"no result within {total_s:g} s: is a worker running? The document stays queued for the "
                      f"workers (korag status {self.doc_id})",
            )
        if self.task.failed():
            return IngestResult(self.source, self.doc_id, "failed", error=f"worker error: {type(value).__name__}: {value}")
        return IngestResult.from_json(value)

    def answered(self) -> bool:
        """The task has a result: a hint that the registry may have news (never the outcome itself:
        a worker's error, e.g. a broker ConnectionError, says nothing of what the registry recorded).
        False while the result backend does not answer."""
        try:
            return self.task is not None and self.task.ready()
        except Exception:  # noqa: BLE001 - the broker is down or restarting: no hint now
            return False


class BrokerView:
    """What the broker itself holds, read directly (Redis only; elsewhere it cannot tell): who it
    is (Redis's ``run_id`` changes when the server restarts) and which documents have a message
    waiting in a queue or taken by a worker and not yet acknowledged (kombu's ``unacked`` hash)."""

    def __init__(self, app: Celery) -> None:
        self._client = redis_client(str(app.conf.broker_url) if app.conf.broker_url else None)

    def run_id(self) -> str | None:
        """This broker server's identity; None when it does not answer or cannot tell."""
        if self._client is None:
            return None
        try:
            return str(self._client.info("server").get("run_id"))
        except redis_module().RedisError:
            return None

    def documents(self) -> set[str] | None:
        """The doc_ids of every message the broker holds (waiting or unacknowledged); None when it
        cannot tell."""
        if self._client is None:
            return None
        found: set[str] = set()
        try:
            for key in self._client.scan_iter(_type="list"):
                found.update(_doc_id(raw) for raw in self._client.lrange(key, 0, -1))
            for raw in self._client.hvals("unacked"):
                found.add(_doc_id(raw, unacked=True))
        except redis_module().RedisError:
            return None
        found.discard(None)
        return found


def _doc_id(raw: bytes, unacked: bool = False) -> str | None:
    """The doc_id a kombu message (JSON; its body base64 JSON ``[args, kwargs, embed]``) names."""
    try:
        message = json.loads(raw)
        message = message[0] if unacked else message
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        kwargs = json.loads(body)[1]
        return str(kwargs["doc_id"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None  # not one of ours


LOOK_EVERY_S = 15.0  # `--wait` reads the registry at least this often, besides when a result arrives
POLL_S = 1.0
LOST_AFTER_LOOKS = 2  # a queued document is lost when this many looks in a row find no message for it


@dataclass
class _Watch:
    """One document being waited for: its outcome once the registry has one, and how many looks
    in a row after a broker restart found it queued with no message in the broker."""

    item: Enqueued
    result: IngestResult | None = None
    unsent: int = 0
    resent: bool = False
    answered: bool = False  # its task has a result (a hint to look, once)


def wait_all(sent: Iterable[Enqueued], timeout_s: float,
             look: Callable[[list[str]], dict[str, DocumentRecord | None]] | None = None,
             broker: BrokerView | None = None,
             resend: Callable[[list[DocumentRecord]], None] | None = None,
             sweep_after_s: float | None = None) -> Iterator[IngestResult]:
    """Outcomes in order, waiting ``timeout_s`` seconds in all. With ``look`` (the registry's
    records of some doc_ids, read in one short session), each outcome is what the registry says:
    a task's result only says when to look. With ``broker`` too, a broker restart is noticed, and
    a document still ``queued`` for which the broker holds no message on two looks in a row (its
    message went with the broker's data) is sent again through ``resend`` (the sweeper's), once.
    What is unfinished at the end comes back with its registry status and an error that says why:
    lost with the broker (and what recovers it), or no result in time."""
    items = list(sent)
    if look is None:  # no registry: the workers' results are all there is
        deadline = time.monotonic() + timeout_s
        for item in items:
            yield item._wait(deadline - time.monotonic(), timeout_s)
        return
    watches = [_Watch(item, item.pending_result() if item.task is None else None) for item in items]
    waiter = _Waiter(watches, look, broker, resend)
    deadline = time.monotonic() + timeout_s
    next_look, shown = 0.0, 0
    while True:
        open_ = [w for w in watches if w.result is None]
        if not open_ or time.monotonic() >= deadline:
            break
        answered = [w for w in open_ if not w.answered and w.item.answered()]
        for watch in answered:
            watch.answered = True  # looked at once for it; a result that disagrees with the registry is no news
        if waiter.broker_restarted() or answered or time.monotonic() >= next_look:
            waiter.look(open_)
            next_look = time.monotonic() + LOOK_EVERY_S
        while shown < len(watches) and watches[shown].result is not None:
            yield watches[shown].result
            shown += 1
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
    yield from waiter.finish(timeout_s, sweep_after_s)[shown:]


class _Waiter:
    def __init__(self, watches: list[_Watch], look: Callable[[list[str]], dict[str, DocumentRecord | None]],
                 broker: BrokerView | None, resend: Callable[[list[DocumentRecord]], None] | None) -> None:
        self.watches, self._look, self.broker, self._resend = watches, look, broker, resend
        self.run_id = broker.run_id() if broker is not None else None
        self.restarted = False  # the broker restarted since the wait began
        self.records: dict[str, DocumentRecord | None] = {}

    def broker_restarted(self) -> bool:
        """Newly noticed: the broker answers under another ``run_id`` (it restarted; maybe empty)."""
        if self.broker is None:
            return False
        now = self.broker.run_id()
        if now is None or now == self.run_id:
            return False
        if self.run_id is not None:
            self.restarted = True
        self.run_id = now
        return self.restarted

    def look(self, watches: list[_Watch]) -> None:
        """Read the registry for ``watches``: settle those it has an outcome for; after a broker
        restart, send again the queued ones whose message the broker no longer holds."""
        self.records.update(self._look([w.item.doc_id for w in watches]))
        waiting = []
        for watch in watches:
            item, record = watch.item, self.records.get(watch.item.doc_id)
            watch.result = registry_outcome(record, item.source, item.doc_id, item.request, item.before)
            if watch.result is None:
                waiting.append(watch)
        if self.restarted and self.broker is not None:
            self._find_lost(waiting)

    def _find_lost(self, waiting: list[_Watch]) -> None:
        held = self.broker.documents()
        if held is None:
            return
        lost = []
        for watch in waiting:
            record = self.records.get(watch.item.doc_id)
            queued = record is not None and record.status == DocumentState.QUEUED
            watch.unsent = watch.unsent + 1 if queued and watch.item.doc_id not in held else 0
            if watch.unsent >= LOST_AFTER_LOOKS and not watch.resent and self._resend is not None:
                lost.append(watch)
        if lost:
            self._resend([self.records[w.item.doc_id] for w in lost])
            for watch in lost:
                watch.resent, watch.unsent = True, 0

    def finish(self, timeout_s: float, sweep_after_s: float | None) -> list[IngestResult]:
        """Every watch's outcome; the unfinished ones read once more, and told apart: lost with the
        broker's data, or just not finished in time."""
        open_ = [w for w in self.watches if w.result is None]
        if open_:
            self.look(open_)
        held = self.broker.documents() if self.broker is not None and any(
            w.result is None for w in self.watches) else None
        return [w.result if w.result is not None else self._unfinished(w, held, timeout_s, sweep_after_s)
                for w in self.watches]

    def _unfinished(self, watch: _Watch, held: set[str] | None, timeout_s: float,
                    sweep_after_s: float | None) -> IngestResult:
        item = watch.item
        record = self.records.get(item.doc_id)
        status = str(record.status) if record is not None else "queued"
        extra = {"task_id": item.task.id} if item.task is not None else {}
        if held is not None and item.doc_id not in held:
            restart = "the broker restarted and " if self.restarted else ""
            after = f" once it has been unfinished for {sweep_after_s:g} s" if sweep_after_s is not None else ""
            error = (f"{status} in the registry, but {restart}the broker holds no message for it (lost with the "
                     f"broker's data, unless a worker is still on it): a worker's periodic sweep (or `korag "
                     f"sweep`) sends it again{after}; or ingest it again")
        else:
            error = (f"no result within {timeout_s:g} s: is a worker running? The registry has it {status}; it "
                     f"stays queued for the workers (korag status {item.doc_id})")
        return IngestResult(item.source, item.doc_id, "queued", extra=extra, error=error)


def send(app: Celery, message: IngestMessage, countdown: float | None = None) -> AsyncResult:
    """Send a document (its blob) to the parse workers."""
    return app.send_task(INGEST_TASK, kwargs=message.to_kwargs(), countdown=countdown)


def send_embed(app: Celery, message: EmbedMessage, countdown: float | None = None,
               task_id: str | None = None) -> AsyncResult:
    """Send a parsed document (its prepared file, named by its request) to the embed workers;
    ``task_id``: the parse task's, when the embed task reports that task's outcome."""
    return app.send_task(EMBED_TASK, kwargs=message.to_kwargs(), countdown=countdown, task_id=task_id)


def enqueue(
    app: Celery,
    blobs: BlobStore,
    registry: DocumentRegistry | None,
    path: str | Path,
    source: str,
    max_file_bytes: int,
    info: DocumentInfo | None = None,
) -> Enqueued:
    """Store the bytes, record the document as queued (when a registry is given), send the task."""
    info = info if info is not None else DocumentInfo()
    doc_id = doc_id_for(source, info.tenant, registry)
    try:
        # pinned until the record refers to it, so a concurrent delete of the same bytes keeps them
        blob, pin = blobs.put_pinned(read_document(path, max_file_bytes), this_process())
    except (OSError, ValueError) as exc:
        return Enqueued(source, doc_id, None, unreadable(exc))
    filename = unicodedata.normalize("NFC", PurePath(path).name)  # macOS spells names in NFD
    request = seq = None
    before: tuple[int, str | None] = (0, None)
    if registry is None:
        blobs.unpin(pin)
    else:  # the new request owns the document from now on (korag.services.lifecycle); the replaced blob goes
        current = registry.get(doc_id)
        before = (current.version, current.content_hash) if current is not None else before
        try:
            claimed = queue_request(registry, doc_id, source, filename, blob, info.tenant, dict(info.meta),
                                    blobs=blobs)
        finally:
            release_upload(blobs, registry, blob, pin)
        if claimed is None:
            return Enqueued(source, doc_id, None, SUPERSEDED)
        request, seq = claimed
    try:
        task = send(app, IngestMessage(blob=blob, filename=filename, source=source, doc_id=doc_id, tenant=info.tenant,
                                       meta=info.meta, request=request, seq=seq))
    except OperationalError as exc:  # the broker went away after check_broker
        raise BrokerUnreachableError(
            f"the broker stopped answering while {source} was being queued ({exc}); documents recorded as queued "
            "are sent again by `korag sweep` (or a worker's start) once it is back"
        ) from exc
    return Enqueued(source, doc_id, task, request=request, before=before)
