"""`korag bench store`: the health check it measures (issue 22: ``/healthz`` always answered
within 1 s while the embedded store is written and indexed), probed from another process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import korag_cli, korag_env

ROOT = Path(__file__).resolve().parents[1]

# A process holding korag.bench.store.Health: probed until a line arrives on stdin, which also
# carries the monotonic span to count as upkeep; then the figures.
HEALTH_CHILD = """
import json, sys
from korag.bench.store import Health
health = Health()
health.start()
print("probing", flush=True)
span = json.loads(sys.stdin.readline())
health.stop()
print(json.dumps(health.figures([tuple(span)])), flush=True)
"""


@pytest.mark.slow
def test_a_stopped_store_process_shows_in_the_health_figures():
    """The probe runs in a process of its own: when the probed process cannot run (here stopped
    with SIGSTOP for 1.5 s, as an index step holding the GIL stops it), the probes due meanwhile
    are answered late, counted over 1000 ms, and fall in the stalled span."""
    child = subprocess.Popen([sys.executable, "-c", HEALTH_CHILD], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "probing"
        time.sleep(0.5)
        start = time.monotonic()
        child.send_signal(signal.SIGSTOP)
        time.sleep(1.5)
        child.send_signal(signal.SIGCONT)
        end = time.monotonic()
        time.sleep(0.5)
        out, _ = child.communicate(json.dumps([start, end]) + "\n", timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0
    figures = json.loads(out.strip().splitlines()[-1])
    ingest, stalled = figures["during_ingest"], figures["during_upkeep"]
    assert ingest["probes"] == ingest["answered"] > 0  # the stall was under the 30 s timeout: all answered
    assert stalled["answered"] > 0 and stalled["over_1000_ms"] >= 1 and stalled["max_ms"] > 1000
    assert ingest["over_1000_ms"] >= stalled["over_1000_ms"]
    assert ingest["probes"] > stalled["probes"]  # probes before and after the stall were not counted in it


@pytest.mark.slow
def test_bench_store_reports_the_health_check_for_each_upkeep_mode(tmp_path):
    env = korag_env({})
    args = ["bench", "store", "--points", "2000", "--local-points", "0", "--upkeep", "both", "--json"]
    done = korag_cli(args, env, ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["local"] is None
    for run in (report, report["process"]):
        assert {"upsert_points_per_s", "steady_hybrid", "upkeep", "dense", "hybrid", "reopen_s"} <= set(run)
        steady = run["steady_hybrid"]  # split by whether the process waited on the disk meanwhile
        split = steady["with_major_faults"]["searches"] + steady["without_major_faults"]["searches"]
        assert split == steady["during_ingest"]["searches"] > 0
        assert 0 < steady["mem_available_min_mb"] < 10**7
        for fused in ("hybrid_rrf", "hybrid_dbsf"):  # the engine's fusion: a dense and a sparse prefetch
            assert 0 < run[fused]["p50_ms"] <= run[fused]["p95_ms"]
        health = run["healthz"]
        assert health["interval_ms"] == 100 and health["timeout_s"] == 30
        ingest = health["during_ingest"]
        assert ingest["answered"] > 0 and ingest["probes"] >= ingest["answered"]
        assert 0 < ingest["p50_ms"] <= ingest["p95_ms"] <= ingest["p99_ms"] <= ingest["max_ms"]
        assert 0 <= ingest["over_1000_ms"] <= ingest["probes"]
        assert health["during_upkeep"]["probes"] <= ingest["probes"]
        stalls = run["stalls"]  # korag.bench.stalls: pauses of the whole process over 200 ms
        assert stalls["threshold_ms"] == 200 and stalls["stalls"] >= len(stalls["by_place"]) >= 0
        # where the CPU went: the ingest (main) thread and the searches' thread, within the process's
        cpu = stalls["cpu_s"]
        assert 0 < cpu["MainThread"] + cpu["korag-steady"] <= cpu["process"] + 0.05
        assert stalls["wall_s"] > 0
        assert steady["queued"]["searches"] == steady["service"]["searches"] == steady["during_ingest"]["searches"]


def test_steady_searches_that_cannot_keep_up_show_as_queued_not_as_slow():
    """Each search takes 0.25 s (waiting, not computing) and one is due every 0.1 s: the latency
    grows from waiting for the searches before, which ``queued`` shows and ``service`` does not."""
    from korag.bench.store import Steady

    steady = Steady(lambda q: time.sleep(0.25), [None], interval=0.1)
    with steady:
        time.sleep(1.6)
    figures = steady.figures()
    assert 240 <= figures["service"]["p50_ms"] < 400
    assert figures["service_cpu"]["p95_ms"] < 50  # it slept: its thread used no CPU
    assert figures["queued"]["max_ms"] > 500  # the later searches waited for the earlier ones
    assert figures["during_ingest"]["max_ms"] >= figures["queued"]["max_ms"] + 240


@pytest.mark.slow
def test_bench_store_measures_a_server_whose_store_is_in_a_store_process():
    """``--store-process``: the same figures, taken in a process that holds no Edge object; the
    store's own work shows as the store process's CPU, and the watchdog times garbage collections."""
    args = ["bench", "store", "--points", "2000", "--local-points", "0", "--upkeep", "process", "--store-process",
            "--json"]
    done = korag_cli(args, korag_env({}), ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["backend"] == "edge-process+store-process" and report["points"] == 2000
    assert report["store_process"]["cpu_s"] > 0 and report["store_process"]["peak_rss_bytes"] > 0
    assert report["healthz"]["during_ingest"]["answered"] > 0 and report["steady_hybrid"]["during_ingest"]["searches"] > 0
    assert report["hybrid"]["p50_ms"] > 0 and report["dense_recall_at_10"] > 0
    assert set(report["stalls"]["gc"]) == {"0", "1", "2"}
