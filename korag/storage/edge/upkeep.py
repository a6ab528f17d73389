"""Index upkeep for the embedded store: when Qdrant Edge builds its HNSW index, and how much.

Edge indexes only in ``EdgeShard.optimize()``, which blocks the calling thread *and holds the
GIL* (qdrant-edge-py 0.9.0): while it runs, no other Python thread of the process runs, so
"in the background" would stall searches just the same. korag therefore bounds the work of each
call instead:

- every collection's segments are capped at :data:`SEGMENT_KB` (``max_segment_size``) and a
  segment is indexed once it reaches that size (``indexing_threshold``), so an ``optimize()``
  indexes only the newly filled segment(s) and never re-merges indexed ones;
- points not yet indexed (at most about one segment) are searched exactly, by brute force,
  which stays in the milliseconds at that size;
- :func:`after_batch` runs ``optimize()`` at the end of an ingest batch (CLI ingest, a worker
  task); when no segment is full it returns at once.

Figures behind the choice are in bench/RESULTS.md ("Embedded store").
"""

from __future__ import annotations

from typing import Any

import qdrant_edge as qe

# 20 MB of vectors: about 5,000 points of 1024-dim float32 (KoE5), ~13,000 at 384 dimensions.
# Measured at 100k points on the 2-core test machine (bench/RESULTS.md): each optimize() call took
# at most ~6 s (10,000-point segments: 14-100 s, 20,000: 36-135 s, one unbounded segment: 903 s),
# with hybrid search p95 ~42 ms over the resulting 20 segments.
SEGMENT_KB = 20_000
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
FULL_SCAN_THRESHOLD_KB = 10_000  # Qdrant's default: smaller segments are searched exactly
MAX_SEGMENTS = 64  # the merge optimizer leaves up to this many (bounded) segments alone


def optimizers() -> qe.EdgeOptimizersConfig:
    return qe.EdgeOptimizersConfig(
        max_segment_size=SEGMENT_KB, indexing_threshold=SEGMENT_KB, default_segment_number=MAX_SEGMENTS
    )


def hnsw() -> qe.HnswIndexConfig:
    return qe.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=FULL_SCAN_THRESHOLD_KB)


def after_batch(client: Any) -> dict[str, bool]:
    """Call once after an ingest batch with the client the batch wrote through. On the embedded
    store (``EdgeClient``) it indexes the segments that filled up (a bounded stall, see module
    docstring) and returns ``{collection: optimized}``; on qdrant-client (a server indexes by
    itself, ``:memory:`` never does) it does nothing and returns ``{}``."""
    maintain = getattr(client, "maintain", None)
    return maintain() if maintain is not None else {}
