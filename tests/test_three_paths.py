"""One document lifecycle, three ways in (issue 19 item 5): the same two documents, a Korean
Markdown file and a DOCX that cannot be parsed, of tenant ``acme``, ingested through

- the CLI: `korag ingest` without a broker (the in-process batch path), a subprocess;
- the embedded service: `korag serve` without a broker, an upload over real HTTP;
- Celery: a real redis-server, a real `korag worker` process, `korag ingest --wait` as the client;

each process with a real webhook receiver (a local HTTP server, ``KORAG_WEBHOOK_URL``). The tests
compare what a user sees: the outcomes, the chunks stored (texts, count, metadata), the sequence
of states the registry recorded for each document, and the webhook events; then a delete through
the CLI and one over HTTP, compared by the event and the metric each leaves.

**The states the registry recorded** are read from the registry itself, in every process of a
path (CLI, service, worker): each subprocess starts with a ``sitecustomize`` module on its
``PYTHONPATH`` (:data:`STATE_HOOK`) that wraps :class:`korag.storage.registry.DocumentRegistry`'s
writes and appends each record written (doc_id, source, tenant, status) to a JSON-lines file.
Polling ``/documents/{id}`` would miss the short-lived states.

**Drift these tests show today** (issue 19; fixed on other branches of the issue; each test
below names which it catches, and fails for that reason until the fix is merged):

- the CLI and the embedded service (both ``ingest.batch.BatchIngest``) never record ``embedding``,
  which Celery records: :func:`test_the_registry_records_the_same_states_on_every_path`;
- `korag delete` emits no ``document.deleted`` webhook and no delete metric, where
  ``DELETE /v1/documents/{id}`` emits both: :func:`test_a_delete_sends_the_same_event_through_the_cli_and_http`
  (the metric: a CLI process has no ``/metrics`` to read, so only the service's is asserted);
- the Celery sweeper's re-sent embed messages drop ``tenant``, so the worker's webhook says
  ``"tenant": null``: :func:`test_a_document_the_sweeper_sends_again_keeps_its_tenant`.

Found while writing this and not named by the issue: `korag ingest` in process sent no webhook at
all, where the service and the worker send ``document.indexed``/``document.failed``
(:func:`test_the_cli_sends_the_events_the_service_sends`).
"""

from __future__ import annotations

import json
import os
import secrets
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from bench import documents as docs
from tests.api_server import serve
from tests.conftest import Worker, korag_cli, korag_env, offline_model_path
from tests.test_events import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TENANT = "acme"
GOOD = "in/설치_안내.md"
BROKEN = "in/broken.docx"  # a ZIP header and nothing else: fails to parse (not to read)
SOURCES = (GOOD, BROKEN)
KEY = "three_" + secrets.token_urlsafe(24)  # tenant acme
ADMIN = "admin_" + secrets.token_urlsafe(24)  # for /metrics
# Chunk metadata that differs between any two ingests of the same bytes: which request wrote the chunk.
PER_RUN_FIELDS = {"ingest_seq"}
STATE_LOG_VAR = "KORAG_TEST_STATE_LOG"  # KORAG_*: korag_env drops it from the parent's environment

# Loaded at start-up by every korag process of a path (sitecustomize on PYTHONPATH): each record
# the registry writes, one JSON line (O_APPEND, one write per line: several processes share the file).
STATE_HOOK = textwrap.dedent('''
    import json, os

    _LOG = os.environ.get("KORAG_TEST_STATE_LOG")
    if _LOG:
        from korag.storage import registry as _registry

        def _note(records):
            lines = "".join(json.dumps({"doc_id": r.doc_id, "source": r.source, "tenant": r.tenant,
                                        "status": str(getattr(r.status, "value", r.status)), "pid": os.getpid()},
                                       ensure_ascii=False) + "\\n" for r in records)
            fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, lines.encode("utf-8"))
            finally:
                os.close(fd)

        _cls = _registry.DocumentRegistry
        _upsert, _write_many = _cls._upsert, _cls.write_many

        def _upsert_noted(self, record, *args, **kwargs):
            out = _upsert(self, record, *args, **kwargs)
            _note([record])
            return out

        def _write_many_noted(self, records, *args, **kwargs):
            out = _write_many(self, records, *args, **kwargs)
            _note([r for r, written in zip(records, out) if written and r.request is not None])
            return out  # records without a request were written (and noted) by _upsert

        _cls._upsert, _cls.write_many = _upsert_noted, _write_many_noted
''')


