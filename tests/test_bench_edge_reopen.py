"""bench/edge_reopen.py's GIL probe: it must tell a call that holds the GIL from one that lets it go,
or the README's claim about Qdrant Edge (which calls hold it) rests on nothing."""

from __future__ import annotations

import time

from bench.edge_reopen import gil_hold


def test_a_call_that_lets_go_of_the_gil_leaves_the_caller_running():
    figures = gil_hold(lambda: time.sleep(0.3))
    assert figures["call_ms"] >= 290
    assert figures["longest_pause_ms"] < figures["call_ms"] / 2


def test_a_call_that_holds_the_gil_pauses_the_caller_throughout():
    figures = gil_hold(lambda: sum(range(30_000_000)))  # one C loop: no switch to another thread
    assert figures["call_ms"] > 50
    assert figures["longest_pause_ms"] >= 0.9 * figures["call_ms"]
