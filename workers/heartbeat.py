"""A worker's pulse: a daemon thread per worker process that beats (tells the cluster this
process is alive, :mod:`korag.services.liveness`) every ``HEARTBEAT_S`` seconds and, in the
worker's main process, another that sweeps (:func:`workers.sweeper.sweep`) as it starts and
every ``SWEEP_EVERY_S`` seconds after.

The beat runs beside the tasks, so a long parse or a long model call keeps beating: only a
process that is gone (killed, out of memory, its machine down) stops. A document mid-flight under
a process that stopped beating is re-queued by the next sweep of any live worker, within about
``DEAD_AFTER_S + SWEEP_EVERY_S`` seconds of the death (at once on the same machine, where the
process is asked directly).

Sweeping on a timer is what also recovers a document that a broker failure left ``queued`` with
no message anywhere (after ``KORAG_SWEEP_AFTER_S``). Workers take turns: a sweep runs only when
its worker takes the turn in Redis (``SET NX`` for ``TURN_S`` seconds), so two workers never
sweep at the same moment and send a lost document twice."""

from __future__ import annotations

import os
import threading
import time

from celery import Celery
from celery.utils.log import get_task_logger

from korag.errors import StoreBusyError
from korag.services.liveness import HEARTBEAT_S, Liveness
from korag.storage.registry import DocumentRegistry, this_process
from workers.root import root_of
from workers.sweeper import sweep

log = get_task_logger(__name__)

SWEEP_EVERY_S = 15.0  # each worker; workers take turns (TURN_S)
TURN_S = 10.0  # one sweep in the cluster per this many seconds at most

_pulses: dict[int, list[threading.Thread]] = {}  # pid → its threads (a forked pool child starts its own)
_pulses_lock = threading.Lock()


def keep_alive(app: Celery, sweeping: bool = False) -> None:
    """Start this process's beat, once per process; ``sweeping``: it sweeps too (the main
    process). Beating and sweeping are two threads: a sweep that waits for the embedded store
    while a task holds it must never hold back the beat (other machines would take this worker
    for dead after ``DEAD_AFTER_S``)."""
    pid = os.getpid()
    with _pulses_lock:
        if pid in _pulses:
            return
        liveness = Liveness.from_url(root_of(app).settings.broker_url)
        threads = [threading.Thread(target=_beat, args=(liveness,), name="korag-beat", daemon=True)]
        if sweeping:
            threads.append(threading.Thread(target=_sweep, args=(app, liveness), name="korag-sweep", daemon=True))
        _pulses[pid] = threads
    for thread in threads:
        thread.start()


def _beat(liveness: Liveness | None) -> None:
    if liveness is None:
        return  # no Redis broker: liveness is told on this machine only, by pid
    owner = this_process()
    while True:
        try:
            liveness.beat(owner)
        except Exception as error:  # noqa: BLE001 - the broker is down: beat again later
            log.warning("could not beat (%s); trying again in %.0f s", error, HEARTBEAT_S)
        time.sleep(HEARTBEAT_S)


def _sweep(app: Celery, liveness: Liveness | None) -> None:
    while True:  # the first sweep at once: what a crash left before this worker started
        started = time.monotonic()
        sweep_turn(app, liveness)
        time.sleep(max(0.0, SWEEP_EVERY_S - (time.monotonic() - started)))


def sweep_turn(app: Celery, liveness: Liveness | None) -> None:
    """One sweep, when this worker gets the turn; its failure is logged, never raised."""
    root = root_of(app)
    try:
        if liveness is not None and not liveness.take_turn("sweep", TURN_S):
            return
        with root.stores.session() as store:
            swept = sweep(DocumentRegistry(store.client, store.collection), app, root.settings, liveness=liveness)
        if swept:
            log.warning("re-queued or failed %d unfinished document(s): %s", len(swept),
                        ", ".join(f"{r.source} ({r.status})" for r in swept[:10]))
    except StoreBusyError as busy:  # the embedded store is a task's now: the next turn sweeps
        log.info("sweep skipped: %s", busy)
    except Exception:  # noqa: BLE001 - a sweep is a safety net; the next one tries again
        log.exception("sweep failed")
