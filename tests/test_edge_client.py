"""EdgeClient (Qdrant Edge in-process) against qdrant-client's local engine: one contract suite
run over both, the same rankings on a fixed dataset, and korag's own store and registry on Edge.

Edge-only behaviour is tested at the end: reopening from disk, surviving an unclean exit, and
a clear error for a second process on the same directory.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
import warnings

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from korag.errors import ModelMismatchError, StoreBusyError
from korag.storage.edge import EdgeUnsupportedError, LocalModeDataError
from korag.storage.edge_client import EdgeClient
from korag.storage.edge_remote import RemoteEdgeClient
from korag.storage.store import FUSION_METHODS, Fusion, QdrantStore, convex_scores

CHUNKS = "korag"
REGISTRY = "korag-documents"
DIM = 8
N = 40


# -- a fixed korag-shaped dataset -------------------------------------------------------------------
def _pid(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"chunk-{i}"))


def _dataset() -> list[models.PointStruct]:
    rng = np.random.default_rng(7)
    dense = rng.normal(size=(N, DIM))
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    points = []
    for i in range(N):
        vector: dict = {"dense": dense[i].round(6).tolist()}
        if i % 7:  # like korag's store: a chunk without keywords carries no sparse vector
            terms = sorted({int(t) for t in rng.integers(0, 30, size=int(rng.integers(2, 7)))})
            vector["sparse"] = models.SparseVector(indices=terms, values=rng.uniform(0.2, 2.0, len(terms)).round(4).tolist())
        metadata = {"doc_id": f"doc-{i % 4}", "tenant": "acme" if i % 3 else "globex", "page_number": i % 5,
                    "chunk_index": i, "draft": i % 2 == 0}
        if i % 6 == 0:
            metadata["section"] = None
        points.append(models.PointStruct(id=_pid(i), vector=vector, payload={"page_content": f"청크 {i}", "metadata": metadata}))
    return points


POINTS = _dataset()
META = {p.id: p.payload["metadata"] for p in POINTS}


def _create(client) -> None:
    client.create_collection(
        CHUNKS,
        vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
        sparse_vectors_config={"sparse": models.SparseVectorParams(modifier=models.Modifier.IDF)},
        metadata={"embedding_model": "test-model", "dimension": DIM},
    )
    with warnings.catch_warnings():  # the local engine ignores payload indexes and says so
        warnings.simplefilter("ignore")
        client.create_payload_index(CHUNKS, "metadata.doc_id", models.PayloadSchemaType.KEYWORD)
        client.create_payload_index(
            CHUNKS, "metadata.tenant", models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
        )


def _open(kind: str, tmp_path):
    if kind == "edge-process":  # index upkeep in child processes: sealed shards of 15 points
        return EdgeClient(tmp_path / "edge", upkeep="process", seal_points=15)
    if kind == "edge-remote":  # the same, owned by a store process (KORAG_EDGE_STORE_PROCESS)
        return RemoteEdgeClient(tmp_path / "edge", upkeep="process", seal_points=15)
    return QdrantClient(location=":memory:") if kind == "local" else EdgeClient(tmp_path / "edge")


@pytest.fixture(params=["local", "edge", "edge-process", "edge-remote"])
def client(request, tmp_path):
    c = _open(request.param, tmp_path)
    yield c
    c.close()


@pytest.fixture
def filled(client):
    _create(client)
    client.upsert(CHUNKS, points=POINTS, wait=True)
    if getattr(client, "upkeep", None) == "process":
        client.maintain()  # 40 points: two sealed shards, 10 fresh
        assert len(list((client.path / "collections" / CHUNKS / "sealed").glob("0*"))) == 2
    return client


def _match(key, value):
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _ids(client, flt) -> set[str]:
    points, _ = client.scroll(CHUNKS, scroll_filter=flt, limit=1000, with_payload=False)
    return {str(p.id) for p in points}


def _expected(predicate) -> set[str]:
    return {pid for pid, meta in META.items() if predicate(meta)}


# -- the contract, on both clients ----------------------------------------------------------------
def test_collection_records_the_model_and_vector_layout(client):
    assert not client.collection_exists(CHUNKS)
    _create(client)
    assert client.collection_exists(CHUNKS)
    info = client.get_collection(CHUNKS)
    assert info.config.metadata == {"embedding_model": "test-model", "dimension": DIM}
    assert info.config.params.vectors["dense"].size == DIM
    assert info.config.params.vectors["dense"].distance == models.Distance.COSINE
    assert info.config.params.sparse_vectors["sparse"].modifier == models.Modifier.IDF
    with pytest.raises(ValueError, match="already exists"):
        _create(client)
    assert client.delete_collection(CHUNKS)
    assert not client.collection_exists(CHUNKS)


@pytest.mark.parametrize(
    "flt, predicate",
    [
        (models.Filter(must=[_match("metadata.doc_id", "doc-1")]), lambda m: m["doc_id"] == "doc-1"),
        (models.Filter(must=[_match("metadata.tenant", "globex")]), lambda m: m["tenant"] == "globex"),
        (models.Filter(must=[_match("metadata.page_number", 3)]), lambda m: m["page_number"] == 3),
        (models.Filter(must=[_match("metadata.draft", True)]), lambda m: m["draft"] is True),
        (models.Filter(must=[_match("metadata.draft", False)]), lambda m: m["draft"] is False),
        (models.Filter(must=[models.FieldCondition(key="metadata.doc_id", match=models.MatchAny(any=["doc-0", "doc-3"]))]),
         lambda m: m["doc_id"] in ("doc-0", "doc-3")),
        (models.Filter(must=[models.FieldCondition(key="metadata.page_number", match=models.MatchAny(any=[1, 4]))]),
         lambda m: m["page_number"] in (1, 4)),
        (models.Filter(must=[models.FieldCondition(key="metadata.doc_id", match=models.MatchAny(any=[]))]),
         lambda m: False),
        (models.Filter(must=[models.FieldCondition(key="metadata.chunk_index", range=models.Range(gte=10, lt=20))]),
         lambda m: 10 <= m["chunk_index"] < 20),
        (models.Filter(must=[_match("metadata.tenant", "acme")], must_not=[_match("metadata.page_number", 0)]),
         lambda m: m["tenant"] == "acme" and m["page_number"] != 0),
        (models.Filter(should=[_match("metadata.doc_id", "doc-2"), _match("metadata.page_number", 4)]),
         lambda m: m["doc_id"] == "doc-2" or m["page_number"] == 4),
        (models.Filter(must=[models.Filter(should=[_match("metadata.doc_id", "doc-0"), _match("metadata.doc_id", "doc-1")]),
                             _match("metadata.draft", True)]),
         lambda m: m["doc_id"] in ("doc-0", "doc-1") and m["draft"]),
        (models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="metadata.section"))]),
         lambda m: True),  # absent or null: empty for Qdrant
        (models.Filter(must=[models.IsNullCondition(is_null=models.PayloadField(key="metadata.section"))]),
         lambda m: "section" in m),
        (models.Filter(must=[models.HasIdCondition(has_id=[_pid(3), _pid(5)])]), lambda m: m["chunk_index"] in (3, 5)),
    ],
    ids=["doc_id", "tenant", "int", "bool-true", "bool-false", "any-str", "any-int", "any-empty", "range", "must_not",
         "should", "nested", "is_empty", "is_null", "has_id"],
)
def test_filters_select_the_same_points(filled, flt, predicate):
    assert _ids(filled, flt) == _expected(predicate)
    assert filled.count(CHUNKS, count_filter=flt, exact=True).count == len(_expected(predicate))


def test_scroll_pages_through_every_point_once(filled):
    seen, offset, pages = [], None, 0
    while True:
        points, offset = filled.scroll(CHUNKS, limit=7, offset=offset, with_payload=True)
        seen += [str(p.id) for p in points]
        pages += 1
        if offset is None:
            break
    assert pages == 6 and len(seen) == N and set(seen) == {p.id for p in POINTS}
    assert seen == sorted(seen)  # both engines page in id order


def test_retrieve_returns_payload_and_string_ids(filled):
    found = filled.retrieve(CHUNKS, [_pid(2), str(uuid.uuid4())], with_payload=True)
    assert [p.id for p in found] == [_pid(2)]
    assert found[0].payload == POINTS[2].payload


def test_delete_by_filter_and_by_ids(filled):
    filled.delete(CHUNKS, points_selector=models.FilterSelector(filter=models.Filter(must=[_match("metadata.doc_id", "doc-1")])))
    filled.delete(CHUNKS, points_selector=[_pid(0), _pid(4)], wait=True)
    assert _ids(filled, None) == _expected(lambda m: m["doc_id"] != "doc-1") - {_pid(0), _pid(4)}
    assert filled.count(CHUNKS, exact=True).count == N - 10 - 2


def test_set_overwrite_and_delete_payload(filled):
    doc2 = models.FilterSelector(filter=models.Filter(must=[_match("metadata.doc_id", "doc-2")]))
    filled.set_payload(CHUNKS, payload={"team": "legal"}, points=doc2, key="metadata", wait=True)
    assert _ids(filled, models.Filter(must=[_match("metadata.team", "legal")])) == _expected(lambda m: m["doc_id"] == "doc-2")
    (point,) = filled.retrieve(CHUNKS, [_pid(2)])
    assert point.payload["metadata"]["chunk_index"] == 2  # merged, not replaced
    filled.delete_payload(CHUNKS, keys=["metadata.team"], points=doc2)
    assert filled.count(CHUNKS, count_filter=models.Filter(must=[_match("metadata.team", "legal")])).count == 0
    filled.set_payload(CHUNKS, payload={"reviewed": True}, points=[_pid(1)])
    filled.overwrite_payload(CHUNKS, payload={"page_content": "새 내용"}, points=[_pid(3)])
    one, three = filled.retrieve(CHUNKS, [_pid(1), _pid(3)])
    assert one.payload["reviewed"] is True and one.payload["metadata"]["chunk_index"] == 1
    assert three.payload == {"page_content": "새 내용"}


def test_registry_style_payload_only_points_and_conditional_upsert(client):
    client.create_collection(REGISTRY, vectors_config={})
    assert client.get_collection(REGISTRY).config.params.vectors == {}
    rid = str(uuid.uuid5(uuid.NAMESPACE_URL, "doc"))
    record = {"doc_id": "doc", "status": "queued", "request": "r1", "seq": 5, "meta": {"team": "법무"}, "error": None,
              "created_at": 1700000000.123456}
    client.upsert(REGISTRY, points=[models.PointStruct(id=rid, vector={}, payload=record)], wait=True)
    (got,) = client.retrieve(REGISTRY, [rid], with_payload=True)
    assert got.payload == record
    # compare-and-set as korag's registry does it: replace only while the request still owns it
    newer = {**record, "request": "r2", "seq": 9}
    stale = models.Filter(must=[_match("request", "r0")])
    client.upsert(REGISTRY, points=[models.PointStruct(id=rid, vector={}, payload=newer)], update_filter=stale)
    assert client.retrieve(REGISTRY, [rid])[0].payload["request"] == "r1"
    older = models.Filter(should=[models.FieldCondition(key="seq", range=models.Range(lt=9)),
                                  models.IsEmptyCondition(is_empty=models.PayloadField(key="seq"))])
    client.upsert(REGISTRY, points=[models.PointStruct(id=rid, vector={}, payload=newer)], update_filter=older)
    assert client.retrieve(REGISTRY, [rid])[0].payload["request"] == "r2"
    other = str(uuid.uuid5(uuid.NAMESPACE_URL, "other"))  # a new point is inserted whatever the condition
    client.upsert(REGISTRY, points=[models.PointStruct(id=other, vector={}, payload={"status": "failed"})], update_filter=stale)
    failed, _ = client.scroll(REGISTRY, scroll_filter=models.Filter(must=[_match("status", "failed")]), limit=10)
    assert [p.id for p in failed] == [other]


# -- the same rankings on both engines ------------------------------------------------------------
def _queries():
    rng = np.random.default_rng(11)
    for _ in range(6):
        dense = rng.normal(size=DIM)
        terms = sorted({int(t) for t in rng.integers(0, 30, size=3)})
        yield (dense / np.linalg.norm(dense)).tolist(), models.SparseVector(indices=terms, values=[1.0] * len(terms))


def _search(client, dense, sparse, flt=None):
    kw = dict(limit=10, with_payload=True)
    out = {
        "dense": client.query_points(CHUNKS, query=dense, using="dense", query_filter=flt, **kw).points,
        "sparse": client.query_points(CHUNKS, query=sparse, using="sparse", query_filter=flt, **kw).points,
    }
    prefetch = [models.Prefetch(query=dense, using="dense", limit=20, filter=flt),
                models.Prefetch(query=sparse, using="sparse", limit=20, filter=flt)]
    out["hybrid"] = client.query_points(
        CHUNKS, prefetch=prefetch, query=models.RrfQuery(rrf=models.Rrf(k=2, weights=[0.3, 1.0])), **kw
    ).points
    out["channels"] = [  # each channel as the hybrid query's prefetch sees it
        client.query_points(CHUNKS, query=q, using=name, query_filter=flt, limit=20).points
        for q, name in ((dense, "dense"), (sparse, "sparse"))
    ]
    return out


def _weighted_rrf(channels, weights, k):
    scores: dict[str, float] = {}
    for points, weight in zip(channels, weights):
        for rank, p in enumerate(points, start=1):
            scores[str(p.id)] = scores.get(str(p.id), 0.0) + 1.0 / (rank / weight + k - 1)
    return scores


@pytest.mark.parametrize("tenant", [None, "acme"])
def test_dense_sparse_and_hybrid_rank_the_same_on_both_engines(tmp_path, tenant):
    local, edge = QdrantClient(location=":memory:"), EdgeClient(tmp_path / "edge")
    try:
        for c in (local, edge):
            _create(c)
            c.upsert(CHUNKS, points=POINTS, wait=True)
        flt = models.Filter(must=[_match("metadata.tenant", tenant)]) if tenant is not None else None
        for dense, sparse in _queries():
            a, b = _search(local, dense, sparse, flt), _search(edge, dense, sparse, flt)
            for mode in ("dense", "sparse", "hybrid"):
                assert [p.id for p in b[mode]] == [p.id for p in a[mode]], mode
                assert [p.score for p in b[mode]] == pytest.approx([p.score for p in a[mode]], rel=1e-4), mode
                if tenant is not None:
                    assert all(p.payload["metadata"]["tenant"] == tenant for p in b[mode])
            assert b["sparse"], "the sparse query matched nothing: the dataset no longer tests IDF ranking"
            # hybrid is Qdrant's weighted RRF: score = Σ 1 / (rank / weight + k − 1)
            expected = _weighted_rrf(b["channels"], [0.3, 1.0], 2)
            for p in b["hybrid"]:
                assert p.score == pytest.approx(expected[p.id], rel=1e-5)
    finally:
        local.close()
        edge.close()


@pytest.mark.parametrize("method", FUSION_METHODS)
def test_every_fusion_method_ranks_the_same_through_korag_store_on_both_engines(tmp_path, method):
    """korag's hybrid search (QdrantStore.search, KORAG_FUSION_METHOD) on qdrant-client's engine
    (a Qdrant server's code path) and on Qdrant Edge: same chunks, same scores, the tenant filter
    kept; convex scores are the weighted min-max sums of the two channels' own results."""
    local, edge = QdrantClient(location=":memory:"), EdgeClient(tmp_path / "edge")
    try:
        stores = []
        for c in (local, edge):
            _create(c)
            c.upsert(CHUNKS, points=POINTS, wait=True)
            stores.append(QdrantStore(c, CHUNKS))
        fusion = Fusion(0.3, 1.0, 2, 20, method)
        for tenant in (None, "acme"):
            for dense, sparse in _queries():
                a, b = (s.search(np.array(dense), 10, {"tenant": tenant} if tenant else None, sparse=sparse,
                                 mode="hybrid", fusion=fusion) for s in stores)
                assert b and [h.id for h in b] == [h.id for h in a], (method, tenant)
                assert [h.score for h in b] == pytest.approx([h.score for h in a], rel=1e-4), (method, tenant)
                if tenant is not None:
                    assert all(h.metadata["tenant"] == tenant for h in b)
                if method == "convex" and tenant is None:
                    channels = _search(edge, dense, sparse)["channels"]
                    expected = convex_scores([({str(p.id): p.score for p in points}, w)
                                              for points, w in zip(channels, (0.3, 1.0))])
                    assert [h.score for h in b] == pytest.approx(sorted(expected.values(), reverse=True)[:10], rel=1e-5)
    finally:
        local.close()
        edge.close()


# -- korag's own store and registry on Edge ---------------------------------------------------------
def test_korag_store_and_registry_run_unchanged_on_edge(tmp_path, minilm):
    from ingest.sparse import SparseEncoder
    from korag.storage.registry import DocumentRecord, DocumentRegistry
    from korag.storage.store import QdrantStore, point_id
    from korag.types import Chunk

    texts = ["연차휴가는 입사 1년 후 15일이 부여됩니다.", "법원조직법은 법원의 조직을 정한 법률입니다.",
             "출장비는 출장 종료 후 5일 이내에 정산합니다.", "재택근무는 주 2일까지 신청할 수 있습니다.",
             "휴가 신청은 부서장의 승인을 받아야 합니다."]
    encoder = SparseEncoder()
    vectors, _ = minilm.embed_passages([Chunk(text=t, index=i) for i, t in enumerate(texts)])
    client = EdgeClient(tmp_path / "edge")
    try:
        store = QdrantStore(client, "korag")
        store.ensure_collection(minilm.info.name, minilm.info.dimension)
        store.ensure_collection(minilm.info.name, minilm.info.dimension)  # second call: checks, creates nothing
        docs = ["policy", "law", "policy", "policy", "leave"]
        ids = [point_id(d, i) for i, d in enumerate(docs)]
        payloads = [{"page_content": t, "metadata": {"doc_id": d, "chunk_index": i, "page_number": i + 1}}
                    for i, (t, d) in enumerate(zip(texts, docs))]
        store.upsert(ids, vectors, payloads, [encoder.encode_document(t) for t in texts])
        assert store.count() == 5 and store.count({"doc_id": "policy"}) == 3
        assert store.count({"page_number": 2}) == 1
        query = "휴가 신청"
        qvec = minilm.embed_queries([query])[0]
        for mode in ("dense", "sparse", "hybrid"):
            hits = store.search(qvec, 2, sparse=encoder.encode_query(query), mode=mode)
            assert hits and hits[0].text in (texts[0], texts[4]), mode
            filtered = store.search(qvec, 5, {"doc_id": "policy"}, sparse=encoder.encode_query(query), mode=mode)
            assert filtered and {h.metadata["doc_id"] for h in filtered} == {"policy"}, mode
        assert store.delete_document("policy") == 3
        assert sorted(c.metadata["chunk_index"] for c in store.iter_chunks(batch=1)) == [1, 4]
        with pytest.raises(ModelMismatchError, match="another KORAG_COLLECTION"):
            store.ensure_collection("another-model", minilm.info.dimension)

        registry = DocumentRegistry(client, "korag")
        registry.put(DocumentRecord(doc_id="policy", source="규정.pdf", status="queued"))
        registry.put(DocumentRecord(doc_id="law", source="법.pdf", status="indexed", chunks=1))
        assert registry.get("policy").source == "규정.pdf"
        assert [r.doc_id for r in registry.all("indexed")] == ["law"]
        registry.delete("policy")
        assert registry.get("policy") is None
    finally:
        client.close()


# -- Edge only: on disk, one process --------------------------------------------------------------
def test_reopened_store_has_everything(tmp_path):
    client = EdgeClient(tmp_path / "edge")
    _create(client)
    client.upsert(CHUNKS, points=POINTS)
    client.create_collection(REGISTRY, vectors_config={})
    client.upsert(REGISTRY, points=[models.PointStruct(id=_pid(0), vector={}, payload={"status": "indexed"})])
    dense, sparse = next(_queries())
    before = _search(client, dense, sparse)
    client.close()

    again = EdgeClient(tmp_path / "edge")
    try:
        assert again.count(CHUNKS).count == N and again.count(REGISTRY).count == 1
        info = again.get_collection(CHUNKS)
        assert info.config.metadata["embedding_model"] == "test-model"
        assert info.payload_schema["metadata.tenant"].params.is_tenant is True
        after = _search(again, dense, sparse)
        for mode in ("dense", "sparse", "hybrid"):
            assert [p.id for p in after[mode]] == [p.id for p in before[mode]]
    finally:
        again.close()


def _child(code: str, path) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import sys
        from qdrant_client import models
        from korag.storage.edge_client import EdgeClient
        from korag.errors import StoreBusyError
        path = {str(path)!r}
    """) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_a_second_process_is_told_what_to_do(tmp_path):
    client = EdgeClient(tmp_path / "edge")
    try:
        _create(client)
        child = _child("""
            try:
                EdgeClient(path)
            except StoreBusyError as exc:
                print(exc)
                sys.exit(3)
        """, tmp_path / "edge")
        assert child.returncode == 3, child.stderr
        assert str(tmp_path / "edge") in child.stdout
        assert "korag serve" in child.stdout and "KORAG_QDRANT_URL" in child.stdout
        with pytest.raises(StoreBusyError):  # one client per directory in this process too
            EdgeClient(tmp_path / "edge")
    finally:
        client.close()
    EdgeClient(tmp_path / "edge").close()  # released on close


def test_writes_survive_a_process_that_never_closes(tmp_path):
    _create_and_close = EdgeClient(tmp_path / "edge")
    _create(_create_and_close)
    _create_and_close.close()
    child = _child(f"""
        import os
        client = EdgeClient(path)
        client.upsert("korag", points=[models.PointStruct(id={_pid(1)!r}, vector={{"dense": [0.5] * {DIM}}},
                                                          payload={{"page_content": "남은 청크"}})], wait=True)
        os._exit(0)  # no close, no flush: like a killed worker
    """, tmp_path / "edge")
    assert child.returncode == 0, child.stderr
    client = EdgeClient(tmp_path / "edge")
    try:
        assert [p.payload["page_content"] for p in client.retrieve(CHUNKS, [_pid(1)])] == ["남은 청크"]
    finally:
        client.close()


def test_a_directory_of_the_old_local_engine_is_refused_not_shown_empty(tmp_path):
    old = QdrantClient(path=str(tmp_path / "qdrant"))
    old.create_collection("korag", vectors_config={})
    old.close()
    with pytest.raises(LocalModeDataError, match="run `korag migrate`"):
        EdgeClient(tmp_path / "qdrant")


def test_an_argument_edge_cannot_honour_is_refused_by_name_not_ignored(tmp_path):
    client = EdgeClient(tmp_path / "edge")
    try:
        _create(client)
        client.upsert(CHUNKS, points=POINTS)
        geo = models.Filter(must=[models.FieldCondition(
            key="metadata.place", geo_radius=models.GeoRadius(center=models.GeoPoint(lon=127.0, lat=37.5), radius=10.0))])
        with pytest.raises(EdgeUnsupportedError, match="geo_radius"):
            client.count(CHUNKS, count_filter=geo)
        with pytest.raises(EdgeUnsupportedError, match="lookup_from"):
            client.query_points(CHUNKS, query=[0.1] * DIM, using="dense",
                                lookup_from=models.LookupLocation(collection=REGISTRY))
    finally:
        client.close()


# -- the fast write path and index upkeep -----------------------------------------------------------
def _records(client) -> dict:
    records, _ = client.scroll(CHUNKS, limit=N + 1, with_payload=True, with_vectors=True)
    return {r.id: (r.payload, r.vector) for r in records}


def test_upsert_plain_stores_exactly_what_upsert_stores(tmp_path):
    class Terms:  # like ingest.sparse's vectors: indices and values
        def __init__(self, vector):
            self.indices, self.values = vector.indices, vector.values

    slow, fast = EdgeClient(tmp_path / "slow"), EdgeClient(tmp_path / "fast")
    try:
        _create(slow)
        _create(fast)
        slow.upsert(CHUNKS, points=POINTS)
        dense = np.array([p.vector["dense"] for p in POINTS], dtype=np.float32)
        sparse = [Terms(p.vector["sparse"]) if "sparse" in p.vector else None for p in POINTS]
        fast.upsert_plain(CHUNKS, [p.id for p in POINTS], {"dense": dense}, [p.payload for p in POINTS],
                          {"sparse": sparse})
        assert _records(fast).keys() == _records(slow).keys()
        for pid, (payload, vector) in _records(fast).items():
            want_payload, want_vector = _records(slow)[pid]
            assert payload == want_payload
            assert vector.keys() == want_vector.keys()  # no sparse vector where a chunk has no keywords
            assert np.allclose(vector["dense"], want_vector["dense"], atol=1e-6)
        with pytest.raises(ValueError, match="differ in length"):
            fast.upsert_plain(CHUNKS, [POINTS[0].id], {"dense": dense}, [{}])
    finally:
        slow.close()
        fast.close()


def test_after_batch_keeps_answers_and_does_nothing_on_qdrant_client(tmp_path):
    from korag.storage.edge import upkeep

    local = QdrantClient(location=":memory:")
    _create(local)
    assert upkeep.after_batch(local) == {}
    edge = EdgeClient(tmp_path / "edge")
    try:
        _create(edge)
        edge.upsert(CHUNKS, points=POINTS)
        query = dict(query=POINTS[3].vector["dense"], using="dense", limit=5)
        before = [p.id for p in edge.query_points(CHUNKS, **query).points]
        assert upkeep.after_batch(edge) == {CHUNKS: False}  # far below one segment: nothing to index
        assert [p.id for p in edge.query_points(CHUNKS, **query).points] == before
    finally:
        edge.close()


def test_a_store_made_before_the_upkeep_settings_gets_bounded_segments_when_opened(tmp_path):
    """Without max_segment_size Edge's optimize() merges everything into one segment and indexes
    it in one go: 15 minutes at 100k points, with the process frozen (it holds the GIL)."""
    import json
    import shutil

    import qdrant_edge as qe

    from korag.storage.edge import upkeep

    client = EdgeClient(tmp_path / "edge")
    _create(client)
    client.close()
    shard = tmp_path / "edge" / "collections" / CHUNKS / "shard"
    shutil.rmtree(shard)  # the shard as korag before upkeep created it: no optimizer settings
    dense = qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine)
    qe.EdgeShard.create(str(shard), qe.EdgeConfig(vectors={"dense": dense}, sparse_vectors={
        "sparse": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)})).close()
    assert "max_segment_size" not in (shard / "edge_config.json").read_text()
    client = EdgeClient(tmp_path / "edge")
    try:
        client.count(CHUNKS)
    finally:
        client.close()
    optimizers = json.loads((shard / "edge_config.json").read_text())["optimizers"]
    assert optimizers["max_segment_size"] == optimizers["indexing_threshold"] == upkeep.SEGMENT_KB
