"""A health checker in a process of its own, for ``korag bench store``: ``GET URL`` every
``INTERVAL`` seconds until its stdin closes, as a load balancer or Kubernetes would probe
``/healthz``. Standard library only, so it starts fast and shares no GIL with the process probed.

    python -m korag.bench.healthprobe URL [INTERVAL_S] [TIMEOUT_S]

It prints ``ready`` once its first probe is done, then, when stdin closes, one JSON line: a list
of ``[due, done, latency_ms]`` per probe (``due``, ``done``: ``time.monotonic()``, system-wide on
Linux, so the parent can compare them with its own clock; ``latency_ms``: from when the probe was
due, so a probe that could not be sent on time counts its wait; null: no 200 answer within
``TIMEOUT_S``). Probes are sent one at a time: one stalled for seconds delays the next, which then
counts its own wait (as ``korag.bench.store.Steady`` counts its searches).
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit

INTERVAL_S = 0.1
TIMEOUT_S = 30.0


def probe(host: str, port: int, path: str, timeout: float) -> bool:
    """One ``GET``, on a new connection as a health checker makes it; True on a 200 answer."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        answer.read()
        return answer.status == 200
    except OSError:  # refused, reset, timed out
        return False
    finally:
        conn.close()


def run(url: str, stop: threading.Event, interval: float = INTERVAL_S, timeout: float = TIMEOUT_S,
        ready: threading.Event | None = None) -> list[list[float | None]]:
    """Probe ``url`` every ``interval`` seconds until ``stop`` is set; the records (module docstring)."""
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    records: list[list[float | None]] = []
    due = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now < due and stop.wait(due - now):
            break
        ok = probe(host, port, path, timeout)
        done = time.monotonic()
        records.append([due, done, round((done - due) * 1000, 2) if ok else None])
        if ready is not None:
            ready.set()
        due += interval
        due = max(due, time.monotonic() - 1.0)  # a long stall is one late probe, not a burst after it
    return records


def main(argv: list[str]) -> None:
    url = argv[0]
    interval = float(argv[1]) if len(argv) > 1 else INTERVAL_S
    timeout = float(argv[2]) if len(argv) > 2 else TIMEOUT_S
    stop, ready = threading.Event(), threading.Event()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    def say_ready() -> None:
        ready.wait()
        print("ready", flush=True)

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    announce = threading.Thread(target=say_ready, daemon=True)
    announce.start()
    records = run(url, stop, interval, timeout, ready)
    ready.set()  # stopped before the first probe: still say it, so the parent's readline returns
    announce.join()
    print(json.dumps(records), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
