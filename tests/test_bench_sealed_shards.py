"""bench/sealed_shards.py builds a sealed shard the way korag does and times it; the figures behind
``MAX_MERGED`` and ``MANY_SHARDS`` in korag.storage.edge.tiers come from it."""

from __future__ import annotations

import qdrant_edge as qe

from bench.sealed_shards import measure


def test_a_sealed_shard_of_the_asked_size_is_built_and_timed(tmp_path):
    figures = measure(600, tmp_path)
    assert figures["points"] == 600
    assert 0 < figures["query_p50_ms"] <= figures["query_p95_ms"]
    assert figures["build_s"] > 0 and figures["load_s"] > 0
    assert figures["disk_mb"] >= 600 * 1024 * 4 / 2**20  # the float vectors at least
    shard = qe.EdgeShard.load(str(tmp_path / "600"))
    try:
        assert shard.count(qe.CountRequest(exact=True)) == 600
    finally:
        shard.close()
