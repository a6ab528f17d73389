"""Webhooks: ``document.indexed``, ``document.failed`` and ``document.deleted`` POSTed to
``KORAG_WEBHOOK_URL``, at least once.

``emit`` writes the event to a durable outbox (one file per event under
``<data_dir>/webhooks/outbox``, fsynced) and returns its id; a background thread delivers it and
deletes the file on a 2xx answer. Anything else is retried with exponential backoff (the attempt
count and the next try are kept in the file, so a restart carries on where it stopped); after
``webhook_max_attempts`` the event is moved to ``webhooks/dead`` and logged. Several processes may
share a data directory: one of them at a time (a lock on ``webhooks/outbox.lock``) delivers the
whole outbox. A receiver may see an event twice: the ``X-Korag-Event-Id`` header tells.

Each request carries::

    X-Korag-Event-Id: evt_...          X-Korag-Event: document.indexed
    X-Korag-Timestamp: 1767225600      X-Korag-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

and the JSON body ``{"id", "type", "created_at", "data"}``. Receivers check it with
:func:`verify_signature`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
import random
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from korag.types import IngestResult

log = logging.getLogger("korag.events")


class EventType(StrEnum):
    """A webhook's ``type`` (and ``X-Korag-Event`` header): the member is the string on the wire."""

    INDEXED = "document.indexed"
    FAILED = "document.failed"
    DELETED = "document.deleted"


EVENT_TYPES = tuple(EventType)
HEADER_ID = "X-Korag-Event-Id"
HEADER_TYPE = "X-Korag-Event"
HEADER_TIMESTAMP = "X-Korag-Timestamp"
HEADER_SIGNATURE = "X-Korag-Signature"
_POLL_S = 1.0  # how often the outbox is rescanned for events other processes wrote


