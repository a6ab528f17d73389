"""A pool of warm parser processes: the isolation of :mod:`ingest.parsing.guard` (time and memory
limits, a crash costs one document) without a fork per document.

Each worker is forked once from the loaded parent (parsers, Kiwi and spaCy already in memory),
caps its address space at what it maps plus the allowance, dies with its parent
(``PR_SET_PDEATHSIG``) and arms its own alarm for every document. The parent hands a worker one
document at a time and kills it at the document's deadline. A worker that timed out, crashed,
ran out of memory or served ``max_tasks`` documents is replaced by a fresh fork.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe, wait
from typing import Any

from ingest.parsing.guard import GRACE_S, _mapped_bytes, _prctl, attempt, unwrap
from korag.errors import DocumentError

_PR_SET_PDEATHSIG = 1


@dataclass
class _Worker:
    pid: int
    conn: Connection
    served: int = 0
    job: Any = None  # (key, source) of the document it is working on
    deadline: float = 0.0


def _serve(conn: Connection, work: Callable[..., Any], parent: int, timeout_s: float, memory_bytes: int,
           warm_up: Callable[[], Any] | None) -> None:
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if warm_up is not None:  # what the parent no longer holds is loaded outside the allowance
        warm_up()
    limit = _mapped_bytes() + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    while True:
        try:
            args = conn.recv()
        except EOFError:
            os._exit(0)
        signal.alarm(math.ceil(timeout_s) + GRACE_S)  # even a stopped parent cannot keep it running
        result = attempt(lambda: work(*args))
        signal.alarm(0)
        try:
            conn.send(result)
        except MemoryError:
            conn.send(("memory", None))
        if result[0] in ("memory", "error"):  # its heap may be in any state: start afresh
            os._exit(0)


class ParserPool:
    """``pool.submit(key, *args)`` queues ``work(*args)``; ``pool.results()`` yields
    ``(key, value_or_DocumentError)`` as documents finish. Use as a context manager."""

    def __init__(self, work: Callable[..., Any], size: int, timeout_s: float, memory_bytes: int,
                 max_tasks: int = 200, warm_up: Callable[[], Any] | None = None) -> None:
        if size < 1:
            raise ValueError("a parser pool needs at least one process")
        self.work, self.size, self.timeout_s, self.memory_bytes = work, size, timeout_s, memory_bytes
        self.warm_up = warm_up  # run by each worker before its memory cap (a no-op where inherited)
        self.max_tasks = max_tasks
        self._idle: list[_Worker] = []
        self._busy: dict[Connection, _Worker] = {}
        self._queue: deque = deque()
        self._workers = 0

    def __enter__(self) -> "ParserPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._busy)

    def start(self) -> None:
        """Fork every worker now rather than at the first documents: what the parent drops after
        this (its Kiwi, in a CLI ingest) the workers still share. Later replacements load it
        themselves (``warm_up``)."""
        while self._workers < self.size:
            self._idle.append(self._fork())

    def submit(self, key: Any, source: str, *args: Any) -> None:
        self._queue.append((key, source, args))
        self._dispatch()

    def results(self) -> Iterator[tuple[Any, Any]]:
        """Every submitted document's outcome, as they finish (also those submitted meanwhile)."""
        while self._busy or self._queue:
            self._dispatch()
            now = time.monotonic()
            nearest = min(w.deadline for w in self._busy.values())
            for conn in wait(list(self._busy), timeout=max(0.0, nearest - now)):
                yield self._collect(self._busy.pop(conn))
            now = time.monotonic()
            for conn, worker in list(self._busy.items()):
                if worker.deadline <= now:
                    del self._busy[conn]
                    self._retire(worker)
                    yield worker.job[0], DocumentError(
                        worker.job[1], f"parsing took longer than {self.timeout_s:g} s (KORAG_PARSE_TIMEOUT_S)")

    def close(self) -> None:
        for worker in [*self._idle, *self._busy.values()]:
            self._retire(worker)
        self._idle, self._busy, self._workers = [], {}, 0

    # -- internals --------------------------------------------------------------------------
    def _dispatch(self) -> None:
        while self._queue:
            worker = self._idle.pop() if self._idle else (self._fork() if self._workers < self.size else None)
            if worker is None:
                return
            key, source, args = self._queue.popleft()
            worker.job, worker.deadline = (key, source), time.monotonic() + self.timeout_s
            try:
                worker.conn.send(args)
            except (BrokenPipeError, OSError):  # it died while idle: replace it and try again
                self._retire(worker)
                self._queue.appendleft((key, source, args))
                continue
            self._busy[worker.conn] = worker

    def _fork(self) -> _Worker:
        parent = os.getpid()
        _prctl()
        ours, theirs = Pipe()
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                ours.close()
                _serve(theirs, self.work, parent, self.timeout_s, self.memory_bytes, self.warm_up)
            except BaseException:  # noqa: BLE001
                status = 1
            finally:
                os._exit(status)
        theirs.close()
        self._workers += 1
        return _Worker(pid, ours)

    def _collect(self, worker: _Worker) -> tuple[Any, Any]:
        key, source = worker.job
        limit_mb = self.memory_bytes // (1024 * 1024)
        try:
            kind, value = worker.conn.recv()
        except (EOFError, OSError):
            status = self._retire(worker)
            if status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGALRM, signal.SIGXCPU):
                return key, DocumentError(source, f"parsing took longer than {self.timeout_s:g} s (KORAG_PARSE_TIMEOUT_S)")
            how = (f"signal {os.WTERMSIG(status)}" if status is not None and os.WIFSIGNALED(status)
                   else "exit" if status is not None else "unknown")
            return key, DocumentError(source, f"the parser crashed ({how}); memory limit {limit_mb} MiB "
                                              "(KORAG_PARSE_MEMORY_MB)")
        worker.served += 1
        if kind in ("memory", "error") or worker.served >= self.max_tasks:
            self._retire(worker)
        else:
            self._idle.append(worker)
        try:
            return key, unwrap(kind, value, source, self.memory_bytes)
        except DocumentError as exc:
            return key, exc

    def _retire(self, worker: _Worker) -> int | None:
        try:
            os.kill(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.conn.close()
        self._workers -= 1
        try:
            return os.waitpid(worker.pid, 0)[1]
        except ChildProcessError:
            return None