@dataclass
class Run:
    """What one path left: per source, the outcome it reported, the states the registry recorded
    and the chunks stored; the webhook events; the delete's event and metric."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    states: dict[str, list[str]] = field(default_factory=dict)
    chunks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    deleted_events: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # korag_documents_total by outcome, after the delete


# -- helpers -------------------------------------------------------------------------------------------
def _documents(folder: Path) -> None:
    (folder / "in").mkdir(parents=True)
    docs.make_markdown(folder / GOOD)
    (folder / BROKEN).write_bytes(b"PK\x03\x04 truncated")


def _hook_env(workdir: Path) -> dict[str, str]:
    """PYTHONPATH with the state hook first, and the file it writes to."""
    hook = workdir / "hook"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(STATE_HOOK, encoding="utf-8")
    path = [str(hook), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(path), STATE_LOG_VAR: str(workdir / "states.jsonl")}


def _states(workdir: Path) -> dict[str, list[str]]:
    """Per source, the statuses the registry wrote, in order (a write that repeats the status, as
    a change of owner or attempt does, is no new state)."""
    log = workdir / "states.jsonl"
    assert log.exists(), "the state hook recorded nothing: is DocumentRegistry._upsert/write_many still there?"
    out: dict[str, list[str]] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        seen = out.setdefault(entry["source"], [])
        if not seen or seen[-1] != entry["status"]:
            seen.append(entry["status"])
    return out


def _events(receiver: Receiver, count: int) -> list[dict[str, Any]]:
    return [json.loads(body) for _, body in receiver.wait_for(count, deadline_s=60)]


def _events_within(receiver: Receiver, count: int, deadline_s: float) -> list[dict[str, Any]]:
    """The events received once there are ``count``, or all there are after ``deadline_s``
    (a path that sends fewer is compared by what it sent)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with receiver.lock:
            if len(receiver.requests) >= count:
                break
        time.sleep(0.05)
    with receiver.lock:
        return [json.loads(body) for _, body in receiver.requests]


def _event_view(event: dict[str, Any]) -> tuple:
    data = event["data"]
    return event["type"], data["doc_id"], data["source"], data["tenant"], data.get("status"), data.get("chunks"), \
        data.get("error"), data.get("deleted_chunks")


def _chunk_view(chunk: dict[str, Any]) -> dict[str, Any]:
    return {"text": chunk["text"], "metadata": {k: v for k, v in chunk["metadata"].items() if k not in PER_RUN_FIELDS}}


def _cli_chunks(env: dict[str, str], cwd: Path, doc_id: str) -> list[dict[str, Any]]:
    listed = korag_cli(["chunks", "--doc-id", doc_id, "--json"], env, cwd)
    assert listed.returncode == 0, listed.stderr
    found = [json.loads(line) for line in listed.stdout.splitlines()]
    return sorted((_chunk_view(c) for c in found), key=lambda c: c["metadata"]["chunk_index"])


def _documents_total(text: str) -> dict[str, float]:
    return {sample.labels["outcome"]: sample.value
            for family in text_string_to_metric_families(text) if family.name == "korag_documents"
            for sample in family.samples if sample.name == "korag_documents_total"}


def _env(workdir: Path, receiver: Receiver, **more: str) -> dict[str, str]:
    return korag_env({
        "KORAG_EMBEDDING_MODEL": offline_model_path(),
        "KORAG_EMBEDDING_DEVICE": "cpu",
        "KORAG_DATA_DIR": str(workdir / "data"),
        "KORAG_WEBHOOK_URL": receiver.url,
        "KORAG_WEBHOOK_BACKOFF_S": "0.2",
        **_hook_env(workdir),
        **more,
    })


# -- the three paths -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Run:
    """`korag ingest` in process, then `korag delete` of the indexed document."""
    workdir = tmp_path_factory.mktemp("cli")
    _documents(workdir)
    receiver = Receiver()
    try:
        env = _env(workdir, receiver)
        done = korag_cli(["ingest", "in", "--json", "--tenant", TENANT], env, workdir)
        run = Run(results={line["source"]: line for line in map(json.loads, done.stdout.splitlines())})
        assert set(run.results) == set(SOURCES), done.stderr
        run.chunks = {s: _cli_chunks(env, workdir, r["doc_id"]) for s, r in run.results.items()}
        run.events = _events_within(receiver, 2, deadline_s=5)
        seen = len(run.events)
        deleted = korag_cli(["delete", run.results[GOOD]["doc_id"], "--json"], env, workdir)
        assert deleted.returncode == 0, deleted.stderr
        run.deleted_events = _events_within(receiver, seen + 1, deadline_s=10)[seen:]
        run.states = _states(workdir)
        return run
    finally:
        receiver.close()


