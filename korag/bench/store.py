"""``korag bench store``: the embedded store (Qdrant Edge) against qdrant-client's old local mode,
each at the size it can do, in one run, through korag's own store code.

Points: synthetic normalised 1024-dim dense vectors (KoE5's size) and real Kiwi BM25 keyword
vectors of the AutoRAG passages (``ingest.sparse.SparseEncoder``), cycled; each distinct passage
is encoded once. Without the corpus, generated Korean text stands in. Queries: the dataset's
questions (Kiwi query vectors) with dense vectors near stored ones. Each engine runs in its own
process, so its memory figures are its own. Edge is written in ingest batches of
``BATCH_POINTS``, each followed by ``korag.storage.edge.upkeep.after_batch`` (its index upkeep, timed);
for the whole ingest a thread sends one hybrid search every ``STEADY_INTERVAL_S`` as a chatbot
would (``steady_hybrid``: latency from when each search was due, for all of them and for those
issued while upkeep ran). The same process serves ``GET /healthz`` from a daemon thread (stdlib
``ThreadingHTTPServer`` on 127.0.0.1, answering 200 ``{"status":"ok"}`` and touching nothing, the
work korag's own ``/healthz`` in api/app.py does), and a health checker in another process
(``korag.bench.healthprobe``, so it shares no GIL with the store) probes it every
``HEALTH_INTERVAL_S`` for the whole ingest (``healthz``): its latency is how long the store's
process takes to run any Python thread, the target being an answer within 1 s always.
``--upkeep both`` measures the inline store (this benchmark's default, the store
before issue 22) and ``KORAG_EDGE_UPKEEP=process`` (korag's default; under ``process``) in one run.
``--store-process`` runs each embedded store in a store process (``KORAG_EDGE_STORE_PROCESS``,
``korag.storage.edge_remote``): the benchmark's process is then a server that holds no Edge object,
so its ``/healthz``, ``stalls`` and ``cpu_s`` are the serving process's; ``store_process``:
``{"cpu_s", "peak_rss_bytes"}`` of the store process over the ingest; ``rss_bytes`` and
``peak_rss_bytes`` add the reopened store's process to the benchmark's.

The printed object is the embedded store's figures (``--upkeep``'s mode; inline for ``both``), with the old local mode's under ``local``:
``{"backend", "points", "upsert_points_per_s", "reopen_s", "disk_bytes", "rss_bytes",
"dense": {"p50_ms", "p95_ms"}, "sparse", "hybrid", "hybrid_filtered", "hybrid_rrf", "hybrid_dbsf", ...,
"local": {...}}`` (``hybrid_rrf`` and ``hybrid_dbsf``: the engine's own fusion, one query with a
dense and a sparse prefetch).
The embedded store's runs also have ``"upkeep"``, ``"steady_hybrid"``, ``"dense_recall_at_10"`` and
``"healthz": {"interval_ms", "timeout_s", "during_ingest", "during_upkeep"}``, each of the two
``{"probes", "answered", "over_1000_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"}``: probes due
while the ingest (writes and upkeep) ran, those answered 200 within ``timeout_s``, those not
answered within 1 s (late or unanswered), and the answered ones' latencies from when each was
due; ``during_upkeep``: the probes in flight while ``after_batch`` ran. ``"stalls"``: every pause
of the whole process over 200 ms during the ingest and the code that caused it
(``korag.bench.stalls``): ``{"threshold_ms", "stalls", "total_s", "max_ms", "by_place"}``, and
``"wall_s"``, ``"cpu_s"``: the ingest's seconds and the CPU seconds of the process and of each
Python thread meanwhile (``MainThread`` writes and runs upkeep, ``korag-steady`` searches; the
rest of ``process`` is mostly Edge's own query threads, and the build children are not in it),
``"gc"``: the interpreter's garbage collections by generation (``{"count", "total_s", "max_ms"}``;
a stall that one filled is placed at ``garbage collection of generation N``).
``steady_hybrid`` also splits the searches during ingest into ``with_major_faults`` and
``without_major_faults`` (whether the process read pages from disk while each ran), splits
each search's latency into ``queued`` (waiting for the searches before it) and ``service`` (its
own run; ``service_cpu``: its thread's CPU meanwhile), and gives ``mem_available_min_mb``, the
least memory the machine had available.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from ingest.sparse import SparseEncoder
from korag.bench.stalls import Stalls, cpu_seconds, major_faults, mem_available_mb
from korag.storage.edge.upkeep import after_batch
from korag.storage.edge_client import EdgeClient
from korag.storage.edge_remote import RemoteEdgeClient
from korag.storage.store import Fusion, QdrantStore, point_id

DEFAULT_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "data" / "autorag-ko"  # korag/bench/x.py -> ../shared
DIM = 1024
TENANTS = 10
MODEL = "bench-synthetic-1024"
COLLECTION = "korag"
WRITE_POINTS = 1000  # points per store.upsert call
BATCH_POINTS = 10_000  # points per ingest batch (then upkeep)
STEADY_INTERVAL_S = 0.1  # a chatbot's searches during ingest: ten a second
HEALTH_INTERVAL_S = 0.1  # a health checker's probes of /healthz during ingest
HEALTH_TIMEOUT_S = 30.0
HEALTH_TARGET_MS = 1000  # /healthz always answered within 1 s (issue 22)
ENGINES = ("edge", "edge-process", "local")  # edge-process: EdgeClient(upkeep="process")
REMOTE = "+store-process"  # an embedded engine with this suffix runs in a store process (RemoteEdgeClient)


# -- data ------------------------------------------------------------------------------------------
def _texts(corpus: Path, queries: int) -> tuple[list[str], list[str], str]:
    corpus_file, query_file = corpus / "corpus.jsonl", corpus / "queries.jsonl"
    if corpus_file.is_file():
        passages = [t for t in (json.loads(line)["text"] for line in corpus_file.open(encoding="utf-8")) if t.strip()]
        asked = []
        if query_file.is_file():
            asked = [json.loads(line)["text"] for line in query_file.open(encoding="utf-8")][:queries]
        if len(asked) < queries:
            asked += [p[:40] for p in passages[: queries - len(asked)]]
        return passages, asked, str(corpus_file)
    rng = np.random.default_rng(3)
    words = ("연차 휴가 규정 법원 조직 출장 정산 재택 근무 승인 부서장 예산 계약 보안 교육 인사 평가 급여 복지 감사 "
             "위원회 시행 개정 조항 신청 서류 기한 책임 의무 권한").split()
    passages = [" ".join(rng.choice(words, size=60)) + "입니다." for _ in range(720)]
    return passages, [" ".join(rng.choice(words, size=4)) for _ in range(queries)], "generated"


def _dense(start: int, n: int) -> np.ndarray:
    """Rows ``start`` .. ``start + n`` of the dataset, the same in every process."""
    out = np.empty((n, DIM), dtype=np.float32)
    block = 1000
    for first in range(start - start % block, start + n, block):
        rows = np.random.default_rng(first).standard_normal((block, DIM)).astype(np.float32)
        lo, hi = max(first, start), min(first + block, start + n)
        out[lo - start : hi - start] = rows[lo - first : hi - first]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def near_queries(points: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit query vectors, each a stored row (of the first ``points``) plus 1% noise."""
    near = rng.integers(0, points, size=n)
    out = np.stack([_dense(int(j), 1)[0] + 0.01 * rng.standard_normal(DIM).astype(np.float32) for j in near])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _payload(i: int, passage: str) -> dict[str, Any]:
    return {"page_content": passage, "metadata": {
        "doc_id": f"doc-{i // 10}", "source": f"docs/doc-{i // 10}.pdf", "chunk_index": i % 10,
        "page_number": i % 10 + 1, "tenant": f"t{i % TENANTS}", "content_hash": f"{i // 10:064x}",
        "embedding_model": MODEL,
    }}


