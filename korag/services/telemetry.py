"""Prometheus metrics for `korag serve`'s ``GET /metrics``, in a registry of their own (never
prometheus_client's global one, so two services or tests in one process do not collide).

    metrics = Metrics(queue_depth=lambda: queued_count())
    pipeline.on_step = metrics.step_hook()           # time per pipeline state
    pipeline = Pipeline.build(metrics.embedder(embedder), store, settings)   # chunks and tokens embedded
    metrics.record_result(result)                    # documents by outcome
    with metrics.search_timer("hybrid"): ...         # search latency
    metrics.observe_http("GET", "/v1/documents/{doc_id}", 200, seconds)   # the route template, not the path
    body, content_type = metrics.render()

Plain module: no web framework here; the service's middleware calls :meth:`observe_http`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("korag.telemetry")

# Seconds. Searches take milliseconds; a document's stages take up to minutes (parse timeout 300 s).
SEARCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Every label of korag_stage_duration_seconds, with what it times: the metric's help text is made
# from this, and observe_stage refuses any other label, so the two cannot drift apart.
STAGES = {
    "queue": "a document's wait in korag serve's ingest queue, from upload to the start of its ingest",
    "ingest": "a document's whole ingest in korag serve, from the start of its batch to its outcome "
              "(parse, embed, record and cleanup, shared with the batch's other documents)",
    "parse": "parse, chunk and keyword vectors of a document ingested on its own (not in a batch, so "
             "not in korag serve, whose ingest is batched: see ingest)",
    "embed": "one model call, for a document or a batch",
    "record": "recording the new versions (one registry write per batch)",
    "cleanup": "deleting a document's older versions",
}
# A pipeline state and the one that follows it (ingest.pipeline's on_step names): the time between
# the two is a stage of the document. Embedding is timed at the model call (MeteredEmbedder).
_NEXT_STEP = {"parsing": "embedding", "upserted": "indexed", "indexed": "cleaned"}
_STAGE_OF_STEP = {"parsing": "parse", "upserted": "record", "indexed": "cleanup"}
_CHAIN = frozenset({"parsing", "embedding", "upserted", "indexed", "cleaned"})


def stage_help() -> str:
    """The help text of korag_stage_duration_seconds: every stage label and what it times."""
    return "Time of an ingest stage, by label (" + "; ".join(f"{k}: {v}" for k, v in STAGES.items()) + ")"


class Metrics:
    """The service's metrics. Every method is thread-safe (prometheus_client's are)."""

    def __init__(self, queue_depth: Callable[[], float] | None = None, namespace: str = "korag") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, ns = self.registry, namespace
        self.documents = Counter("documents", "Documents by outcome of an ingest or delete "
                                 "(indexed, unchanged, failed, superseded, deleted, queued)", ["outcome"], namespace=ns, registry=r)
        self.stage_seconds = Histogram("stage_duration_seconds", stage_help(), ["stage"], namespace=ns, registry=r,
                                       buckets=STAGE_BUCKETS)
        self.chunks_embedded = Counter("chunks_embedded", "Chunks embedded", namespace=ns, registry=r)
        self.tokens_embedded = Counter("tokens_embedded", "Model tokens of the chunks embedded", namespace=ns,
                                       registry=r)
        self.queue_depth = Gauge("queue_depth", "Documents waiting to be ingested (queued)", namespace=ns, registry=r)
        self.documents_stalled = Gauge("documents_stalled", "Documents parsing or embedding under a worker process "
                                       "that is gone (a worker's sweep sends them again)", namespace=ns, registry=r)
        self.rerank_seconds = Histogram("rerank_duration_seconds", "Re-ranking latency per search "
                                        "(KORAG_RERANK_MODEL; part of search_duration_seconds)", namespace=ns,
                                        registry=r, buckets=SEARCH_BUCKETS)
        self.search_seconds = Histogram("search_duration_seconds", "Search latency, embedding the query included",
                                        ["mode"], namespace=ns, registry=r, buckets=SEARCH_BUCKETS)
        self.http_requests = Counter("http_requests", "HTTP requests by method, route template and status code",
                                     ["method", "route", "code"], namespace=ns, registry=r)
        self.http_seconds = Histogram("http_request_duration_seconds", "HTTP request latency by method and route",
                                      ["method", "route"], namespace=ns, registry=r, buckets=HTTP_BUCKETS)
        self.set_queue_depth(queue_depth)
        self.set_stalled(None)
        self._steps = threading.local()

    # -- documents ------------------------------------------------------------------------------
    def record_document(self, outcome: str, count: int = 1) -> None:
        self.documents.labels(outcome=outcome).inc(count)

    def record_result(self, result: Any) -> None:
        """An ingest outcome (korag.types.IngestResult, or anything with ``.status``)."""
        self.record_document(str(result.status))

    def observe_stage(self, stage: str, seconds: float) -> None:
        """``stage``: one of :data:`STAGES` (a ValueError otherwise: a new stage is documented there first)."""
        if stage not in STAGES:
            raise ValueError(f"stage {stage!r} is not one of korag.services.telemetry.STAGES ({', '.join(STAGES)})")
        self.stage_seconds.labels(stage=stage).observe(max(0.0, seconds))

    @contextlib.contextmanager
    def stage(self, stage: str) -> Iterator[None]:
        """Time a block as a stage (e.g. ``with metrics.stage("embed"): ...``)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe_stage(stage, time.perf_counter() - started)

    def step_hook(self, then: Callable[[str], None] | None = None) -> Callable[[str], None]:
        """An ``on_step`` for :class:`ingest.pipeline.Pipeline` (steps carry no document id, so
        the hook reads their order). Observed stages: ``record`` (upserted → indexed) and
        ``cleanup`` (indexed → cleaned), which follow each other within one document even in a
        batch; ``parse`` (parsing → embedding) only while one document at a time is parsing in
        the thread (``Pipeline.ingest_bytes``, a batch of one): a batch that starts several
        documents before embedding them is not timed here (time it with :meth:`stage`). The
        model call is timed by :meth:`embedder`. ``then``: an on_step to call as well."""
        local = self._steps

        def on_step(step: str) -> None:
            now = time.perf_counter()
            previous = getattr(local, "step", None)
            opened = getattr(local, "parsing", 0)
            if previous is not None and _NEXT_STEP.get(previous[0]) == step and (step != "embedding" or opened == 1):
                self.observe_stage(_STAGE_OF_STEP[previous[0]], now - previous[1])
            if step == "parsing":
                local.parsing = opened + 1
            elif step not in _CHAIN or step == "cleaned":  # a document left the pipeline: start over
                local.parsing = 0
            local.step = (step, now) if step in _NEXT_STEP else None
            if then is not None:
                then(step)

        return on_step

    def record_embedded(self, chunks: int, tokens: int) -> None:
        self.chunks_embedded.inc(chunks)
        self.tokens_embedded.inc(tokens)

    def embedder(self, embedder: Any) -> "MeteredEmbedder":
        """``embedder`` counting the chunks and tokens it embeds and timing each model call;
        pass it to the ingest pipeline."""
        return MeteredEmbedder(embedder, self)

    def set_queue_depth(self, callback: Callable[[], float] | None) -> None:
        """Read at every scrape; a callback that fails reports NaN instead of breaking /metrics."""
        _read_at_scrape(self.queue_depth, callback, "queue depth")

    def set_stalled(self, callback: Callable[[], float] | None) -> None:
        """``documents_stalled``, read at every scrape like the queue depth."""
        _read_at_scrape(self.documents_stalled, callback, "stalled documents")

    # -- search and HTTP ------------------------------------------------------------------------
    def observe_search(self, mode: str, seconds: float) -> None:
        self.search_seconds.labels(mode=mode).observe(max(0.0, seconds))

    def observe_rerank(self, seconds: float) -> None:
        self.rerank_seconds.observe(max(0.0, seconds))

    @contextlib.contextmanager
    def search_timer(self, mode: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe_search(mode, time.perf_counter() - started)

    def observe_http(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """``route``: the route's template (``/v1/documents/{doc_id}``), never the raw path, so
        ids do not make a series each; None (no route matched) is counted as ``unmatched``."""
        route = route if route is not None else "unmatched"
        self.http_requests.labels(method=method, route=route, code=str(status)).inc()
        self.http_seconds.labels(method=method, route=route).observe(max(0.0, seconds))

    # -- exposition -----------------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type, for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _read_at_scrape(gauge: Gauge, callback: Callable[[], float] | None, what: str) -> None:
    """The gauge reads ``callback`` at every scrape (0 without one); a callback that fails reports
    NaN instead of breaking /metrics."""
    if callback is None:
        gauge.set_function(lambda: 0.0)
        return

    def read() -> float:
        try:
            return float(callback())
        except Exception as exc:  # a broker or store that is down must not take /metrics with it
            log.warning("%s unavailable: %s", what, exc)
            return math.nan

    gauge.set_function(read)


class MeteredEmbedder:
    """An embedder that counts what :meth:`embed_passages` embeds and times each call (stage
    ``embed``); everything else is the wrapped embedder's."""

    def __init__(self, inner: Any, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def embed_passages(self, chunks):
        with self._metrics.stage("embed"):
            vectors, token_counts = self._inner.embed_passages(chunks)
        self._metrics.record_embedded(len(token_counts), int(sum(token_counts)))
        return vectors, token_counts

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
