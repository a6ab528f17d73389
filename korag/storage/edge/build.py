"""The child process that builds one sealed dense shard (``korag.storage.edge.tiers``).

    python -m korag.storage.edge.build POINTS TARGET

``POINTS``: pickles written by the serving process one after another: the config ``{"vectors",
"indexes", "hnsw", "optimizers", "quantization"}`` (``"int8"`` or None), then lists of points
``(id, {name: float32 array}, payload)``
(so neither process holds them all at once). The child runs at the lowest CPU priority (nice
19): on a busy machine the serving process's searches get the cores first. The shard is created
in ``TARGET.building``, filled, indexed (``EdgeShard.optimize``, which holds this process's GIL,
not the server's), flushed, closed and only then renamed to ``TARGET``: a crash leaves
``*.building`` (removed at the next open) and never a half-built ``TARGET``. Imports nothing of
korag, so the child starts fast.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import qdrant_edge as qe

_DISTANCES = {"Cosine": qe.Distance.Cosine, "Dot": qe.Distance.Dot, "Euclid": qe.Distance.Euclid,
              "Manhattan": qe.Distance.Manhattan}


def edge_config(config: dict[str, Any]) -> qe.EdgeConfig:
    vectors = {name: qe.EdgeVectorParams(size=v["size"], distance=_DISTANCES[v["distance"]], on_disk=v.get("on_disk"))
               for name, v in config["vectors"].items()}
    hnsw = config["hnsw"]
    optimizers = config["optimizers"]
    quantization = None
    if config.get("quantization") == "int8":  # kept in RAM beside the float vectors, which rescore
        quantization = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True)
    return qe.EdgeConfig(
        vectors=vectors[""] if list(vectors) == [""] else vectors,
        quantization_config=quantization,
        hnsw_config=qe.HnswIndexConfig(m=hnsw["m"], ef_construct=hnsw["ef_construct"],
                                       full_scan_threshold=hnsw["full_scan_threshold"]),
        optimizers=qe.EdgeOptimizersConfig(max_segment_size=optimizers["max_segment_size"],
                                           indexing_threshold=optimizers["indexing_threshold"],
                                           default_segment_number=1),
    )


def build(points_file: Path, target: Path) -> int:
    tmp = target.with_name(target.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    count = 0
    with open(points_file, "rb") as handle:
        config = pickle.load(handle)
        shard = qe.EdgeShard.create(str(tmp), edge_config(config))
        for field, kind in config["indexes"].items():
            shard.update(qe.UpdateOperation.create_field_index(field, getattr(qe.PayloadSchemaType, kind)))
        while True:
            try:
                points = pickle.load(handle)
            except EOFError:
                break
            batch = []  # one upsert per list the server wrote (korag.storage.edge.tiers.EXPORT_CHUNK points)
            for point_id, vectors, payload in points:
                vector = {name: row.tolist() for name, row in vectors.items()}
                batch.append(qe.Point(point_id, vector[""] if list(vector) == [""] else vector, payload))
            shard.update(qe.UpdateOperation.upsert_points(batch))
            count += len(points)
    while shard.optimize():
        pass
    shard.flush()
    shard.close()
    if os.environ.get("KORAG_EDGE_BUILD_FAIL") == "before-rename":  # tests: a build that dies before it completes
        os._exit(3)
    os.replace(tmp, target)
    return count


if __name__ == "__main__":
    try:
        os.nice(19)
    except OSError:  # not allowed here: build at the parent's priority
        pass
    build(Path(sys.argv[1]), Path(sys.argv[2]))