# -- measuring -------------------------------------------------------------------------------------
def _rss(*pids: int | str) -> tuple[int, int]:
    """Resident and peak resident bytes of this process (no ``pids``), or the sum over ``pids``."""
    rss = peak = 0
    for pid in pids or ("self",):
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss, peak = rss + int(fields["VmRSS"].split()[0]) * 1024, peak + int(fields["VmHWM"].split()[0]) * 1024
    return rss, peak



def disk_bytes(path: Path, allocated: bool = True, skip: str | None = None) -> int:
    """Bytes of the files under ``path``: the blocks they occupy (``du``: preallocated, unwritten
    parts not counted), or their sizes with ``allocated=False``; files under a directory named
    ``skip`` are left out."""
    total = 0
    for d, dirs, files in os.walk(path):
        dirs[:] = [x for x in dirs if x != skip]
        for f in files:
            st = os.stat(os.path.join(d, f))
            total += st.st_blocks * 512 if allocated else st.st_size
    return total


def _percentiles(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2)}


def _spread(times: list[float], noun: str) -> dict[str, Any]:
    """``{noun: how many, p50_ms, p95_ms, p99_ms, max_ms}`` of latencies in ms."""
    if not times:
        return {noun: 0}
    return {noun: len(times), **_percentiles(times), "p99_ms": round(float(np.percentile(times, 99)), 2),
            "max_ms": round(max(times), 2)}


