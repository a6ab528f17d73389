"""Many documents through one pipeline, streaming: read → (warm parser pool: parse, chunk,
keyword terms) → embed across document boundaries → upsert and record.

The per-document steps are :class:`~ingest.pipeline.Pipeline`'s own (``begin``, ``prepare``,
``finish``), so ownership, ``unchanged``, limits and failures behave exactly as for one document;
what changes is the cost around them. Parsing runs in a pool of warm processes (one per core by
default) under the same time and memory limits, instead of a fork per document, and keeps
working while the model embeds; the model gets the chunks of many documents per call. One
bad document never stalls or fails its neighbours. Results come out in input order.

**Overlap or take turns.** With the model on an accelerator, parsing runs beside it, and a model
call takes ``batch_chunks`` chunks (sooner when the model is idle), so the accelerator is never
kept waiting. With the model on the CPU, the model and the parsers want the same cores: parsing
beside the model only slows the model down by as much, and cuts its work into small calls
(more padding, more batches). There the two take turns: the parsers fill a window of
``window_chunks`` chunks while the model rests, then the model embeds the window in one call
(batches formed over all of it) while the parsers rest; the previous window's documents are
written meanwhile. The window follows the model's size (:func:`window_for`), so that one call
takes about as long with KoE5 as with MiniLM. Measured in bench/RESULTS.md.

**Memory follows the window.** A model call takes at most ``window_chunks`` chunks, in either
mode: a document with more comes as several windows, each embedded and written in turn
(:meth:`Pipeline.store_part`), and only its last records it ``indexed`` (:meth:`Pipeline.finish`),
so readers keep the version indexed before until every window is stored. A document taken over
by a newer request (or failed) meanwhile stops at its next window and removes what it wrote.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.parsing.pool import ParserPool
from ingest.pipeline import Pending, Pipeline
from ingest.sentences import release_kiwi
from ingest.sparse import SparseVector
from ingest.starters import FromFile, Starter
from korag.errors import DocumentError, InputTooLongError
from korag.settings import Settings
from korag.types import Chunk, DocumentInfo, IngestResult

log = logging.getLogger("korag.ingest")


@dataclass
class _Prepared:
    """A window of one parsed document's chunks: a document over a window comes as several, in
    order, and only its last one records it (:meth:`Pipeline.store_part`, :meth:`Pipeline.finish`)."""

    index: int
    pending: Pending
    chunks: list[Chunk]
    sparse: list
    total: int  # the document's chunks, all windows together
    last: bool = True


# Taking turns, a window holds about this many chunks x model parameters: 4,096 chunks for
# MiniLM (23M parameters; ~40 s on 2 CPU cores), 178 for KoE5 (560M; minutes on 2 cores, where a
# window of 4,096 would keep every result back for hours). Larger windows pad less (one call
# plans its batches over more lengths): 2,048 -> 4,096 chunks, 1.032 -> 1.012x the padded work
# of one call over all 7,822 chunks of the AutoRAG corpus.
WINDOW_WORK = 1e11
WINDOW_CHUNKS = (64, 4096)  # the smallest and the largest window


def window_for(parameters: int) -> int:
    """Chunks per window, taking turns, for a model of ``parameters`` parameters."""
    low, high = WINDOW_CHUNKS
    return int(min(high, max(low, WINDOW_WORK // max(1, parameters))))


class BatchIngest:
    """``BatchIngest(pipeline).ingest(starters)`` → one result per document (``run`` for files).

    The Celery stages (:mod:`ingest.stages`) use the same engine in two halves, because the
    queue splits a document's life between tasks and workers: :meth:`parse` (the parse stage) and
    :meth:`embed` (whichever worker holds the model), with ``contain_errors=False`` so that a store
    or model error goes back to the task, which Celery retries.

    ``on_embedded(chunks, documents)`` is called after each model call (worker metrics)."""

    def __init__(self, pipeline: Pipeline, workers: int | None = None, batch_chunks: int = 256,
                 overlap: bool | None = None, window_chunks: int | None = None, keep_kiwi: bool = True,
                 contain_errors: bool = True, on_embedded: Callable[[int, int], None] | None = None) -> None:
        self.pipeline = pipeline
        # True: a store or model error costs the document it happened to (failed, the run goes on);
        # False: it is raised to the caller (a queued task, retried by its queue)
        self.contain_errors = contain_errors
        self.on_embedded = on_embedded
        # False where this process analyses no text of its own (a CLI ingest; `korag serve` does,
        # for queries): with a parser pool, its Kiwi (~480 MB) goes once the workers are forked.
        self.keep_kiwi = keep_kiwi
        self.workers = workers if workers is not None else max(1, os.cpu_count() or 1)
        self.batch_chunks = batch_chunks
        # None: overlap unless the model runs on the CPU the parsers use
        self.overlap = overlap if overlap is not None else not pipeline.embedder.on_cpu
        self.window_chunks = window_chunks if window_chunks is not None else window_for(pipeline.embedder.parameters)
        self._model: ThreadPoolExecutor | None = None  # runs the model call while parsing goes on
        self._inflight: tuple[list[_Prepared], Future] | None = None  # the one model call under way

    @classmethod
    def from_settings(cls, pipeline: Pipeline, settings: Settings, keep_kiwi: bool = True) -> "BatchIngest":
        overlap = {"auto": None, "on": True, "off": False}[settings.ingest_overlap]
        return cls(pipeline, workers=settings.parse_workers, overlap=overlap, keep_kiwi=keep_kiwi)

    def run(self, documents: Iterable[tuple[Path, str]], info: DocumentInfo | None = None) -> Iterator[IngestResult]:
        """Files ``(path, source)`` with one description, ingested in this process (``korag ingest``)."""
        info = info if info is not None else DocumentInfo()
        return self.ingest(FromFile(Path(path), source, info) for path, source in documents)

    def ingest(self, starters: Iterable[Starter]) -> Iterator[IngestResult]:
        """One result per document, in input order, as soon as it and those before it are done."""
        done: dict[int, IngestResult] = {}
        pending: dict[int, Pending] = {}
        ready: list[_Prepared] = []
        emitted = 0
        with ExitStack() as stack:
            pool = self._pool(stack)
            # With a parser pool, the model runs in a thread of its own: the parsers keep being
            # fed while it embeds (torch releases the GIL). Without one, parsing shares this
            # thread (and the tokenizer) with the model, so the model call stays in line.
            self._model = stack.enter_context(ThreadPoolExecutor(1, "korag-embed")) if pool is not None else None
            stack.callback(self._settle, done)  # the last model call is written before the thread goes
            for index, starter in enumerate(starters):
                started = starter.start(self.pipeline)
                if isinstance(started, IngestResult):
                    done[index] = started
                elif pool is None:
                    self._take(index, started, self._prepare_here(started), done, ready)
                else:
                    pending[index] = started
                    self._submit(pool, index, started)
                while pool is not None and pool.pending >= 2 * self.workers:
                    self._drain(pool, pending, done, ready, limit=1)
                if self._full(ready):
                    self._embed(ready, done, pool, pending)
                while emitted in done:
                    yield done.pop(emitted)
                    emitted += 1
            if pool is not None:
                self._drain(pool, pending, done, ready, limit=None)
            self._embed(ready, done, flush=True)
        self._model = None
        while emitted in done:
            yield done.pop(emitted)
            emitted += 1

    # -- the two halves, for the Celery stages ----------------------------------------------------
    def parse(self, started: dict[int, Pending]) -> dict[int, tuple[list[Chunk], list[SparseVector]] | DocumentError]:
        """Parse, chunk and compute keyword vectors of documents already taken, all of them now:
        ``(chunks, sparse)`` or the :class:`DocumentError` per document. In the warm parser pool
        (at most one process per document) under the parse limits, like :meth:`ingest`."""
        with ExitStack() as stack:
            pool = self._pool(stack, size=len(started))
            if pool is None:
                return {index: self._prepare_here(pending) for index, pending in started.items()}
            for index, pending in started.items():
                self._submit(pool, index, pending)
            return dict(pool.results())

    def embed(self, parsed: dict[int, tuple[Pending, list[Chunk], list[SparseVector]]],
              done: dict[int, Any]) -> None:
        """Embed, write and record parsed documents, in model calls of up to ``window_chunks``
        chunks across documents (a document over that, a window at a time), exactly as
        :meth:`ingest` does; each outcome lands in ``done`` by its index as it is reached."""
        ready: list[_Prepared] = []
        for index, (pending, chunks, sparse) in parsed.items():
            self._take(index, pending, (chunks, sparse), done, ready)
        self._embed(ready, done, flush=True)

    # -- stages ---------------------------------------------------------------------------------
    def _pool(self, stack: ExitStack, size: int | None = None) -> ParserPool | None:
        """The warm parser pool (``workers`` processes, fewer when ``size`` documents need fewer);
        None when parsing is not isolated (it runs in this process)."""
        limits = self.pipeline.limits
        if not limits.isolated:
            return None
        self.pipeline.warm_up_for_fork()
        workers = max(1, min(self.workers, size)) if size is not None else self.workers
        pool = stack.enter_context(ParserPool(self.pipeline.prepare, workers, limits.timeout_s,
                                              limits.memory_bytes, warm_up=self.pipeline.warm_up_for_fork))
        if not self.keep_kiwi:
            pool.start()
            release_kiwi()
        return pool

    @staticmethod
    def _submit(pool: ParserPool, index: int, pending: Pending) -> None:
        source = pending.record.source
        pool.submit(index, source, pending.data, pending.filename, source)

    def _prepare_here(self, pending: Pending):
        try:
            return self.pipeline.prepare(pending.data, pending.filename, pending.record.source)
        except DocumentError as exc:
            return exc

    def _drain(self, pool: ParserPool, pending: dict[int, Pending], done: dict[int, IngestResult],
               ready: list[_Prepared], limit: int | None) -> None:
        taken = 0
        for index, value in pool.results():
            self._take(index, pending.pop(index), value, done, ready)
            taken += 1
            if limit is not None and taken >= limit:
                return
            if self.overlap and self._full(ready):
                self._embed(ready, done)

    def _full(self, ready: list[_Prepared]) -> bool:
        """Time for a model call. Taking turns: a window is ready. Overlapping: ``batch_chunks``
        are ready, or the model has nothing to do and a sixth of that is (the first call of a
        run starts after a few documents, not after thirty, and the model never waits while
        chunks are ready)."""
        chunks = sum(len(r.chunks) for r in ready)
        if not self.overlap:
            return chunks >= self.window_chunks
        if chunks >= self.batch_chunks:
            return True
        idle = self._model is not None and (self._inflight is None or self._inflight[1].done())
        return idle and chunks >= max(1, self.batch_chunks // 6)

    def _take(self, index: int, started: Pending, value, done: dict[int, IngestResult], ready: list[_Prepared]) -> None:
        started.data = b""  # parsed: the bytes are not needed any more
        if isinstance(value, DocumentError):
            done[index] = self._guard(started, functools.partial(self.pipeline.reject, started, value.reason))
            return
        chunks, sparse = value
        window = self.window_chunks
        for start in range(0, max(1, len(chunks)), window):  # a document without chunks is one empty window
            end = start + window
            ready.append(_Prepared(index, started, chunks[start:end], sparse[start:end], len(chunks), end >= len(chunks)))

    def _embed(self, ready: list[_Prepared], done: dict[int, IngestResult], pool: ParserPool | None = None,
               pending: dict[int, Pending] | None = None, flush: bool = False) -> None:
        """Model calls of at most ``window_chunks`` chunks for the ready documents, in order: one,
        and more while a whole window is ready (all of them when ``flush``). Taking turns, the
        documents still in the parsers join first, and parsing resumes when the calls are over."""
        if pool is not None and not self.overlap:
            self._drain(pool, pending, done, ready, limit=None)
        while ready:
            batch = [item for item in self._window(ready) if item.index not in done]  # not a failed document's rest
            if batch:
                self._call(batch, done)
            if not flush and sum(len(r.chunks) for r in ready) < self.window_chunks:
                return

    def _window(self, ready: list[_Prepared]) -> list[_Prepared]:
        """The first ready windows up to ``window_chunks`` chunks in all (at least one), taken off ``ready``."""
        taken, chunks = 1, len(ready[0].chunks)
        while taken < len(ready) and chunks + len(ready[taken].chunks) <= self.window_chunks:
            chunks += len(ready[taken].chunks)
            taken += 1
        batch, ready[:] = ready[:taken], ready[taken:]
        return batch

    def _call(self, batch: list[_Prepared], done: dict[int, IngestResult]) -> None:
        """One model call for ``batch``; then each document is written and recorded. With a model
        thread the call runs there, one at a time, and the documents of the previous call are
        written while it runs; this one's when the next starts or the run ends. A document whose
        first window is in the call is recorded ``embedding`` first."""
        batch = self._mark_embedding(batch, done)
        if not batch:
            return
        chunks = [c for item in batch for c in item.chunks]
        if self._model is None:
            future: Future = Future()
            try:
                future.set_result(self.pipeline.embedder.embed_passages(chunks))
            except Exception as exc:  # noqa: BLE001 - raised again by _settle, as from the thread
                future.set_exception(exc)
            self._inflight = (batch, future)
            self._settle(done)
            return
        future = self._model.submit(self.pipeline.embedder.embed_passages, chunks)  # queued behind the last call
        self._settle(done)  # the last call's documents are written while this one runs
        self._inflight = (batch, future)
        if not self.overlap:
            wait([future])  # the parsers rest while the model has the cores

    def _settle(self, done: dict[int, IngestResult]) -> None:
        """Wait for the model call under way, if any, and write and record its documents."""
        if self._inflight is None:
            return
        batch, future = self._inflight
        self._inflight = None
        try:
            vectors, counts = future.result()
        except InputTooLongError:  # find the document at fault: embed them one by one
            for item in batch:
                self._embed_one(item, done)
            return
        self._embedded(batch, len(counts))
        parts, start = [], 0
        for item in batch:
            end = start + len(item.chunks)
            parts.append((item, vectors[start:end], counts[start:end]))
            start = end
        for item, v, c in parts:  # windows before a document's last: written, the document not recorded yet
            if not item.last and item.index not in done:
                self._store_part(item, v, c, done)
        last = [(item, v, c) for item, v, c in parts if item.last and item.index not in done]
        if last:
            self._finish(last, done)
        self.pipeline.store.maintain()  # bounded index building, when a segment filled up

    def _mark_embedding(self, batch: list[_Prepared], done: dict[int, IngestResult]) -> list[_Prepared]:
        """Record ``embedding`` for the documents this model call starts (one registry write);
        returns the windows of those still owned (a document taken over has its outcome)."""
        starting = list({item.index: item for item in batch if item.pending.record.status != "embedding"}.values())
        if starting:
            try:
                lost = self.pipeline.mark_embedding([item.pending for item in starting])
            except Exception:  # noqa: BLE001 - the store failed somewhere: each document on its own
                lost = [self._guard(item.pending, functools.partial(self.pipeline.advance, item.pending, "embedding"))
                        for item in starting]
            for item, outcome in zip(starting, lost):
                if outcome is not None:
                    done[item.index] = outcome
        return [item for item in batch if item.index not in done]

    def _finish(self, parts: list[tuple[_Prepared, Any, list[int]]], done: dict[int, IngestResult]) -> None:
        """Write the last windows of their documents and record the documents: one upsert and one
        registry write for them all, or, when that fails, each on its own (so it costs that one only)."""
        results = self.pipeline.settle_many([(item.pending, item.chunks, item.sparse, v, c) for item, v, c in parts],
                                            self._guard)
        for (item, _, _), result in zip(parts, results):
            done[item.index] = result

    def _store_part(self, item: _Prepared, vectors, counts, done: dict[int, IngestResult]) -> None:
        """Write a window before a document's last; a failure, or the document lost to a newer
        request, is its outcome (and its later windows are skipped)."""
        def run() -> IngestResult | None:
            return self.pipeline.store_part(item.pending, item.chunks, item.sparse, vectors, counts, item.total)

        outcome = self._guard(item.pending, run)
        if outcome is not None:
            done[item.index] = outcome

    def _embed_one(self, item: _Prepared, done: dict[int, IngestResult]) -> None:
        if item.index in done:  # an earlier window of its document failed
            return

        def run() -> IngestResult | None:
            embed = self.pipeline.embedder.embed_passages
            try:  # in the model thread when there is one: never two model calls at once
                vectors, counts = self._model.submit(embed, item.chunks).result() if self._model else embed(item.chunks)
            except InputTooLongError as exc:
                return self.pipeline.reject(item.pending, str(exc))
            self._embedded([item], len(counts))
            if not item.last:
                return self.pipeline.store_part(item.pending, item.chunks, item.sparse, vectors, counts, item.total)
            return self.pipeline.finish(item.pending, item.chunks, item.sparse, vectors, counts)

        outcome = self._guard(item.pending, run)
        if outcome is not None:
            done[item.index] = outcome

    def _embedded(self, batch: list[_Prepared], chunks: int) -> None:
        documents = len({item.index for item in batch})
        log.info("embedded %d chunks of %d documents in one call", chunks, documents)
        if self.on_embedded is not None:
            self.on_embedded(chunks, documents)

    def _guard(self, pending: Pending, step: Callable[[], Any]) -> Any:
        """A store or model error costs this document only (recorded as failed, then reported);
        raised instead where errors are not contained (a queued task: its queue retries it)."""
        if not self.contain_errors:
            return step()
        record = pending.record
        try:
            with pending.failing_on_error(self.pipeline):
                return step()
        except Exception as exc:
            log.exception("%s: ingest failed", record.source)
            return IngestResult(record.source, record.doc_id, "failed", error=f"{type(exc).__name__}: {exc}")
