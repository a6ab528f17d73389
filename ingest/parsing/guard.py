"""Run a parser in a forked child under a memory limit and a timeout, so one hostile or
pathological file costs a failed document, never the worker.

The child inherits the loaded libraries (no start-up cost), caps its address space with
RLIMIT_AS at what it already maps plus the allowance, parses, and sends the blocks back
through a pipe. The parent kills it at the deadline.
"""

from __future__ import annotations

import os
import pickle
import resource
import select
import signal
import time
from collections.abc import Callable

from ingest.parsing.blocks import Block
from korag.errors import DocumentError


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * resource.getpagesize()


def run_guarded(parse: Callable[[], list[Block]], source: str, timeout_s: float, memory_bytes: int) -> list[Block]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 0
        try:
            os.close(read_fd)
            limit = _mapped_bytes() + memory_bytes
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            try:
                result: tuple = ("ok", parse())
            except DocumentError as exc:
                result = ("document", exc.reason)
            except MemoryError:
                result = ("memory", None)
            except BaseException as exc:  # noqa: BLE001 - everything becomes the document's error
                result = ("error", f"{type(exc).__name__}: {exc}")
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
    with os.fdopen(read_fd, "rb") as pipe:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([pipe], [], [], remaining)
            if ready:
                data = os.read(pipe.fileno(), 1 << 20)
                if not data:
                    break
                chunks.append(data)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, wait_status = os.waitpid(pid, 0)
    if timed_out:
        raise DocumentError(source, f"parsing took longer than {timeout_s:g} s (KORAG_PARSE_TIMEOUT_S)")
    limit_mb = memory_bytes // (1024 * 1024)
    if not chunks:
        how = f"signal {os.WTERMSIG(wait_status)}" if os.WIFSIGNALED(wait_status) else f"exit {os.WEXITSTATUS(wait_status)}"
        raise DocumentError(source, f"the parser crashed ({how}); memory limit {limit_mb} MiB (KORAG_PARSE_MEMORY_MB)")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "ok":
        return value
    if kind == "document":
        raise DocumentError(source, value)
    if kind == "memory":
        raise DocumentError(source, f"parsing needed more than {limit_mb} MiB of memory (KORAG_PARSE_MEMORY_MB)")
    raise DocumentError(source, f"parser error: {value}")
