"""``korag.bench.stalls``: the watchdog behind ``korag bench store``'s ``stalls`` figures must catch
a pause of the whole process and name the code that caused it, and see none while the process
only waits."""

from __future__ import annotations

import mmap
import os
import time

from korag.bench.stalls import Stalls, major_faults, mem_available_mb


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


def test_the_cpu_of_each_thread_is_counted():
    """``cpu_s`` says where the process spent its CPU: a thread that computes shows its CPU, one that
    sleeps shows none, and the process's CPU holds both."""
    import threading

    stalls = Stalls(threshold=5.0)
    sleeper = threading.Thread(target=time.sleep, args=(1.0,), name="sleeper")
    sleeper.start()
    stalls.start()
    worker = threading.Thread(target=_hold_the_gil, name="worker")
    worker.start()
    worker.join()
    time.sleep(0.1)
    stalls.stop()
    sleeper.join()
    cpu = stalls.figures()["cpu_s"]
    assert cpu["sleeper"] < 0.05 and "worker" not in cpu  # the worker ended before stop: not counted by name
    assert cpu["process"] >= 0.3  # the worker's loop
    assert stalls.figures()["wall_s"] >= cpu["process"] - 0.1


def test_waiting_is_not_a_pause():
    stalls = Stalls(threshold=0.5)
    stalls.start()
    time.sleep(1.0)  # releases the GIL: the watchdog keeps waking on time
    stalls.stop()
    assert stalls.figures()["stalls"] == 0


def test_reading_a_file_that_is_not_in_memory_counts_as_major_faults(tmp_path):
    """``korag bench store`` splits its searches by these: a store bigger than memory makes them
    wait on the disk."""
    path = tmp_path / "cold"
    path.write_bytes(os.urandom(8 << 20))
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # out of the page cache
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as pages:
            before = major_faults()
            touched = sum(pages[i] for i in range(0, len(pages), mmap.PAGESIZE))
            after = major_faults()
    assert touched >= 0 and after > before
    assert 0 < mem_available_mb() < 10**7


def test_a_pause_made_by_a_garbage_collection_is_put_down_to_it():
    """Millions of live containers make a full collection of the interpreter a pause of the whole
    process (the suspect of the 2-3 s pauses of the 1M-point bench): named as such, and timed."""
    import gc

    heap = [[] for _ in range(3_000_000)]  # tracked containers a full collection must walk
    stalls = Stalls(threshold=0.05)
    stalls.start()
    time.sleep(0.05)
    gc.collect()
    time.sleep(0.05)
    stalls.stop()
    figures = stalls.figures()
    assert len(heap) and figures["gc"]["2"]["count"] >= 1 and figures["gc"]["2"]["max_ms"] > 50, figures
    assert "garbage collection of generation 2" in figures["by_place"], figures
