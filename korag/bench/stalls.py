"""Which call stopped the process: a watchdog thread for ``korag bench store``.

It sleeps ``interval`` seconds at a time. When it wakes more than ``threshold`` late, no Python
thread of the process ran for that long: a call into native code held the GIL (qdrant-edge-py
holds it for whole queries, loads and optimizes), or the machine had no free core. At that moment
the thread that held it has just returned and has not moved far (CPython hands the GIL over at
its next call), so the watchdog records where it is in korag's code, at or just after the call
that held the GIL: the Python thread that used the most CPU during the pause (Linux counts
each thread's CPU in ``/proc/self/task``), when it used at least half of it; otherwise (a call
that waited on the disk, or its work done by native threads, or a busy machine) every thread
not waiting in the standard library. A pause that a garbage collection of the interpreter filled
for at least half of it is put down to that collection instead (``gc.callbacks`` times every one).
:meth:`Stalls.figures` counts the stalls by place.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the checkout: korag/bench/stalls.py -> .
WAITS = ("threading.py", "selectors.py", "socketserver.py", "queue.py", "subprocess.py")


def place(frame: FrameType | None, depth: int = 2) -> str | None:
    """``file:line function`` of the innermost frames of ``frame``'s stack that are in this
    checkout (up to ``depth``, innermost first, joined by " < "); None for a thread waiting in
    the standard library (a lock, a socket, a child process) or outside the checkout."""
    if frame is not None and frame.f_code.co_filename.endswith(WAITS):
        return None
    parts: list[str] = []
    while frame is not None and len(parts) < depth:
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(ROOT) and ".venv" not in path.parts:
            parts.append(f"{path.relative_to(ROOT)}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(parts) or None


def _stat(path: str) -> list[str]:
    """The fields of a ``/proc/.../stat`` file after the command name, so ``[0]`` is field 3 (state)."""
    return Path(path).read_text().rsplit(")", 1)[1].split()


def _ticks(fields: list[str]) -> int:
    """CPU clock ticks (user + system) in the fields of a stat file (:func:`_stat`)."""
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat


def _cpu_ticks() -> dict[int, int]:
    """CPU clock ticks (user + system) of each Python thread, by ``threading.get_ident()``."""
    out = {}
    for thread in threading.enumerate():
        try:
            fields = _stat(f"/proc/self/task/{thread.native_id}/stat")
        except (OSError, IndexError):
            continue
        out[thread.ident] = _ticks(fields)
    return out


TICK_S = 0.01  # USER_HZ: 100 on Linux


def cpu_seconds(pid: int | str = "self") -> float:
    """CPU seconds (user + system) of process ``pid`` (every thread) so far."""
    return _ticks(_stat(f"/proc/{pid}/stat")) * TICK_S


def major_faults() -> int:
    """Major page faults of this process so far (every thread): page reads that waited on the disk."""
    return int(_stat("/proc/self/stat")[9])  # majflt: field 12 of stat


def mem_available_mb() -> float:
    """The machine's ``MemAvailable`` (/proc/meminfo): memory it could give without swapping."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Stalls:
    """Between :meth:`start` and :meth:`stop`, every pause of the process longer than ``threshold``
    seconds, with where the other threads were when it ended."""

    def __init__(self, interval: float = 0.01, threshold: float = 0.2) -> None:
        self.interval, self.threshold = interval, threshold
        self.stalls: list[tuple[float, list[str]]] = []  # (pause in s, places)
        self._cpu: dict[str, float] = {}  # CPU seconds between start and stop: the process's, per thread
        self._began = self._wall = 0.0
        # Garbage collections: per generation (count, seconds, longest), and the long ones' spans.
        self.gc: dict[int, list[float]] = {g: [0, 0.0, 0.0] for g in range(3)}
        self._collections: list[tuple[float, float, int]] = []  # (start, end, generation), > 10 ms
        self._collecting: tuple[float, int] | None = None  # (start, generation) of one in progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="korag-stalls", daemon=True)

    def _run(self) -> None:
        me = threading.get_ident()
        ticks = _cpu_ticks()
        while not self._stop.is_set():
            t0 = time.perf_counter()
            time.sleep(self.interval)
            late = time.perf_counter() - t0 - self.interval
            if late <= self.threshold:
                ticks = _cpu_ticks()
                continue
            frames = sys._current_frames()
            now = _cpu_ticks()
            if (g := self._collected(t0, time.perf_counter(), late / 2)) is not None:
                self.stalls.append((late, [f"garbage collection of generation {g}"]))
                ticks = now
                continue
            used = {tid: (now.get(tid, 0) - ticks.get(tid, 0)) * TICK_S for tid in frames if tid != me}
            busiest = max(used, key=used.__getitem__, default=None)
            if busiest is not None and used[busiest] >= late / 2 and (p := place(frames[busiest])) is not None:
                places = [f"on CPU: {p}"]
            else:
                places = sorted({p for tid, f in frames.items() if tid != me and (p := place(f)) is not None})
            self.stalls.append((late, places))
            ticks = now

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """A ``gc.callbacks`` hook, run by the collecting thread; the watchdog may wake while it
        runs (at its ``stop``, the collection is over but not yet recorded)."""
        now = time.perf_counter()
        if phase == "start":
            self._collecting = (now, info["generation"])
            return
        began, generation = self._collecting or (now, info["generation"])
        took = now - began
        figures = self.gc[generation]
        figures[0] += 1
        figures[1] += took
        figures[2] = max(figures[2], took)
        if took > 0.01:
            self._collections.append((began, now, generation))
        self._collecting = None

    def _collected(self, start: float, end: float, least: float) -> int | None:
        """The generation of a garbage collection that filled at least ``least`` seconds of
        ``start``..``end``, if one did (one still running or not yet recorded counts up to ``end``)."""
        running = self._collecting  # read first: once it is None, the collection is in the list
        spans = list(self._collections)
        if running is not None:
            spans.append((running[0], end, running[1]))
        for began, ended, generation in reversed(spans):
            if min(ended, end) - max(began, start) >= least:
                return generation
            if ended < start:
                return None
        return None

    @staticmethod
    def _cpu_now() -> dict[str, float]:
        """CPU seconds so far of the whole process (``"process"``) and of each named Python thread."""
        names = {t.ident: t.name for t in threading.enumerate()}
        out = {names[tid]: ticks * TICK_S for tid, ticks in _cpu_ticks().items() if tid in names}
        out["process"] = cpu_seconds()
        return out

    def start(self) -> None:
        self._cpu, self._began = self._cpu_now(), time.perf_counter()
        gc.callbacks.append(self._on_gc)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        gc.callbacks.remove(self._on_gc)
        now, before = self._cpu_now(), self._cpu
        self._wall = time.perf_counter() - self._began
        self._cpu = {name: now[name] - before.get(name, 0.0) for name in now}

    def figures(self, most: int = 8) -> dict[str, Any]:
        """``{"threshold_ms", "stalls", "total_s", "max_ms", "by_place": {place: {"stalls", "max_ms"}},
        "wall_s", "cpu_s", "gc"}``: the ``most`` places seen in the most stalls (a stall counts for
        each place seen in it); the interpreter's garbage collections by generation
        (``{"0": {"count", "total_s", "max_ms"}, ...}``); and between :meth:`start` and :meth:`stop` the seconds passed and the
        CPU seconds of the process and of each Python thread alive at both ends (by name). A
        Python thread's CPU is its own work; Edge runs queries on threads of its own (in
        ``process``, not in any named thread) while the calling thread waits holding the GIL."""
        count: Counter[str] = Counter()
        longest: defaultdict[str, float] = defaultdict(float)
        for late, places in self.stalls:
            for p in places or ["(no thread in korag's code)"]:
                count[p] += 1
                longest[p] = max(longest[p], late)
        return {"threshold_ms": round(self.threshold * 1000), "stalls": len(self.stalls),
                "total_s": round(sum(late for late, _ in self.stalls), 1),
                "max_ms": round(max((late for late, _ in self.stalls), default=0.0) * 1000, 1),
                "by_place": {p: {"stalls": n, "max_ms": round(longest[p] * 1000, 1)} for p, n in count.most_common(most)},
                "wall_s": round(self._wall, 1), "cpu_s": {name: round(s, 1) for name, s in sorted(self._cpu.items())},
                "gc": {str(g): {"count": int(n), "total_s": round(total, 2), "max_ms": round(most_s * 1000, 1)}
                       for g, (n, total, most_s) in self.gc.items()}}