def sign(secret: str | bytes, timestamp: int | str, body: bytes | str) -> str:
    """The ``X-Korag-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    raw = body.encode("utf-8") if isinstance(body, str) else body
    digest = hmac.new(key, str(timestamp).encode("ascii") + b"." + raw, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


_OUTCOME_EVENTS = {"indexed": EventType.INDEXED, "failed": EventType.FAILED}


def outcome_event(result: IngestResult, tenant: str | None) -> tuple[EventType, dict] | None:
    """The event a finished ingest reports: ``document.indexed`` or ``document.failed``; None for
    ``unchanged``/``queued`` and for a request that lost its document to a newer one or a deletion
    (:attr:`IngestResult.lost`: the winner reports its own outcome)."""
    kind = _OUTCOME_EVENTS.get(result.status)
    if kind is None or result.lost:
        return None
    error = None if result.error is None else str(result.error)
    return kind, {"doc_id": result.doc_id, "source": result.source, "tenant": tenant,
                  "status": result.status, "chunks": result.chunks, "error": error}


def deletion_event(doc_id: str, source: str, tenant: str | None, deleted_chunks: int) -> tuple[EventType, dict]:
    """The event a deletion reports, whichever way in deleted the document."""
    return EventType.DELETED, {"doc_id": doc_id, "source": source, "tenant": tenant, "deleted_chunks": deleted_chunks}


def verify_signature(secret: Any, headers: Mapping[str, str], body: bytes | str, tolerance_s: float = 300,
                     now: float | None = None) -> bool:
    """For receivers: True when ``body`` was signed with ``secret`` less than ``tolerance_s`` ago
    (an old timestamp is refused, so a captured request cannot be replayed later). ``headers``
    are matched case-insensitively; ``secret`` may be a str, bytes or pydantic SecretStr."""
    if hasattr(secret, "get_secret_value"):
        secret = secret.get_secret_value()
    if not secret:
        return False
    lowered = {str(k).lower(): v for k, v in headers.items()}
    timestamp = lowered.get(HEADER_TIMESTAMP.lower())
    signature = lowered.get(HEADER_SIGNATURE.lower())
    if not timestamp or not signature:
        return False
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, stamp, body).encode("ascii"), str(signature).strip().encode("ascii", "replace"))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirected POST would turn into a GET: count it as a failure
        return None


class Webhooks:
    """Durable, retried webhook delivery. Build with :meth:`from_settings` (which starts the
    delivery thread), call :meth:`emit` from anywhere, :meth:`close` at shutdown."""

    def __init__(self, url: str, secret: str | None, directory: Path, *, timeout_s: float = 10.0,
                 max_attempts: int = 12, backoff_s: float = 1.0, backoff_max_s: float = 300.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"KORAG_WEBHOOK_URL {url!r} is not an http:// or https:// URL")
        self.url = url
        self._secret = secret
        self.directory = Path(directory)
        self.outbox = self.directory / "outbox"
        self.dead = self.directory / "dead"
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._known: dict[str, dict[str, Any]] = {}  # outbox file name -> its record (lock holder only)
        self._emitted: list[Path] = []  # this instance's events still in the outbox, for drain()
        self.delivered = 0
        self.failed_attempts = 0

    @classmethod
    def from_settings(cls, settings) -> "Webhooks | None":
        """None when KORAG_WEBHOOK_URL is unset; else a started instance (redelivering what an
        earlier run left in the outbox)."""
        if settings.webhook_url is None:
            return None
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret is not None else None
        if secret is None:
            log.warning("KORAG_WEBHOOK_URL is set without KORAG_WEBHOOK_SECRET: events are sent unsigned")
        hooks = cls(settings.webhook_url, secret, Path(settings.data_dir) / "webhooks",
                    timeout_s=settings.webhook_timeout_s, max_attempts=settings.webhook_max_attempts,
                    backoff_s=settings.webhook_backoff_s, backoff_max_s=settings.webhook_backoff_max_s)
        hooks.start()
        return hooks

    # -- producing ------------------------------------------------------------------------------
    def report(self, result: IngestResult, tenant: str | None) -> None:
        """Emit the event a finished ingest reports (:func:`outcome_event`), when it reports one:
        the service, the workers and `korag ingest` all report through here."""
        event = outcome_event(result, tenant)
        if event is not None:
            self.emit(*event)

    def emit(self, type: EventType | str, data: dict) -> str:
        """Record an event durably and return its id; delivery happens in the background."""
        try:
            type = EventType(type)
        except ValueError:
            raise ValueError(f"unknown event type {type!r}; use one of {', '.join(EVENT_TYPES)}") from None
        event_id = "evt_" + uuid.uuid4().hex
        created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        try:
            body = json.dumps({"id": event_id, "type": type, "created_at": created, "data": data},
                              ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"event {type}: data is not JSON ({exc})") from exc
        record = {"id": event_id, "type": str(type), "body": body, "attempts": 0, "next_at": 0.0, "last_error": None}
        self.outbox.mkdir(parents=True, exist_ok=True)
        path = self.outbox / f"{time.time_ns():020d}-{event_id}.json"
        _write_atomic(path, record)
        self._emitted.append(path)
        self._wake.set()
        return event_id

    def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the events this instance emitted to leave the outbox
        (delivered, or set aside), for a short-lived process (the CLI) before it exits. Returns
        whether they all did; what is left stays in the outbox and the next korag process with
        webhooks (``korag serve``, a worker) delivers it."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._emitted = [path for path in self._emitted if path.exists()]
            if not self._emitted:
                return True
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.05)

    @property
    def pending(self) -> int:
        """Events in the outbox, not yet delivered (this process's and others')."""
        try:
            return sum(1 for name in os.listdir(self.outbox) if name.endswith(".json"))
        except FileNotFoundError:
            return 0

    # -- the delivery thread --------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self.outbox.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="korag-webhooks", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop delivering; what is left stays in the outbox for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._lock_fd is not None and (self._thread is None or not self._thread.is_alive()):
            os.close(self._lock_fd)
            self._lock_fd = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # an emit from here on wakes the wait below at once
            wait = _POLL_S
            try:
                if self._lock_fd is None:
                    self._lock_fd = _try_lock(self.directory / "outbox.lock")
                if self._lock_fd is not None:
                    wait = self._deliver_due()
            except Exception:  # the thread must survive a full disk or a bad file; log and go on
                log.exception("webhook delivery loop")
            self._wake.wait(max(0.0, min(wait, _POLL_S)))

    def _deliver_due(self) -> float:
        """Send every due event once; return the time until the next one is due."""
        names = sorted(n for n in os.listdir(self.outbox) if n.endswith(".json"))
        self._known = {n: self._known[n] for n in names if n in self._known}
        next_due = _POLL_S
        for name in names:
            if self._stop.is_set():
                break
            record = self._known.get(name)
            if record is None:
                try:
                    record = json.loads((self.outbox / name).read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    log.error("webhook outbox file %s is unreadable (%s); moved to %s", name, exc, self.dead)
                    self._set_aside(name)
                    continue
                self._known[name] = record
            wait = record["next_at"] - time.time()
            if wait > 0:
                next_due = min(next_due, wait)
                continue
            error = self._send(record)
            if error is None:
                self.delivered += 1
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.outbox / name)
                self._known.pop(name, None)
                continue
            self.failed_attempts += 1
            record["attempts"] += 1
            record["last_error"] = error
            if record["attempts"] >= self.max_attempts:
                log.error("webhook %s %s not delivered after %d attempts (last: %s); set aside in %s",
                          record["type"], record["id"], record["attempts"], error, self.dead)
                _write_atomic(self.outbox / name, record)
                self._set_aside(name)
                continue
            delay = min(self.backoff_s * 2 ** (record["attempts"] - 1), self.backoff_max_s)
            delay *= 0.8 + 0.4 * random.random()  # jitter: many events retried together spread out
            record["next_at"] = time.time() + delay
            _write_atomic(self.outbox / name, record)
            log.warning("webhook %s %s attempt %d failed (%s); next try in %.1f s", record["type"], record["id"],
                        record["attempts"], error, delay)
            next_due = min(next_due, delay)
        return next_due

    def _send(self, record: dict[str, Any]) -> str | None:
        """One POST; None on a 2xx answer, else what went wrong."""
        body = record["body"].encode("utf-8")
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": "korag-webhooks",
                   HEADER_ID: record["id"], HEADER_TYPE: record["type"], HEADER_TIMESTAMP: str(timestamp)}
        if self._secret:
            headers[HEADER_SIGNATURE] = sign(self._secret, timestamp, body)
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read(65536)
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return str(getattr(exc, "reason", None) or exc)

    def _set_aside(self, name: str) -> None:
        self.dead.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.outbox / name, self.dead / name)
        self._known.pop(name, None)


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _write_atomic(path: Path, record: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(record, out, ensure_ascii=False)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
