"""``korag.bench.stalls``: the watchdog behind ``korag bench store``'s ``stalls`` figures must catch
a pause of the whole process and name the code that caused it, and see none while the process
only waits."""

from __future__ import annotations

import time

from korag.bench.stalls import Stalls


def _hold_the_gil() -> int:
    return sum(range(60_000_000))  # one C loop: no other thread runs until it ends


def test_a_pause_of_the_process_is_caught_with_the_code_that_caused_it():
    stalls = Stalls(threshold=0.1)
    stalls.start()
    time.sleep(0.05)
    _hold_the_gil()
    time.sleep(0.05)
    stalls.stop()
    figures = stalls.figures()
    assert figures["stalls"] >= 1 and figures["max_ms"] > 100
    assert any("test_a_pause_of_the_process_is_caught" in place for place in figures["by_place"]), figures


def test_waiting_is_not_a_pause():
    stalls = Stalls(threshold=0.5)
    stalls.start()
    time.sleep(1.0)  # releases the GIL: the watchdog keeps waking on time
    stalls.stop()
    assert stalls.figures()["stalls"] == 0