@pytest.fixture(scope="module")
def service_run(tmp_path_factory) -> Run:
    """`korag serve` (embedded: no broker): an upload with ``wait``, then ``DELETE`` over HTTP."""
    workdir = tmp_path_factory.mktemp("service")
    _documents(workdir)
    receiver = Receiver()
    env = {"KORAG_API_KEYS": f"{KEY}={TENANT},{ADMIN}=*", "KORAG_WEBHOOK_URL": receiver.url,
           "KORAG_WEBHOOK_BACKOFF_S": "0.2", **_hook_env(workdir)}
    try:
        with serve(workdir, env) as server, httpx.Client(base_url=server.url, timeout=300) as http:
            files = [("file", (Path(s).name, (workdir / s).read_bytes())) for s in SOURCES]
            uploaded = http.post("/v1/documents", params={"wait": "true", "timeout": "240"}, headers=server.auth(KEY),
                                 files=files, data={"source": list(SOURCES)})
            assert uploaded.status_code == 200, uploaded.text
            run = Run(results={d["source"]: d for d in uploaded.json()["documents"]})
            for source, result in run.results.items():
                listed = http.get(f"/v1/documents/{result['doc_id']}/chunks", params={"limit": 1000},
                                  headers=server.auth(KEY))
                assert listed.status_code == 200, listed.text
                run.chunks[source] = sorted((_chunk_view(c) for c in listed.json()["chunks"]),
                                            key=lambda c: c["metadata"]["chunk_index"])
            run.events = _events(receiver, 2)
            deleted = http.delete(f"/v1/documents/{run.results[GOOD]['doc_id']}", headers=server.auth(KEY))
            assert deleted.status_code == 200, deleted.text
            run.deleted_events = _events(receiver, 3)[2:]
            metrics = http.get("/metrics", headers=server.auth(ADMIN))
            assert metrics.status_code == 200, metrics.text
            run.metrics = _documents_total(metrics.text)
        run.states = _states(workdir)
        return run
    finally:
        receiver.close()


@pytest.fixture(scope="module")
def celery_run(tmp_path_factory) -> Run:
    """A real redis-server and `korag worker`; `korag ingest --wait` as the client."""
    from tests.conftest import RedisServer, free_port

    workdir = tmp_path_factory.mktemp("celery")
    _documents(workdir)
    receiver = Receiver()
    server = RedisServer(workdir / "redis", free_port()).start()
    try:
        env = _env(workdir, receiver, KORAG_BROKER_URL=server.url)
        worker = Worker(env, workdir, workdir / "worker.log").start()
        try:
            done = korag_cli(["ingest", "in", "--wait", "--json", "--tenant", TENANT, "--timeout", "600"], env, workdir)
            run = Run(results={line["source"]: line for line in map(json.loads, done.stdout.splitlines())})
            assert set(run.results) == set(SOURCES), done.stderr
            run.events = _events(receiver, 2)
            # The worker holds the embedded store only while a task runs: a client reads it now.
            run.chunks = {s: _cli_chunks(env, workdir, r["doc_id"]) for s, r in run.results.items()}
        finally:
            worker.stop()
        run.states = _states(workdir)
        return run
    finally:
        server.stop()
        receiver.close()


@pytest.fixture(scope="module")
def runs(cli_run, service_run, celery_run) -> dict[str, Run]:
    return {"cli": cli_run, "service": service_run, "celery": celery_run}


# -- the comparisons -----------------------------------------------------------------------------------
def test_every_path_reports_the_same_outcomes(runs):
    def view(result: dict[str, Any]) -> tuple:
        return result["doc_id"], result["status"], result["chunks"], result["error"]

    cli = {s: view(r) for s, r in runs["cli"].results.items()}
    assert cli[GOOD][1] == "indexed" and cli[GOOD][2] > 0
    assert cli[BROKEN][1] == "failed" and "DOCX" in cli[BROKEN][3]
    for path in ("service", "celery"):
        assert {s: view(r) for s, r in runs[path].results.items()} == cli, path


def test_every_path_stores_the_same_chunks(runs):
    """Texts, count and metadata (doc_id, source, filename, tenant, chunk_index, token counts,
    headers...), all but which request wrote them and when."""
    cli = runs["cli"].chunks
    assert len(cli[GOOD]) == runs["cli"].results[GOOD]["chunks"] > 0
    assert cli[BROKEN] == []
    assert {c["metadata"]["tenant"] for c in cli[GOOD]} == {TENANT}
    for path in ("service", "celery"):
        assert runs[path].chunks == cli, path


def test_the_registry_records_the_same_states_on_every_path(runs):
    """A queued path starts at ``queued``; from there on every path records the same states:
    parsing, embedding, indexed for the good document, parsing, failed for the broken one.

    Fails today: the CLI and the embedded service (``ingest.batch.BatchIngest``) never record
    ``embedding`` (issue 19, "BatchIngest never records the embedding state the other two record")."""
    lifecycle = {GOOD: ["parsing", "embedding", "indexed"], BROKEN: ["parsing", "failed"]}
    queued = {s: ["queued", *states] for s, states in lifecycle.items()}
    recorded = {path: {s: states[:states.index("indexed") + 1] if "indexed" in states else states  # then the delete
                       for s, states in run.states.items()}
                for path, run in runs.items()}
    assert recorded == {"cli": lifecycle, "service": queued, "celery": queued}


