"""The embedded store in a store process (``KORAG_EDGE_STORE_PROCESS``, ``RemoteEdgeClient``).

Its contract with the other clients runs in tests/test_edge_client.py (``edge-remote``) and
tests/test_store_and_retrieval.py (``store-process``). Here: what it is for (a store call that
holds the store's GIL does not pause this process), and its life: a dead store process fails
calls with a clear error, a dead parent releases the store, and a busy directory names the
process that serves it. Real processes throughout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import numpy as np
import pytest
from qdrant_client import models

from korag.bench.stalls import Stalls
from korag.errors import StoreBusyError, StoreError
from korag.storage.edge_client import EdgeClient
from korag.storage.edge_remote import RemoteEdgeClient
from korag.storage.store import lock_holder, open_client
from tests.conftest import make_settings, wait_until

DIM = 1024
POINTS = 6_000  # 24 MB of vectors: past upkeep.SEGMENT_KB, so optimize() builds an HNSW index


def _fill(client) -> None:
    client.create_collection("c", vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)})
    vectors = np.random.default_rng(1).normal(size=(POINTS, DIM)).astype(np.float32)
    for start in range(0, POINTS, 1000):
        client.upsert_plain("c", list(range(start, start + 1000)), {"dense": vectors[start:start + 1000]},
                            [{} for _ in range(1000)])


@pytest.mark.parametrize("where", ["this process", "store process"])
def test_an_index_step_pauses_only_the_process_that_owns_the_store(tmp_path, where):
    """``optimize()`` holds the GIL of the process that runs it for the whole index build (the
    issue-22 outage): in this process every thread stops for it; with the store in a store
    process, this process's threads go on (here: the stall watchdog wakes on time)."""
    client = (EdgeClient if where == "this process" else RemoteEdgeClient)(tmp_path / "edge")
    try:
        _fill(client)
        stalls = Stalls(threshold=0.25)
        stalls.start()
        time.sleep(0.1)  # the watchdog is in its loop
        t0 = time.perf_counter()
        assert client.optimize("c")
        took = time.perf_counter() - t0
        stalls.stop()
        assert client.count("c").count == POINTS
    finally:
        client.close()
    assert took > 0.5, f"the index step took {took:.2f} s: too short to show a pause"
    longest = stalls.figures()["max_ms"] / 1000
    if where == "this process":
        assert longest > 0.5 * took  # the whole process stopped for most of the step
    else:
        assert stalls.figures()["stalls"] == 0, stalls.figures()


def test_calls_fail_with_a_clear_error_once_the_store_process_is_gone(tmp_path):
    client = RemoteEdgeClient(tmp_path / "edge")
    try:
        client.create_collection("c", vectors_config={"dense": models.VectorParams(size=4, distance=models.Distance.COSINE)})
        os.kill(client.pid, signal.SIGKILL)  # as an out-of-memory kill would
        with pytest.raises(StoreError, match=r"store process for .*edge exited \(exit status -9\)"):
            for _ in range(100):  # the first calls may be sent before the end of the socket is read
                client.count("c")
                time.sleep(0.05)
    finally:
        client.close()  # does not hang, raises nothing
    again = EdgeClient(tmp_path / "edge")  # the kernel released the lock; what was written is there
    try:
        assert again.collection_exists("c")
    finally:
        again.close()


