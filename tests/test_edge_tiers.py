"""The embedded store with index upkeep in child processes (``EdgeClient(upkeep="process")``,
``korag.storage.edge.tiers``): dense vectors sealed into shards built by another process, fresh
points searched exactly, every answer the same as the one-shard store's, before and after an
index step, after writes that reach sealed points, after reopening, and after a build that died.
"""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor, TimeoutError

import numpy as np
import pytest
from qdrant_client import models

from korag.errors import StoreError
from korag.storage.edge import tiers as tiers_module
from korag.storage.edge import upkeep
from korag.storage.edge_client import EdgeClient
from korag.storage.store import FUSION_METHODS, Fusion, QdrantStore

CHUNKS = "korag"
DIM = 8
N = 60
SEAL = 20


def _pid(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"tier-{i}"))


def _points(n: int = N, seed: int = 11) -> list[models.PointStruct]:
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n, DIM))
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    out = []
    for i in range(n):
        terms = sorted({int(t) for t in rng.integers(0, 25, size=int(rng.integers(2, 7)))})
        vector = {"dense": dense[i].round(6).tolist(),
                  "sparse": models.SparseVector(indices=terms, values=rng.uniform(0.2, 2.0, len(terms)).round(4).tolist())}
        metadata = {"doc_id": f"doc-{i % 5}", "tenant": "acme" if i % 3 else "globex", "chunk_index": i}
        out.append(models.PointStruct(id=_pid(i), vector=vector, payload={"page_content": f"청크 {i}", "metadata": metadata}))
    return out


POINTS = _points()


def _open(path, upkeep: str) -> EdgeClient:
    return EdgeClient(path, upkeep=upkeep, seal_points=SEAL)