def test_the_service_and_the_worker_send_the_same_events(runs):
    """One ``document.indexed`` and one ``document.failed``, naming the document, its
    source and its tenant, the same whichever queue ran it."""
    service = sorted(map(_event_view, runs["service"].events))
    assert [e[0] for e in service] == ["document.failed", "document.indexed"]
    assert {(e[1], e[2], e[3]) for e in service} == {(runs["cli"].results[s]["doc_id"], s, TENANT) for s in SOURCES}
    assert sorted(map(_event_view, runs["celery"].events)) == service


def test_the_cli_sends_the_events_the_service_sends(runs):
    assert sorted(map(_event_view, runs["cli"].events)) == sorted(map(_event_view, runs["service"].events))


def test_the_service_counts_its_outcomes(runs):
    """The embedded service's ``korag_documents_total``: both uploads queued, one indexed, one
    failed, one deleted (the Celery worker and the CLI serve no metrics)."""
    assert runs["service"].metrics == {"queued": 2, "indexed": 1, "failed": 1, "deleted": 1}


def test_a_delete_sends_the_same_event_through_the_cli_and_http(runs):
    """``document.deleted`` with the document's id, source, tenant and the chunks removed, and a
    tombstone in the registry, whether `korag delete` or ``DELETE /v1/documents/{id}`` removed it.
    The delete metric is asserted for the service (test_the_service_counts_its_outcomes): a CLI
    process serves no ``/metrics``.

    Fails today: `korag delete` emits no webhook (issue 19, "the CLI's delete skips the webhook and
    metric the service's delete emits")."""
    chunks = runs["cli"].results[GOOD]["chunks"]
    http = [_event_view(e) for e in runs["service"].deleted_events]
    assert http == [("document.deleted", runs["service"].results[GOOD]["doc_id"], GOOD, TENANT, None, None, None,
                     chunks)]
    for path in ("cli", "service"):
        assert runs[path].states[GOOD][-1] == "deleted", path
    assert [_event_view(e) for e in runs["cli"].deleted_events] == http


# -- the sweeper -----------------------------------------------------------------------------------------
def test_a_document_the_sweeper_sends_again_keeps_its_tenant(tmp_path, redis_server):
    """A document parsed by a parse-only worker whose embed message was lost (the ``embed`` queue
    purged) is sent to the embed queue again by `korag sweep`; the worker that embeds it reports
    ``document.indexed`` with the document's tenant, as a document that was never swept.

    Fails today: the sweeper's re-sent embed message carries no ``tenant``, so the webhook says
    ``"tenant": null`` (issue 19, "the sweeper's re-sent embed messages drop tenant")."""
    from tests.test_queue_batching import RoleWorker

    _documents(tmp_path)
    receiver = Receiver()
    try:
        env = _env(tmp_path, receiver, KORAG_BROKER_URL=redis_server.url)
        sweeping = {**env, "KORAG_SWEEP_AFTER_S": "0.1"}  # `korag sweep` only: a starting worker sweeps too
        parser = RoleWorker(env, tmp_path, tmp_path / "parse.log", "parse", "parse").start()
        try:
            queued = korag_cli(["ingest", GOOD, "--json", "--tenant", TENANT], env, tmp_path)
            (line,) = [json.loads(text) for text in queued.stdout.splitlines()]
            assert line["status"] == "queued", queued.stderr
            deadline = time.monotonic() + 180
            while not (tmp_path / "data").exists() or not list((tmp_path / "data").rglob("prepared/*.json")):
                assert time.monotonic() < deadline, parser.text()[-3000:]
                time.sleep(0.5)
        finally:
            parser.stop()
        lost = redis.Redis.from_url(redis_server.url)
        assert lost.llen("embed") == 1  # the parse worker's forward, with the tenant: lost here
        lost.delete("embed")
        time.sleep(0.2)  # older than KORAG_SWEEP_AFTER_S
        swept = korag_cli(["sweep", "--json"], sweeping, tmp_path)
        assert swept.returncode == 0, swept.stderr
        assert [json.loads(text)["doc_id"] for text in swept.stdout.splitlines()] == [line["doc_id"]]
        embedder = RoleWorker(env, tmp_path, tmp_path / "embed.log", "embed", "embed").start()
        try:
            events = _events(receiver, 1)
        finally:
            embedder.stop()
        assert [_event_view(e)[:4] for e in events] == [("document.indexed", line["doc_id"], GOOD, TENANT)]
    finally:
        receiver.close()
