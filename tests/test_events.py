"""Webhooks (korag.services.events) delivered to a real HTTP server on a loopback port that fails the
first deliveries: retries, signatures, the durable outbox across a restart, dead events."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from korag.services.events import EVENT_TYPES, Webhooks, outcome_event, sign, verify_signature
from korag.settings import Settings
from korag.storage.registry import DocumentRecord, lost_reason
from korag.types import IngestResult, Lost

SECRET = "whsec-test-0123456789"


class Receiver:
    """A local webhook receiver: answers 500 to the first ``fail_first`` requests, then 200."""

    def __init__(self, fail_first: int = 0, status: int = 200) -> None:
        self.fail_first = fail_first
        self.status = status
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append((dict(self.headers.items()), body))
                    failing = len(receiver.requests) <= receiver.fail_first
                self.send_response(500 if failing else receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, deadline_s: float = 20.0) -> list[tuple[dict[str, str], bytes]]:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} deliveries, got {len(self.requests)}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _hooks(url, tmp_path, **kwargs) -> Webhooks:
    settings = Settings(data_dir=tmp_path / "data", webhook_url=url, webhook_secret=SECRET,
                        webhook_backoff_s=kwargs.pop("backoff", 0.05), **kwargs)
    return Webhooks.from_settings(settings)


def _wait_until(predicate, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.02)


def test_an_event_is_retried_until_delivered_and_signed(receiver, tmp_path):
    server = receiver(fail_first=2)
    hooks = _hooks(server.url, tmp_path)
    try:
        event_id = hooks.emit("document.indexed", {"doc_id": "d1", "source": "규정.pdf", "chunks": 3})
        requests = server.wait_for(3)
        _wait_until(lambda: hooks.pending == 0)
    finally:
        hooks.close()
    assert len(requests) == 3
    bodies = {body for _, body in requests}
    assert len(bodies) == 1  # the same event each time
    for headers, body in requests:
        assert headers["X-Korag-Event-Id"] == event_id
        assert headers["X-Korag-Event"] == "document.indexed"
        assert headers["Content-Type"] == "application/json"
        assert verify_signature(SECRET, headers, body)
        assert headers["X-Korag-Signature"] == sign(SECRET, headers["X-Korag-Timestamp"], body)
    event = json.loads(requests[-1][1])
    assert set(event) == {"id", "type", "created_at", "data"}
    assert event["id"] == event_id and event["type"] == "document.indexed"
    assert event["data"] == {"doc_id": "d1", "source": "규정.pdf", "chunks": 3}
    assert event["created_at"].endswith("Z")
    assert not list((tmp_path / "data" / "webhooks" / "outbox").glob("*.json"))


def test_undelivered_events_survive_a_restart_and_are_delivered_then(receiver, tmp_path):
    down = receiver()
    url = down.url
    down.close()  # nobody listens on the port now: every attempt fails
    hooks = _hooks(url, tmp_path, backoff=0.2)
    ids = [hooks.emit("document.failed", {"doc_id": "d2", "error": "encrypted PDF"}),
           hooks.emit("document.deleted", {"doc_id": "d3", "deleted_chunks": 4})]
    _wait_until(lambda: hooks.failed_attempts >= 2)
    hooks.close()
    assert hooks.pending == 2
    for path in (tmp_path / "data" / "webhooks" / "outbox").glob("*.json"):
        record = json.loads(path.read_text())
        assert record["attempts"] >= 1 and record["last_error"]  # the retry state is on disk

    server = receiver()  # the receiver is back; the service restarts with the same data directory
    restarted = _hooks(server.url, tmp_path, backoff=0.2)
    try:
        requests = server.wait_for(2)
        _wait_until(lambda: restarted.pending == 0)
    finally:
        restarted.close()
    assert sorted(h["X-Korag-Event-Id"] for h, _ in requests) == sorted(ids)
    assert all(verify_signature(SECRET, h, b) for h, b in requests)


def test_an_event_that_never_gets_through_is_set_aside(receiver, tmp_path):
    server = receiver(fail_first=1000)
    hooks = _hooks(server.url, tmp_path, webhook_max_attempts=3)
    try:
        event_id = hooks.emit("document.indexed", {"doc_id": "d4"})
        server.wait_for(3)
        _wait_until(lambda: hooks.pending == 0)
        time.sleep(0.3)
    finally:
        hooks.close()
    assert len(server.requests) == 3
    dead = list((tmp_path / "data" / "webhooks" / "dead").glob("*.json"))
    assert len(dead) == 1 and event_id in dead[0].name
    assert json.loads(dead[0].read_text())["last_error"] == "HTTP 500"


def test_two_processes_on_one_data_dir_deliver_each_event_once(receiver, tmp_path):
    server = receiver()
    first, second = _hooks(server.url, tmp_path), _hooks(server.url, tmp_path)
    try:
        ids = [hook.emit("document.indexed", {"n": i}) for i in range(4) for hook in (first, second)]
        server.wait_for(8)
        _wait_until(lambda: first.pending == 0)
        time.sleep(1.5)  # a second deliverer would have rescanned the outbox by now
    finally:
        first.close()
        second.close()
    assert sorted(h["X-Korag-Event-Id"] for h, _ in server.requests) == sorted(ids)


def test_verify_signature_refuses_tampering_other_secrets_and_old_requests():
    body = b'{"id":"evt_1","type":"document.indexed","created_at":"x","data":{}}'
    now = int(time.time())
    headers = {"x-korag-timestamp": str(now), "x-korag-signature": sign(SECRET, now, body)}
    assert verify_signature(SECRET, headers, body)
    assert verify_signature(SECRET.encode(), headers, body.decode())
    assert not verify_signature("another-secret", headers, body)
    assert not verify_signature(SECRET, headers, body.replace(b"indexed", b"deleted"))
    assert not verify_signature(SECRET, headers, body, now=now + 301)
    assert not verify_signature(SECRET, {"x-korag-timestamp": str(now)}, body)
    assert not verify_signature(SECRET, {**headers, "x-korag-timestamp": "soon"}, body)
    assert not verify_signature("", headers, body)


def test_bad_events_and_settings_are_refused(tmp_path):
    assert Webhooks.from_settings(Settings(data_dir=tmp_path)) is None
    assert Webhooks.from_settings(Settings(data_dir=tmp_path, webhook_url="")) is None
    with pytest.raises(ValueError, match="not an http"):
        Webhooks("ftp://example.org", SECRET, tmp_path)
    hooks = Webhooks("http://127.0.0.1:9/", SECRET, tmp_path)  # never started: nothing is sent
    with pytest.raises(ValueError, match="unknown event type 'document.updated'"):
        hooks.emit("document.updated", {})
    with pytest.raises(ValueError, match="data is not JSON"):
        hooks.emit("document.indexed", {"when": object()})
    assert hooks.pending == 0
    assert set(EVENT_TYPES) == {"document.indexed", "document.failed", "document.deleted"}


# -- issue 19: the event an outcome reports is decided by its type, not by its error text ---------
def test_a_failure_is_reported_whatever_its_reason_says_and_a_lost_request_never():
    """A request that lost its document to a newer one or a deletion reports nothing (the winner
    does); a real failure always reports ``document.failed``, even when its reason happens to
    begin like a lost request's (before issue 19 the text decided, and such a failure was silent)."""
    tombstone = DocumentRecord(doc_id="d", source="a.txt", status="deleted")
    for reason in (lost_reason(None, started=True), lost_reason(tombstone, started=True),
                   lost_reason(tombstone, started=False), *Lost):
        lost = IngestResult("a.txt", "d", "failed", error=reason)
        assert lost.lost and outcome_event(lost, "acme") is None
        assert lost.to_json()["error"] == str(reason) and type(lost.to_json()["error"]) is str
    for text in ("deleted pages make this PDF unreadable", "superseded format: HWP 3.0 is not supported"):
        failed = IngestResult("a.txt", "d", "failed", error=text)
        assert outcome_event(failed, "acme") == (
            "document.failed", {"doc_id": "d", "source": "a.txt", "tenant": "acme", "status": "failed",
                                "chunks": 0, "error": text})
    indexed = IngestResult("a.txt", "d", "indexed", chunks=3)
    assert outcome_event(indexed, None)[0] == "document.indexed"
    assert outcome_event(IngestResult("a.txt", "d", "unchanged"), None) is None