def _fill(client: EdgeClient) -> None:
    client.create_collection(
        CHUNKS,
        vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
        sparse_vectors_config={"sparse": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    client.create_payload_index(CHUNKS, "metadata.tenant", models.PayloadSchemaType.KEYWORD)
    client.upsert(CHUNKS, points=POINTS)


def _match(key, value):
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _queries(n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    out = []
    for i in range(n):
        q = np.array(POINTS[i * 7].vector["dense"]) + 0.4 * rng.normal(size=DIM)
        out.append(q / np.linalg.norm(q))
    return out


def _dense(client, q, flt=None, limit=10, offset=None):
    return client.query_points(CHUNKS, query=q.tolist(), using="dense", query_filter=flt, limit=limit, offset=offset,
                               with_payload=True).points


def _answers(client) -> list:
    """Every kind of answer korag reads, as (ids, scores, payloads) lists."""
    out = []
    tenant = models.Filter(must=[_match("metadata.tenant", "acme")])
    for q in _queries():
        for flt in (None, tenant):
            for limit, offset in ((10, None), (5, 3), (N + 5, None)):
                hits = _dense(client, q, flt, limit, offset)
                out.append([(str(p.id), p.score, p.payload) for p in hits])
    store = QdrantStore(client, CHUNKS)
    sparse = POINTS[3].vector["sparse"]
    for method in FUSION_METHODS:
        for q in _queries(3):
            hits = store.search(np.array(q), 8, sparse=sparse, mode="hybrid", fusion=Fusion(0.3, 1.0, 2, 20, method))
            out.append([(h.id, h.score) for h in hits])
    return out


def _reopened_answers(path, upkeep: str) -> list:
    client = _open(path, upkeep)
    try:
        return _answers(client)
    finally:
        client.close()


def _same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert [r[0] for r in x] == [r[0] for r in y]
        assert [r[1] for r in x] == pytest.approx([r[1] for r in y], abs=1e-6)
        assert [r[2:] for r in x] == [r[2:] for r in y]


@pytest.fixture
def pair(tmp_path):
    """The same data in a one-shard store (inline upkeep) and in a tiered one."""
    one, tiered = _open(tmp_path / "one", "inline"), _open(tmp_path / "tiered", "process")
    for c in (one, tiered):
        _fill(c)
    yield one, tiered
    one.close()
    tiered.close()


def _sealed_dirs(path) -> list[str]:
    root = path / "collections" / CHUNKS / "sealed"
    return sorted(p.name for p in root.iterdir() if p.name != tiers_module.MANIFEST)


def test_answers_are_the_same_before_and_after_each_index_step(pair, tmp_path):
    one, tiered = pair
    expected = _answers(one)
    _same(_answers(tiered), expected)  # every point fresh
    assert tiered.maintain() == {CHUNKS: True}  # 60 fresh points, 20 a shard: three shards
    assert len(_sealed_dirs(tmp_path / "tiered")) == 3
    _same(_answers(tiered), expected)
    tiered.upsert(CHUNKS, points=_points(70, seed=12)[N:])  # ids 60..69: fresh again
    one.upsert(CHUNKS, points=_points(70, seed=12)[N:])
    _same(_answers(tiered), _answers(one))
    assert tiered.seal(CHUNKS, force=True)
    _same(_answers(tiered), _answers(one))


def test_deletes_payload_updates_and_reupserts_reach_sealed_points(pair, tmp_path):
    one, tiered = pair
    tiered.maintain()
    assert tiered.count(CHUNKS).count == N
    doc1 = models.Filter(must=[_match("metadata.doc_id", "doc-1")])
    for c in (one, tiered):
        c.delete(CHUNKS, points_selector=models.FilterSelector(filter=doc1))
        c.delete(CHUNKS, points_selector=[_pid(0), _pid(2)])
        c.set_payload(CHUNKS, payload={"team": "legal"}, points=models.FilterSelector(
            filter=models.Filter(must=[_match("metadata.doc_id", "doc-3")])), key="metadata")
        c.set_payload(CHUNKS, payload={"reviewed": True}, points=[_pid(4), _pid(9)])
        c.overwrite_payload(CHUNKS, payload={"page_content": "새 내용", "metadata": {"tenant": "acme"}}, points=[_pid(5)])
        c.delete_payload(CHUNKS, keys=["metadata.tenant"], points=[_pid(7)])
    _same(_answers(tiered), _answers(one))
    q = _queries()[0]
    returned = {str(p.id) for p in _dense(tiered, q, limit=N)}
    assert _pid(0) not in returned and _pid(1) not in returned  # deleted: by id, and doc-1 by filter
    legal = _dense(tiered, q, models.Filter(must=[_match("metadata.team", "legal")]), limit=N)
    assert {str(p.id) for p in legal} == {_pid(i) for i in range(N) if i % 5 == 3}
    reviewed = _dense(tiered, q, models.Filter(must=[_match("reviewed", True)]), limit=N)
    assert {str(p.id) for p in reviewed} == {_pid(4), _pid(9)}

    # re-upsert a sealed point with a new vector: found at its new place, not its old one
    old = np.array(POINTS[8].vector["dense"])
    new = -old
    moved = models.PointStruct(id=_pid(8), vector={"dense": new.tolist()}, payload={"page_content": "옮김", "metadata": {}})
    for c in (one, tiered):
        c.upsert(CHUNKS, points=[moved])
    (top,) = _dense(tiered, new, limit=1)
    assert str(top.id) == _pid(8) and top.score == pytest.approx(1.0, abs=1e-5) and top.payload["page_content"] == "옮김"
    assert _pid(8) not in {str(p.id) for p in _dense(tiered, old, limit=5)}
    _same(_answers(tiered), _answers(one))


def test_a_reopened_store_finds_its_sealed_shards(pair, tmp_path):
    one, tiered = pair
    tiered.maintain()
    tiered.upsert(CHUNKS, points=_points(65, seed=12)[N:])
    one.upsert(CHUNKS, points=_points(65, seed=12)[N:])
    expected = _answers(one)
    tiered.close()
    again = _open(tmp_path / "tiered", "process")
    try:
        _same(_answers(again), expected)
        assert len(_sealed_dirs(tmp_path / "tiered")) == 3
        assert again.maintain() == {CHUNKS: False}  # 5 fresh points: nothing to seal
    finally:
        again.close()
    _same(_reopened_answers(tmp_path / "tiered", "inline"), expected)  # the collection's shard is complete on its own


def test_an_interrupted_build_leaves_no_partial_shard(pair, tmp_path, monkeypatch):
    one, tiered = pair
    expected = _answers(one)
    monkeypatch.setenv("KORAG_EDGE_BUILD_FAIL", "before-rename")  # the child dies with its shard built, not renamed
    with pytest.raises(StoreError, match="failed"):
        tiered.seal(CHUNKS, force=True)
    assert tiered.maintain() == {CHUNKS: False}  # logged, the points stay fresh
    assert _sealed_dirs(tmp_path / "tiered") == []
    _same(_answers(tiered), expected)
    monkeypatch.delenv("KORAG_EDGE_BUILD_FAIL")
    assert tiered.seal(CHUNKS, force=True)
    tiered.close()
    # a crash of the serving process mid-build, or after the rename but before adoption
    root = tmp_path / "tiered" / "collections" / CHUNKS / "sealed"
    (root / "000009.building").mkdir()
    (root / "000009.building" / "segment").write_text("half")
    (root / "000010").mkdir()
    again = _open(tmp_path / "tiered", "process")
    try:
        _same(_answers(again), expected)
        assert _sealed_dirs(tmp_path / "tiered") == ["000001"]
    finally:
        again.close()


def _write_while_building(monkeypatch, clients, moved: models.PointStruct) -> None:
    """The next build's child runs as usual; once it has built its shard from the exported points,
    and before the server adopts it, point 0 is deleted, ``moved`` upserted and point 2 marked
    ``late`` through every client."""
    real_run = tiers_module.subprocess.run

    def run_with_writes(*args, **kwargs):
        monkeypatch.setattr(tiers_module.subprocess, "run", real_run)
        done = real_run(*args, **kwargs)
        for c in clients:
            c.delete(CHUNKS, points_selector=[_pid(0)])
            c.upsert(CHUNKS, points=[moved])
            c.set_payload(CHUNKS, payload={"late": True}, points=[_pid(2)])
        return done

    monkeypatch.setattr(tiers_module.subprocess, "run", run_with_writes)


def test_writes_made_while_a_shard_is_built_are_not_lost(pair, tmp_path, monkeypatch):
    """The child builds from the points handed to it; what is written meanwhile is replayed."""
    one, tiered = pair
    moved = models.PointStruct(id=_pid(1), vector={"dense": (-np.array(POINTS[1].vector["dense"])).tolist()},
                               payload={"page_content": "중간", "metadata": {"doc_id": "doc-9"}})
    _write_while_building(monkeypatch, (one, tiered), moved)
    assert tiered.seal(CHUNKS, force=True)
    _same(_answers(tiered), _answers(one))
    late = _dense(tiered, _queries()[0], models.Filter(must=[_match("late", True)]), limit=N)
    assert [str(p.id) for p in late] == [_pid(2)]


def test_collections_without_named_dense_vectors_keep_inline_upkeep(tmp_path):
    client = _open(tmp_path / "s", "process")
    try:
        client.create_collection("registry", vectors_config={})
        client.upsert("registry", points=[models.PointStruct(id=_pid(1), vector={}, payload={"a": 1})])
        assert client.maintain() == {"registry": False}
        with pytest.raises(ValueError, match="not kept in tiers"):
            client.seal("registry")
        assert not (tmp_path / "s" / "collections" / "registry" / "sealed").exists()
    finally:
        client.close()


def test_korag_edge_upkeep_chooses_where_index_steps_run(tmp_path, monkeypatch):
    from korag.settings import Settings
    from korag.storage.store import open_client

    monkeypatch.setenv("KORAG_DATA_DIR", str(tmp_path / "data"))
    for value, expected in ((None, "process"), ("inline", "inline")):
        if value is not None:
            monkeypatch.setenv("KORAG_EDGE_UPKEEP", value)
        client = open_client(Settings())
        try:
            assert client.upkeep == expected
        finally:
            client.close()
    monkeypatch.setenv("KORAG_EDGE_UPKEEP", "thread")
    with pytest.raises(ValueError, match="edge_upkeep"):
        Settings()


def _four_shards(one, tiered, tmp_path):
    """80 points, 20 a shard: four sealed shards, which one upkeep merges into one."""
    more = _points(80, seed=12)[N:]
    for c in (one, tiered):
        c.upsert(CHUNKS, points=more)
    while tiered.seal(CHUNKS):
        pass
    assert len(_sealed_dirs(tmp_path / "tiered")) == tiers_module.MERGE_FANOUT == 4


def test_small_sealed_shards_are_merged_into_one_with_the_same_answers(pair, tmp_path):
    one, tiered = pair
    _four_shards(one, tiered, tmp_path)
    expected = _answers(one)
    _same(_answers(tiered), expected)
    assert tiered.maintain() == {CHUNKS: True}  # nothing fresh to seal: the four are merged
    assert _sealed_dirs(tmp_path / "tiered") == ["000005"]
    _same(_answers(tiered), expected)
    assert tiered.maintain() == {CHUNKS: False}  # the only shard of its size class: nothing to merge
    tiered.close()
    _same(_reopened_answers(tmp_path / "tiered", "process"), expected)


@pytest.mark.parametrize("many, sizes", [(3, [40, 40, 80]), (0, [80, 80])])
def test_merged_shards_are_merged_again_up_to_the_largest_size(pair, tmp_path, monkeypatch, many, sizes):
    """Merging goes on by size class (two at a time here, up to four times ``seal_points``: 80
    points) so a big store is searched over a few big shards; a shard at the largest size is
    never merged again, and shards beyond the first class only while there are more than
    ``MANY_SHARDS``. Answers stay the one-shard store's throughout."""
    monkeypatch.setattr(tiers_module, "MERGE_FANOUT", 2)
    monkeypatch.setattr(tiers_module, "MAX_MERGED", 4)
    monkeypatch.setattr(tiers_module, "MANY_SHARDS", many)
    one, tiered = pair
    more = _points(160, seed=12)[N:]
    for c in (one, tiered):
        c.upsert(CHUNKS, points=more)
    expected = _answers(one)
    while tiered.seal(CHUNKS):
        pass
    directory = tmp_path / "tiered"
    assert len(_sealed_dirs(directory)) == 8  # 160 points, 20 a shard
    assert tiered.maintain() == {CHUNKS: True}
    tiers = tiered._tier(CHUNKS)
    assert sorted(tiers.sizes[name] for name in _sealed_dirs(directory)) == sizes  # 20+20 four times, then 40+40
    _same(_answers(tiered), expected)
    assert tiered.maintain() == {CHUNKS: False}  # few enough shards, or all of the largest size
    tiered.close()
    _same(_reopened_answers(directory, "process"), expected)


def _quantization(shard_dir) -> list:
    """The dense vectors' quantisation config of each segment of a sealed shard, as Edge wrote it."""
    return [json.loads(path.read_text())["config"]["vector_data"]["dense"]["quantization_config"]
            for path in sorted(shard_dir.glob("segments/*/segment.json"))]


def test_an_indexed_sealed_shard_searches_int8_vectors_and_rescores_them(pair, tmp_path, monkeypatch):
    """A sealed shard big enough to be indexed (1 KB here instead of 10 MB) keeps an int8 copy of
    its vectors; answers are still the exact ones, scores the float cosines."""
    monkeypatch.setattr(upkeep, "FULL_SCAN_THRESHOLD_KB", 1)
    one, tiered = pair
    _four_shards(one, tiered, tmp_path)  # 20-point shards: 640 bytes of vectors, not indexed
    assert _quantization(tmp_path / "tiered" / "collections" / CHUNKS / "sealed" / "000001") == [None]  # one appendable segment
    assert tiered.maintain() == {CHUNKS: True}  # merged: 80 points, 2.5 KB, indexed
    (merged,) = _sealed_dirs(tmp_path / "tiered")
    int8 = {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}}
    assert int8 in _quantization(tmp_path / "tiered" / "collections" / CHUNKS / "sealed" / merged)
    _same(_answers(tiered), _answers(one))


def test_writes_made_while_shards_are_merged_are_not_lost(pair, tmp_path, monkeypatch):
    one, tiered = pair
    _four_shards(one, tiered, tmp_path)
    moved = models.PointStruct(id=_pid(3), vector={"dense": (-np.array(POINTS[3].vector["dense"])).tolist()},
                               payload={"page_content": "병합 중", "metadata": {"doc_id": "doc-9"}})
    _write_while_building(monkeypatch, (one, tiered), moved)
    assert tiered.maintain() == {CHUNKS: True}
    assert len(_sealed_dirs(tmp_path / "tiered")) == 1
    _same(_answers(tiered), _answers(one))
    (top,) = _dense(tiered, np.array(moved.vector["dense"]), limit=1)
    assert str(top.id) == _pid(3) and top.payload["page_content"] == "병합 중"
    late = _dense(tiered, _queries()[0], models.Filter(must=[_match("late", True)]), limit=N)
    assert [str(p.id) for p in late] == [_pid(2)]


def test_a_store_written_in_inline_mode_drops_the_sealed_shards_it_would_leave_stale(pair, tmp_path):
    """Switching KORAG_EDGE_UPKEEP back and forth: inline writes never reach sealed shards, so
    the inline store drops them and the process mode indexes every point again."""
    one, tiered = pair
    tiered.maintain()
    tiered.close()
    inline = _open(tmp_path / "tiered", "inline")
    old = np.array(POINTS[8].vector["dense"])
    moved = models.PointStruct(id=_pid(8), vector={"dense": (-old).tolist()}, payload={"page_content": "옮김", "metadata": {}})
    for c in (one, inline):
        c.upsert(CHUNKS, points=[moved])
        c.delete(CHUNKS, points_selector=[_pid(1)])
        c.set_payload(CHUNKS, payload={"team": "legal"}, points=[_pid(4)])
    inline.close()
    assert not (tmp_path / "tiered" / "collections" / CHUNKS / "sealed").exists()
    one.close()  # both reopened after the delete: a live shard and a reopened one weigh BM25 terms apart
    one = _open(tmp_path / "one", "inline")
    expected = _answers(one)
    one.close()
    again = _open(tmp_path / "tiered", "process")
    try:
        _same(_answers(again), expected)
        assert _pid(8) not in {str(p.id) for p in _dense(again, old, limit=5)}
        assert again.maintain() == {CHUNKS: True}  # every point is fresh again: sealed anew
        _same(_answers(again), expected)
        legal = _dense(again, _queries()[0], models.Filter(must=[_match("team", "legal")]), limit=N)
        assert [str(p.id) for p in legal] == [_pid(4)]
    finally:
        again.close()


def test_searches_are_answered_while_the_sealed_shards_load(pair, tmp_path, monkeypatch):
    """Loading sealed shards holds the GIL ~0.1 s each, so a reopened store loads them in a
    thread; until it has, dense searches scan the collection's shard (exact, every point)."""
    import threading

    one, tiered = pair
    tiered.maintain()
    expected = _answers(one)
    tiered.close()
    gate = threading.Event()
    real_open = tiers_module._open_shard

    def slow_open(path):
        gate.wait(timeout=60)
        return real_open(path)

    monkeypatch.setattr(tiers_module, "_open_shard", slow_open)
    again = _open(tmp_path / "tiered", "process")
    try:
        _same(_answers(again), expected)
        assert not again._tiers[CHUNKS].ready.is_set()  # answered before any sealed shard was loaded
        gate.set()
        assert again.maintain() == {CHUNKS: False}  # waits for the load; nothing fresh
        assert again._tiers[CHUNKS].ready.is_set() and len(again._tiers[CHUNKS].sealed) == 3
        _same(_answers(again), expected)
    finally:
        gate.set()
        again.close()


def test_an_unreadable_sealed_shard_is_dropped_and_its_points_indexed_again(pair, tmp_path):
    one, tiered = pair
    tiered.maintain()
    expected = _answers(one)
    tiered.close()
    root = tmp_path / "tiered" / "collections" / CHUNKS / "sealed"
    for f in (root / "000002").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\0garbage")
    again = _open(tmp_path / "tiered", "process")
    try:
        _same(_answers(again), expected)
        assert again.maintain() == {CHUNKS: True}
        assert len(_sealed_dirs(tmp_path / "tiered")) == 3
        _same(_answers(again), expected)
    finally:
        again.close()


class _Wrapped:
    """A real shard whose ``update`` a subclass replaces; everything else is the shard's."""

    def __init__(self, shard):
        self.shard = shard

    def __getattr__(self, name):
        return getattr(self.shard, name)


class _Counted(_Wrapped):
    """A sealed shard that counts its updates (each one is an append to its write-ahead log)."""

    updates = 0

    def update(self, op):
        self.updates += 1
        return self.shard.update(op)


def test_a_write_reaches_only_the_sealed_shards_that_hold_its_ids(pair, monkeypatch):
    """At 1M points there are ~50 sealed shards: new points must touch none of them and a
    re-written point only its own, also while a shard is being built."""
    one, tiered = pair
    tiered.maintain()
    tiers = tiered._tiers[CHUNKS]
    counted = {name: _Counted(shard) for name, shard in tiers.sealed.items()}
    tiers.sealed.update(counted)
    more = _points(80, seed=12)[N:]
    moved = models.PointStruct(id=_pid(8), vector={"dense": (-np.array(POINTS[8].vector["dense"])).tolist()},
                               payload={"page_content": "옮김", "metadata": {}})
    real_run = tiers_module.subprocess.run

    def run_with_writes(*args, **kwargs):
        monkeypatch.setattr(tiers_module.subprocess, "run", real_run)
        done = real_run(*args, **kwargs)
        for c in (one, tiered):
            c.upsert(CHUNKS, points=more[10:])  # new ids, while the build of ids 60..69 is in flight
            c.upsert(CHUNKS, points=[moved])
            c.upsert(CHUNKS, points=[more[0]])  # being built: must leave the built shard
        return done

    for c in (one, tiered):
        c.upsert(CHUNKS, points=more[:10])
    assert [c.updates for c in counted.values()] == [0, 0, 0]
    owner = tiers.owner[_pid(8)]
    monkeypatch.setattr(tiers_module.subprocess, "run", run_with_writes)
    assert tiered.seal(CHUNKS, force=True)
    assert {name: c.updates for name, c in counted.items()} == {name: int(name == owner) for name in counted}
    before = {name: c.updates for name, c in counted.items()}
    owner = tiers.owner[_pid(9)]
    for c in (one, tiered):
        c.delete(CHUNKS, points_selector=[_pid(9), _pid(70)])  # sealed, and fresh
    assert {name: c.updates - before[name] for name, c in counted.items()} == {name: int(name == owner) for name in counted}
    _same(_answers(tiered), _answers(one))


class _Held(_Wrapped):
    """The collection's shard with every update held until ``release`` is set: a stand-in for a
    slow write (an upsert into the 1M-point shard held the GIL up to 1.1 s, bench/RESULTS.md);
    it waits on an Event, so other threads run meanwhile."""

    def __init__(self, shard):
        super().__init__(shard)
        self.entered = threading.Event()
        self.release = threading.Event()

    def update(self, op):
        self.entered.set()
        assert self.release.wait(60)
        return self.shard.update(op)


def test_searches_do_not_wait_for_a_write_and_find_the_point_it_rewrites(pair):
    one, tiered = pair
    tiered.maintain()
    tiers = tiered._tiers[CHUNKS]
    held = tiers.main = _Held(tiers.main)
    old = np.array(POINTS[8].vector["dense"])
    moved = models.PointStruct(id=_pid(8), vector={"dense": (-old).tolist()},
                               payload={"page_content": "옮김", "metadata": {}})
    writer = threading.Thread(target=tiered.upsert, args=(CHUNKS, [moved]))
    writer.start()
    try:
        assert held.entered.wait(60)
        with ThreadPoolExecutor(1) as pool:
            search = pool.submit(_dense, tiered, old, None, 1)
            try:
                (top,) = search.result(timeout=10)
            except TimeoutError:
                pytest.fail("the search waited for the write")
            finally:
                held.release.set()
        assert str(top.id) == _pid(8) and top.score == pytest.approx(1.0, abs=1e-5)  # as it was
    finally:
        held.release.set()
        writer.join(60)
    tiers.main = held.shard
    (top,) = _dense(tiered, -old, limit=1)
    assert str(top.id) == _pid(8) and top.payload["page_content"] == "옮김"  # as written
    one.upsert(CHUNKS, points=[moved])
    _same(_answers(tiered), _answers(one))


def test_searches_do_not_wait_while_a_built_shard_is_adopted(pair, monkeypatch):
    """Adopting a built shard reads its ids and hands them to it, work that grows with the shard
    (80k points at 1M); searches do not wait for it, and find the shard's points as fresh ones
    until it is swapped in."""
    one, tiered = pair
    tiered.maintain()
    tiers = tiered._tiers[CHUNKS]
    entered, release = threading.Event(), threading.Event()
    own = tiers._own

    def held_own(name, ids):
        entered.set()
        assert release.wait(60)
        own(name, ids)

    monkeypatch.setattr(tiers, "_own", held_own)
    more = _points(80, seed=12)[N:]
    for c in (one, tiered):
        c.upsert(CHUNKS, points=more)
    expected = _answers(one)
    sealer = ThreadPoolExecutor(1)
    sealed = sealer.submit(tiered.seal, CHUNKS)
    try:
        assert entered.wait(60)
        with ThreadPoolExecutor(1) as pool:
            try:
                _same(pool.submit(_answers, tiered).result(timeout=20), expected)
            except TimeoutError:
                pytest.fail("searches waited for the adoption of a built shard")
            finally:
                release.set()
        assert sealed.result(timeout=60)
    finally:
        release.set()
        sealer.shutdown()
    _same(_answers(tiered), expected)


class _Failing(_Wrapped):
    """The collection's shard with every update failing, as Edge fails on a full disk: a stand-in,
    since an engine error cannot be caused at exactly this call with a real disk."""

    def update(self, op):
        raise OSError("No space left on device")


def test_a_failed_write_leaves_the_points_it_touched_searchable(pair):
    one, tiered = pair
    tiered.maintain()
    tiers = tiered._tiers[CHUNKS]
    expected = _answers(one)
    real = tiers.main
    tiers.main = _Failing(real)
    old = np.array(POINTS[8].vector["dense"])
    moved = models.PointStruct(id=_pid(8), vector={"dense": (-old).tolist()}, payload={"page_content": "옮김"})
    with pytest.raises(StoreError, match="No space left"):
        tiered.upsert(CHUNKS, points=[moved])
    with pytest.raises(StoreError, match="No space left"):
        tiered.delete(CHUNKS, points_selector=[_pid(9)])
    tiers.main = real
    _same(_answers(tiered), expected)  # gone from their sealed shards, found in the collection's shard
    assert tiered.seal(CHUNKS, force=True)  # sealed again
    _same(_answers(tiered), expected)


def test_the_engines_fusion_takes_its_dense_candidates_from_the_tiers(pair, monkeypatch):
    """rrf and dbsf run as one engine query with a dense and a sparse prefetch. The collection's
    shard is never indexed in this mode, so its dense prefetch would scan every vector (about a
    second per search at 1M points): the dense candidates must come from the sealed shards and
    the fresh points, with the same answers as the one-shard store."""
    one, tiered = pair
    tiered.maintain()
    tiers = tiered._tiers[CHUNKS]
    asked = []
    real = tiers.query_dense

    def counted(request, keep):
        asked.append(keep)
        return real(request, keep)

    monkeypatch.setattr(tiers, "query_dense", counted)
    sparse = POINTS[3].vector["sparse"]
    tenant = models.Filter(must=[_match("metadata.tenant", "acme")])
    for method in ("rrf", "dbsf"):
        for where in (None, tenant):
            asked.clear()
            fusion = Fusion(0.3, 1.0, 2, 20, method)
            q = _queries()[1]
            found = QdrantStore(tiered, CHUNKS).search(q, 8, sparse=sparse, mode="hybrid", fusion=fusion, where=where)
            expected = QdrantStore(one, CHUNKS).search(q, 8, sparse=sparse, mode="hybrid", fusion=fusion, where=where)
            assert asked == [20]  # one dense prefetch of 20, answered by the tiers
            assert [h.id for h in found] == [h.id for h in expected]
            assert [h.score for h in found] == pytest.approx([h.score for h in expected], abs=1e-6)
