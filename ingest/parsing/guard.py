"""Run a parser in a forked child under a memory limit and a timeout, so one hostile or
pathological file costs a failed document, never the worker.

The child inherits the loaded libraries (no start-up cost), caps its address space with
RLIMIT_AS at what it already maps plus the allowance, parses, and sends the result back
through a pipe. The parent kills it at the deadline. The child never outlives its parent or
its time: it asks the kernel for SIGKILL when the parent dies (``PR_SET_PDEATHSIG``; a parent
killed with SIGKILL cannot kill it), and it kills itself a little after the deadline
(``alarm``, and RLIMIT_CPU for CPU time), even when the parent is stopped and cannot.
"""

from __future__ import annotations

import ctypes
import math
import os
import pickle
import resource
import selectors
import signal
import time
from collections.abc import Callable
from functools import cache
from typing import TypeVar

from korag.errors import DocumentError

T = TypeVar("T")

GRACE_S = 2  # the child's own limit is the parent's deadline plus this, so the parent reports first
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@cache
def _prctl():
    """libc's prctl, looked up before forking; None where there is none (not Linux)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * resource.getpagesize()


def _bind_to_parent(parent: int, timeout_s: float) -> None:
    """In the child: die with the parent, and by itself a little after the deadline."""
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    own_limit = math.ceil(timeout_s) + GRACE_S
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the default action ends the process
    signal.alarm(own_limit)
    # A backstop should a parser install its own SIGALRM handler: CPU seconds of all threads,
    # hence twice the wall-clock limit; SIGXCPU at the soft limit, SIGKILL at the hard one.
    cpu = math.ceil(sum(os.times()[:2])) + 2 * own_limit
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or hard > cpu:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + GRACE_S if hard == resource.RLIM_INFINITY else hard))


def run_guarded(parse: Callable[[], T], source: str, timeout_s: float, memory_bytes: int) -> T:
    parent = os.getpid()
    _prctl()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 0
        try:
            _bind_to_parent(parent, timeout_s)
            os.close(read_fd)
            limit = _mapped_bytes() + memory_bytes
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            result = attempt(parse)
            with os.fdopen(write_fd, "wb") as out:
                out.write(pickle.dumps(result))
        except BaseException:  # noqa: BLE001
            status = 1
        finally:
            os._exit(status)

    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    timed_out = False
    with os.fdopen(read_fd, "rb") as pipe, selectors.DefaultSelector() as selector:
        selector.register(pipe, selectors.EVENT_READ)  # not select(): no limit on the descriptor's number
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if selector.select(remaining):
                data = os.read(pipe.fileno(), 1 << 20)
                if not data:
                    break
                chunks.append(data)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, wait_status = os.waitpid(pid, 0)
    signalled = os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None
    too_slow = DocumentError(source, f"parsing took longer than {timeout_s:g} s (KORAG_PARSE_TIMEOUT_S)")
    if timed_out:
        raise too_slow
    limit_mb = memory_bytes // (1024 * 1024)
    try:
        kind, value = pickle.loads(b"".join(chunks))
    except Exception:  # noqa: BLE001 - nothing, or a result cut short: the child died
        if signalled in (signal.SIGALRM, signal.SIGXCPU):  # its own time limit
            raise too_slow from None
        how = f"signal {signalled}" if signalled is not None else f"exit {os.WEXITSTATUS(wait_status)}"
        raise DocumentError(source, f"the parser crashed ({how}); memory limit {limit_mb} MiB (KORAG_PARSE_MEMORY_MB)") from None
    return unwrap(kind, value, source, memory_bytes)


def attempt(work: Callable[[], T]) -> tuple[str, object]:
    """In a parser process: run ``work`` and turn its outcome into a picklable ``(kind, value)``."""
    try:
        return ("ok", work())
    except DocumentError as exc:
        return ("document", exc.reason)
    except MemoryError:
        return ("memory", None)
    except BaseException as exc:  # noqa: BLE001 - everything becomes the document's error
        return ("error", f"{type(exc).__name__}: {exc}")


def unwrap(kind: str, value, source: str, memory_bytes: int):
    """In the parent: the value of an ``attempt``, or the DocumentError it stands for."""
    if kind == "ok":
        return value
    if kind == "document":
        raise DocumentError(source, value)
    if kind == "memory":
        limit_mb = memory_bytes // (1024 * 1024)
        raise DocumentError(source, f"parsing needed more than {limit_mb} MiB of memory (KORAG_PARSE_MEMORY_MB)")
    raise DocumentError(source, f"parser error: {value}")