def _latency(fn, runs: list[Any]) -> dict[str, float]:
    for arg in runs[:3]:  # warm-up
        fn(arg)
    times = []
    for arg in runs:
        t0 = time.perf_counter()
        fn(arg)
        times.append((time.perf_counter() - t0) * 1000)
    return _percentiles(times)


def _hybrid(store, fusion, tenant: str | None = None):
    filters = {"tenant": tenant} if tenant is not None else None
    return lambda q: store.search(q[0], 10, filters, sparse=q[1], mode="hybrid", fusion=fusion)


def _searches(store, queries: list[tuple[np.ndarray, Any]]) -> dict[str, dict[str, float]]:
    fusion = Fusion()
    return {
        "dense": _latency(lambda q: store.search(q[0], 10, mode="dense"), queries),
        "sparse": _latency(lambda q: store.search(None, 10, sparse=q[1], mode="sparse"), queries),
        "hybrid": _latency(_hybrid(store, fusion), queries),
        "hybrid_filtered": _latency(_hybrid(store, fusion, "t3"), queries),
        # the engine's own fusion (KORAG_FUSION_METHOD): one query with a dense and a sparse prefetch
        "hybrid_rrf": _latency(_hybrid(store, replace(fusion, method="rrf")), queries),
        "hybrid_dbsf": _latency(_hybrid(store, replace(fusion, method="dbsf")), queries),
    }


def _recall(client, queries: list[tuple[np.ndarray, Any]]) -> float:
    """Dense recall@10 of the engine's default search against exact search."""
    hits = 0
    for vector, _ in queries:
        kw = dict(query=vector.tolist(), using="dense", limit=10, with_payload=False)
        approx = {p.id for p in client.query_points(COLLECTION, **kw).points}
        exact = {p.id for p in client.query_points(COLLECTION, search_params=models.SearchParams(exact=True), **kw).points}
        hits += len(approx & exact)
    return round(hits / (10 * len(queries)), 4)


