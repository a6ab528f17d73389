"""The embedded store in a process of its own (``KORAG_EDGE_STORE_PROCESS``, issue 22).

``RemoteEdgeClient(path, ...)`` starts ``python -m korag.storage.edge_remote``, a child that
opens ``EdgeClient(path, ...)`` and runs every call this process makes, each on a thread of its
own; arguments, results and exceptions cross a socket pair as pickles. This process then holds
no Edge object: a call that holds the child's GIL (qdrant-edge-py 0.9.0 holds it for whole
queries, upserts and shard loads: up to seconds at 1M points), or a garbage collection of the
store's heap, stops the child only. Here the event loop, ``/healthz``, the parser and the
embedder go on; a store call waits for its own answer, as it waited for the GIL before.

The child holds the directory's lock for its whole life and lets go when this process closes
the client, exits, or dies (it reads the end of the socket, closes the store and exits). It
ignores SIGINT and SIGTERM, so a Ctrl-C or a stop sent to the process group never kills the
store in the middle of a write: the parent closes it. If the child dies, every call in flight
and every later one raises :class:`~korag.errors.StoreError` naming its exit status.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from korag.errors import StoreError
from korag.storage.edge_client import EdgeClient

log = logging.getLogger(__name__)
START_TIMEOUT_S = 120.0  # opening a 1M-point store reads its collection shard: ~10-20 s here
CALL_THREADS = 16  # calls the child runs at once (searches beside a long write)
_CLOSE = "close"


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (the caller gets the same type and message), else a
    :class:`StoreError` that names it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception that does not round-trip
        return StoreError(f"{type(exc).__name__}: {exc}")


class RemoteEdgeClient:
    """``EdgeClient``'s methods, run by a child process that owns the store (module docstring).
    ``path``, ``upkeep`` and ``seal_points`` as for :class:`EdgeClient`."""

    def __init__(self, path: str | Path, upkeep: str = "inline", seal_points: int | None = None,
                 start_timeout: float = START_TIMEOUT_S) -> None:
        self.path, self.upkeep, self.seal_points = Path(path), upkeep, seal_points
        self._pending: dict[int, Future] = {}
        self._ids = itertools.count()
        self._sending = threading.Lock()  # one message on the socket at a time
        self._lock = threading.Lock()  # ``_dead`` and ``_pending`` change together
        self._dead: str | None = None  # why calls fail, once the child is gone
        self._closed = False
        ours, theirs = socket.socketpair()
        # korag importable in the child as it is here (an installed package, or a checkout on the path)
        here = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "korag.storage.edge_remote", str(theirs.fileno()), str(self.path), upkeep,
                 str(seal_points or 0)],
                pass_fds=[theirs.fileno()], env=env)
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        try:
            if not self._conn.poll(start_timeout):
                raise StoreError(f"the store process for {self.path} did not open it within {start_timeout:.0f} s")
            ok, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._reap()
            raise StoreError(f"the store process for {self.path} exited while opening it "
                             f"(exit status {self._process.returncode})") from exc
        except BaseException:
            self._reap(kill=True)
            raise
        if not ok:
            self._reap()
            raise value
        self.pid = self._process.pid
        self._reader = threading.Thread(target=self._read, name="korag-store-answers", daemon=True)
        self._reader.start()

    @property
    def lost(self) -> str | None:
        """Why the store cannot be used again without a restart (its process exited), or None."""
        return None if self._closed else self._dead

    # -- calls ----------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or not callable(getattr(EdgeClient, name, None)):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, args, kwargs)

        call.__name__ = name
        return call

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        key, future = next(self._ids), Future()
        with self._lock:
            if self._dead is not None:
                raise StoreError(self._dead)
            self._pending[key] = future
        try:
            with self._sending:
                self._conn.send((key, method, args, kwargs))
        except (OSError, ValueError) as exc:  # the child is gone (the reader says why)
            with self._lock:
                self._pending.pop(key, None)
            raise StoreError(self._dead or f"the store process for {self.path} is gone: {exc}") from exc
        ok, value = future.result()
        if ok:
            return value
        raise value

    def _read(self) -> None:
        """Hands each answer to its caller; when the child is gone, fails every call in flight."""
        try:
            while True:
                key, ok, value = self._conn.recv()
                with self._lock:
                    future = self._pending.pop(key, None)
                if future is not None:
                    future.set_result((ok, value))
        except (EOFError, OSError):
            pass
        code = self._process.wait()
        dead = (f"the store process for {self.path} was closed" if self._closed else
                f"the store process for {self.path} exited (exit status {code}): the store is closed; "
                "restart this process")
        if not self._closed:
            log.error("%s", dead)
        with self._lock:
            self._dead = dead
            lost, self._pending = list(self._pending.values()), {}
        for future in lost:
            future.set_result((False, StoreError(dead)))

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self, **kwargs: Any) -> None:
        """Flush and close the store in the child, which then exits and releases the directory."""
        if self._closed:
            return
        self._closed = True  # before the child's exit reaches the reader: not an error
        try:
            if self._dead is None:
                self._call(_CLOSE, (), {})
        finally:
            self._reap()

    def _reap(self, kill: bool = False) -> None:
        if kill and self._process.poll() is None:
            self._process.kill()
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.join(timeout=10)  # it has read the end of the socket
        self._conn.close()


# -- the child ---------------------------------------------------------------------------------
def serve(conn: Connection, client: EdgeClient) -> None:
    """Runs each call on a thread of its own until the parent closes the store or goes away."""
    sending = threading.Lock()

    def answer(key: int, ok: bool, value: Any) -> None:
        with sending:
            try:
                conn.send((key, ok, value))
            except (OSError, ValueError):  # the parent is gone
                pass
            except Exception as exc:  # noqa: BLE001 - a result that does not pickle
                conn.send((key, False, StoreError(f"the store's answer could not be sent: {exc}")))

    def run(key: int, method: str, args: tuple, kwargs: dict) -> None:
        try:
            answer(key, True, getattr(client, method)(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - handed to the caller, as in-process
            answer(key, False, _portable(exc))

    with ThreadPoolExecutor(CALL_THREADS, thread_name_prefix="korag-store-call") as pool:
        while True:
            try:
                key, method, args, kwargs = conn.recv()
            except (EOFError, OSError):  # the parent exited or died: close the store ourselves
                break
            if method == _CLOSE:
                pool.shutdown(wait=True)  # the calls in flight end first
                client.close()
                answer(key, True, None)
                return
            pool.submit(run, key, method, args, kwargs)
    client.close()


def main(argv: list[str]) -> int:
    fd, path, upkeep, seal_points = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent closes the store (module docstring)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [store process] %(name)s: %(message)s")
    conn = Connection(int(fd))
    try:
        client = EdgeClient(path, upkeep=upkeep, seal_points=int(seal_points) or None)
    except Exception as exc:  # noqa: BLE001 - the parent raises it
        conn.send((False, _portable(exc)))
        return 1
    conn.send((True, None))
    serve(conn, client)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