def test_the_store_is_closed_and_released_when_its_parent_dies(tmp_path):
    """A `korag serve` killed with SIGKILL: its store process reads the end of the socket,
    closes the store (flushing what was written) and exits, so the next process can open it."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        from qdrant_client import models
        from korag.storage.edge_remote import RemoteEdgeClient
        client = RemoteEdgeClient({str(tmp_path / "edge")!r})
        client.create_collection("c", vectors_config={{"dense": models.VectorParams(size=4, distance=models.Distance.COSINE)}})
        client.upsert("c", points=[models.PointStruct(id=7, vector={{"dense": [1.0, 0.0, 0.0, 0.0]}})])
        print(client.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    store_pid = int(parent.stdout.split()[0])

    def gone() -> bool:
        try:
            os.kill(store_pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, 30, "the store process to exit", every=0.1)
    client = EdgeClient(tmp_path / "edge")
    try:
        assert [p.id for p in client.retrieve("c", [7])] == [7]
    finally:
        client.close()


def test_a_busy_directory_names_the_process_that_serves_it(tmp_path):
    """Errors cross the socket with their type: a second opener gets StoreBusyError, and the
    lock's holder is the process that started the store process, not the store process."""
    settings = make_settings(tmp_path, qdrant_url=None, edge_store_process=True)
    settings.qdrant_path.mkdir(parents=True)
    client = RemoteEdgeClient(settings.qdrant_path)
    try:
        with pytest.raises(StoreBusyError):
            RemoteEdgeClient(settings.qdrant_path)
        holder = lock_holder(settings)
        assert holder is not None and holder.pid == os.getpid() and holder.store_pid == client.pid
        assert f"through its store process {client.pid}" in str(holder) and "this process" in str(holder)
    finally:
        client.close()
    assert lock_holder(settings) is None


def test_calls_from_many_threads_each_get_their_own_answer(tmp_path):
    """Searches and writes from many threads at once (a server's request threads): each caller
    gets the answer to its own call."""
    client = RemoteEdgeClient(tmp_path / "edge")
    errors: list[BaseException] = []
    try:
        client.create_collection("c", vectors_config={"dense": models.VectorParams(size=4, distance=models.Distance.COSINE)})

        def work(n: int) -> None:
            try:
                for i in range(20):
                    pid = n * 1000 + i
                    client.upsert("c", points=[models.PointStruct(id=pid, vector={"dense": [1.0, n, i, 1.0]},
                                                                  payload={"n": n, "i": i})])
                    (found,) = client.retrieve("c", [pid])
                    assert found.payload == {"n": n, "i": i}
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert client.count("c").count == 160
    finally:
        client.close()


def test_only_korag_serve_puts_the_embedded_store_in_a_store_process_by_default(tmp_path):
    """Unset, KORAG_EDGE_STORE_PROCESS is on for `korag serve` (whose /healthz and searches must
    not wait for the store) and off for one-shot commands; set, it decides."""
    cases = [(None, False, EdgeClient), (None, True, RemoteEdgeClient), (False, True, EdgeClient),
             (True, False, RemoteEdgeClient)]
    for chosen, serving, kind in cases:
        client = open_client(make_settings(tmp_path, qdrant_url=None, edge_store_process=chosen), serving=serving)
        try:
            assert type(client) is kind, (chosen, serving)
        finally:
            client.close()


@pytest.mark.slow
def test_a_running_korag_serve_holds_its_store_through_a_store_process(tmp_path):
    """The real `korag serve`: a store process of its own holds the directory, and the holder
    named to other commands is `korag serve` (the process to stop; what they are told is in
    tests/test_cli_store_held.py). When it stops, so does its store process."""
    from tests.api_server import serve

    with serve(tmp_path) as server:
        settings = make_settings(tmp_path, qdrant_url=None, data_dir=server.data_dir)
        holder = lock_holder(settings)
        assert holder is not None and holder.pid == server.pid and holder.serving
        assert holder.store_pid is not None and holder.store_pid != server.pid
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert lock_holder(settings) is None  # released at the server's graceful stop


@pytest.mark.slow
def test_a_server_whose_store_process_died_asks_to_be_restarted(tmp_path):
    """Its store process killed (as an out-of-memory kill would), `korag serve` cannot serve
    again: /healthz turns 503 naming why, so an orchestrator restarts it, and /readyz says the same."""
    from tests.api_server import serve

    with serve(tmp_path) as server:
        holder = lock_holder(make_settings(tmp_path, qdrant_url=None, data_dir=server.data_dir))
        os.kill(holder.store_pid, signal.SIGKILL)

        def broken() -> bool:
            return httpx.get(f"{server.url}/healthz", timeout=10).status_code == 503

        wait_until(broken, 30, "/healthz to say the server is broken", every=0.2)
        health = httpx.get(f"{server.url}/healthz", timeout=10).json()
        assert "store process" in health["detail"] and "exit status -9" in health["detail"], health
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503 and "store process" in ready.json()["checks"]["store"], ready.text
        assert server.alive()