class Steady:
    """A chatbot's searches: ``search(query)`` every ``interval`` seconds from a thread for as long
    as the ingest runs (writes and index upkeep), the latencies in ms. A search's latency counts
    from when it was due, so a search that could not even start (the GIL held by an index step)
    counts its wait. Also a context manager (started on entry, stopped on exit)."""

    def __init__(self, search: Callable[[Any], Any], queries, interval: float = STEADY_INTERVAL_S) -> None:
        self.search = search
        self.queries = queries
        self.interval = interval
        self.upkeep = threading.Event()  # set while after_batch runs
        self.during_ingest: list[float] = []
        self.during_upkeep: list[float] = []
        self.faulted: list[bool] = []  # per search of during_ingest: the process read pages from disk meanwhile
        # per search of during_ingest: ms from when it was due to when it started (queued behind
        # the searches before it), from its start to its end, and this thread's CPU meanwhile
        self.queued: list[float] = []
        self.service: list[float] = []
        self.service_cpu: list[float] = []
        self.mem_available_min_mb: float | None = None  # the least seen after a search
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="korag-steady", daemon=True)

    def _run(self) -> None:
        i, due = 0, time.perf_counter()
        while not self._stop.is_set():
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            in_upkeep = self.upkeep.is_set()
            faults = major_faults()
            start, cpu = time.perf_counter(), time.thread_time()
            self.search(self.queries[i % len(self.queries)])
            end = time.perf_counter()
            self.service_cpu.append((time.thread_time() - cpu) * 1000)
            self.queued.append((start - due) * 1000)
            self.service.append((end - start) * 1000)
            waited = (end - due) * 1000
            self.during_ingest.append(waited)
            self.faulted.append(major_faults() > faults)
            available, least = mem_available_mb(), self.mem_available_min_mb
            self.mem_available_min_mb = available if least is None else min(least, available)
            if in_upkeep or self.upkeep.is_set():
                self.during_upkeep.append(waited)
            i += 1
            due += self.interval
            due = max(due, time.perf_counter() - 1.0)  # a long stall is one late search, not a burst after it

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "Steady":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _figures(times: list[float]) -> dict[str, Any]:
        return _spread(times, "searches")

    def figures(self) -> dict[str, Any]:
        """Also the searches during ingest split by whether the process waited on page reads from
        disk (major faults, any thread) while they ran, and the least memory the machine had
        available: a store bigger than memory makes searches wait on the disk. ``queued``: how
        long each search waited for the ones before it to finish; ``service``: from its start to
        its end, and ``service_cpu`` this thread's CPU meanwhile (its Python: building requests,
        reading answers; Edge runs a query on threads of its own while the caller waits, holding
        the GIL). Searches that cost more than ``interval`` queue up: a tail made of ``queued`` is
        a search thread that cannot keep up, one made of ``service`` searches held up while they
        ran."""
        pairs = list(zip(self.during_ingest, self.faulted))
        return {"interval_ms": round(self.interval * 1000), "during_ingest": self._figures(self.during_ingest),
                "queued": self._figures(self.queued), "service": self._figures(self.service),
                "service_cpu": self._figures(self.service_cpu),
                "during_upkeep": self._figures(self.during_upkeep),
                "with_major_faults": self._figures([t for t, f in pairs if f]),
                "without_major_faults": self._figures([t for t, f in pairs if not f]),
                "mem_available_min_mb": round(self.mem_available_min_mb) if self.mem_available_min_mb is not None else None}


class _Upkeep:
    """Runs ``after_batch``, timed, flagging the steady searches issued meanwhile."""

    def __init__(self, steady: Steady) -> None:
        self.steady = steady
        self.calls: list[float] = []
        self.spans: list[tuple[float, float]] = []  # time.monotonic() at start and end, for the health probes

    def __call__(self, client) -> None:
        self.steady.upkeep.set()
        start = time.monotonic()
        t0 = time.perf_counter()
        try:
            after_batch(client)
        finally:
            self.calls.append(time.perf_counter() - t0)
            self.spans.append((start, time.monotonic()))
            self.steady.upkeep.clear()

    def figures(self) -> dict[str, Any]:
        during = self.steady.during_upkeep
        return {"calls": len(self.calls), "total_s": round(sum(self.calls), 1), "max_s": round(max(self.calls), 1),
                "hybrid_during": {**_percentiles(during), "max_ms": round(max(during), 1)} if during else None}


class _Healthz(BaseHTTPRequestHandler):
    """``GET /healthz``: 200 ``{"status":"ok"}`` at once, like korag's own (api/app.py)."""

    def do_GET(self) -> None:
        body = b'{"status":"ok"}' if self.path == "/healthz" else b'{"detail":"Not Found"}'
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Health:
    """``/healthz`` served from a daemon thread of this process, probed from another process
    (``korag.bench.healthprobe``) every ``interval`` seconds between :meth:`start` and
    :meth:`stop`; a probe's latency is how long this process took to run a Python thread
    (its GIL held by an index step: the whole wait)."""

    def __init__(self, interval: float = HEALTH_INTERVAL_S, timeout: float = HEALTH_TIMEOUT_S) -> None:
        self.interval, self.timeout = interval, timeout
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/healthz"
        self.records: list[list[float | None]] = []  # [due, done, latency_ms or None] (healthprobe)
        self.window = (0.0, 0.0)  # time.monotonic() at start and stop
        self._probe: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the probing process and wait until its first probe is answered (or failed)."""
        cmd = [sys.executable, "-m", "korag.bench.healthprobe", self.url, str(self.interval), str(self.timeout)]
        self._probe = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._probe.stdout is not None
        if self._probe.stdout.readline().strip() != "ready":
            raise RuntimeError("bench store: the health probe did not start")
        self.window = (time.monotonic(), 0.0)

    def stop(self) -> None:
        """Stop probing (the probe finishes the probe in flight) and the server; keep the records."""
        self.window = (self.window[0], time.monotonic())
        assert self._probe is not None and self._probe.stdin is not None and self._probe.stdout is not None
        self._probe.stdin.close()
        out = self._probe.stdout.read()
        if self._probe.wait() != 0:
            raise RuntimeError(f"bench store: the health probe failed (exit {self._probe.returncode})")
        self.records = json.loads(out.strip().splitlines()[-1])
        self.server.shutdown()
        self.server.server_close()

    def _window_figures(self, records: list[list[float | None]]) -> dict[str, Any]:
        answered = [r[2] for r in records if r[2] is not None]
        late = sum(1 for r in records if r[2] is None or r[2] > HEALTH_TARGET_MS)
        spread = _spread(answered, "answered")
        return {"probes": len(records), "answered": spread.pop("answered"), "over_1000_ms": late, **spread}

    def figures(self, upkeep_spans: list[tuple[float, float]]) -> dict[str, Any]:
        """The probes due between :meth:`start` and :meth:`stop`; ``during_upkeep``: those in
        flight (due to done) while one of ``upkeep_spans`` (monotonic start, end) ran."""
        first, last = self.window
        ingest = [r for r in self.records if first <= r[0] <= last]
        upkeep = [r for r in ingest if any(r[0] <= end and r[1] >= start for start, end in upkeep_spans)]
        return {"interval_ms": round(self.interval * 1000), "timeout_s": self.timeout,
                "during_ingest": self._window_figures(ingest), "during_upkeep": self._window_figures(upkeep)}


def run_engine(backend: str, points: int, n_queries: int, corpus: Path, workdir: Path) -> dict[str, Any]:
    """One engine in this process: write, search, reopen. ``backend``: one of :data:`ENGINES`, an
    embedded one with :data:`REMOTE` appended to run it in a store process."""
    edge = backend.startswith("edge")
    engine, remote = backend.removesuffix(REMOTE), backend.endswith(REMOTE)

    def open_client():
        if engine == "local":
            return QdrantClient(path=str(workdir))
        return (RemoteEdgeClient if remote else EdgeClient)(workdir, upkeep="process" if engine == "edge-process" else "inline")

    passages, asked, source = _texts(corpus, n_queries)
    encoder = SparseEncoder()
    t0 = time.perf_counter()
    sparse = [encoder.encode_document(p) for p in passages]
    encode_s = time.perf_counter() - t0
    qdense = near_queries(points, n_queries, np.random.default_rng(5))
    queries = list(zip(qdense, [encoder.encode_query(q) for q in asked]))

    result: dict[str, Any] = {"backend": backend, "points": points, "dimension": DIM, "texts": source,
                              "distinct_passages": len(passages), "kiwi_encode_s": round(encode_s, 2)}
    client = open_client()
    store = QdrantStore(client, COLLECTION, upsert_batch_size=256)
    store.ensure_collection(MODEL, DIM)
    steady = Steady(_hybrid(store, Fusion()), queries)
    upkeep = _Upkeep(steady)
    # steady searches, /healthz probes and the stall watchdog: for the embedded engine only
    health = Health() if edge else None
    stalls = Stalls() if edge else None
    if edge:
        health.start()
        steady.start()
        stalls.start()
    store_cpu = cpu_seconds(client.pid) if remote else 0.0
    upsert_s = 0.0
    for start in range(0, points, WRITE_POINTS):
        n = min(WRITE_POINTS, points - start)
        vectors = _dense(start, n)
        ids = [point_id(f"doc-{i // 10}", i % 10) for i in range(start, start + n)]
        payloads = [_payload(i, passages[i % len(passages)]) for i in range(start, start + n)]
        sparse_rows = [sparse[i % len(passages)] for i in range(start, start + n)]
        t0 = time.perf_counter()
        store.upsert(ids, vectors, payloads, sparse_rows)  # Edge: through upsert_plain, upsert_batch_size at a time
        upsert_s += time.perf_counter() - t0
        if edge and ((start + n) % BATCH_POINTS == 0 or start + n == points):
            upkeep(client)
    if edge:
        stalls.stop()
        steady.stop()
        health.stop()
    result["upsert_points_per_s"] = round(points / upsert_s, 1)
    assert store.count() == points, "points went missing"
    if edge:
        result["upkeep"] = upkeep.figures()
        result["steady_hybrid"] = steady.figures()
        result["healthz"] = health.figures(upkeep.spans)
        result["stalls"] = stalls.figures()
        if remote:  # the store process's CPU during the ingest, its peak memory until now
            result["store_process"] = {"cpu_s": round(cpu_seconds(client.pid) - store_cpu, 1),
                                       "peak_rss_bytes": _rss(client.pid)[1]}
        result["dense_recall_at_10"] = _recall(client, queries[:20])
    result.update(_searches(store, queries))
    client.close()

    t0 = time.perf_counter()
    client = open_client()
    reopened = client.count(COLLECTION, exact=True).count
    result["reopen_s"] = round(time.perf_counter() - t0, 2)
    assert reopened == points
    t0 = time.perf_counter()
    QdrantStore(client, COLLECTION).search(queries[0][0], 10, sparse=queries[0][1], mode="hybrid")
    result["reopen_first_hybrid_s"] = round(time.perf_counter() - t0, 2)
    result["disk_bytes"] = disk_bytes(workdir)
    result["rss_bytes"], result["peak_rss_bytes"] = _rss("self", client.pid) if remote else _rss()
    client.close()
    return result


# -- both engines ----------------------------------------------------------------------------------
def _child(engine: str, points: int, queries: int, corpus: Path) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"korag-store-bench-{engine}-"))
    try:
        cmd = [sys.executable, "-m", "korag.bench.store", engine, str(points), str(queries), str(corpus), str(workdir)]
        print(f"bench store: {engine}, {points} points ...", file=sys.stderr, flush=True)
        child = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if child.returncode != 0:
            raise RuntimeError(f"bench store: the {engine} run failed (exit {child.returncode})")
        return json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(points: int = 100_000, local_points: int = 5_000, queries: int = 50, local_queries: int = 20,
        corpus: Path = DEFAULT_CORPUS, upkeep: str = "inline", store_process: bool = False) -> dict[str, Any]:
    """The embedded store at ``points``, the old local mode at ``local_points`` (0: skip; it
    scores sparse vectors in Python, so it gets fewer queries). ``upkeep``: ``inline`` (the
    store before issue 22), ``process`` (``KORAG_EDGE_UPKEEP=process``, korag's default: its
    figures in place of inline's) or ``both`` (inline's, and the process mode's under ``process``).
    ``store_process``: the embedded store in a store process (``KORAG_EDGE_STORE_PROCESS``)."""
    suffix = REMOTE if store_process else ""
    result = _child(("edge-process" if upkeep == "process" else "edge") + suffix, points, queries, corpus)
    if upkeep == "both":
        result["process"] = _child("edge-process" + suffix, points, queries, corpus)
    result["local"] = _child("local", local_points, local_queries, corpus) if local_points > 0 else None
    load = os.getloadavg()
    result["machine"] = {"cpus": os.cpu_count(), "load_avg_1m": round(load[0], 2), "python": platform.python_version(),
                         "platform": platform.platform()}
    return result


def _flat(prefix: str, obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [line for key, value in obj.items() for line in _flat(f"{prefix}.{key}" if prefix else key, value)]
    return [f"{prefix}: {obj}"]


def render(result: dict[str, Any]) -> str:
    """The human-readable form: one ``key.path: value`` line per figure."""
    return "\n".join(_flat("", result))


if __name__ == "__main__":  # a child run: python -m korag.bench.store ENGINE POINTS QUERIES CORPUS DIR
    engine, n_points, n_queries, corpus_dir, directory = sys.argv[1:6]
    print(json.dumps(run_engine(engine, int(n_points), int(n_queries), Path(corpus_dir), Path(directory))))
