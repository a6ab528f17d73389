"""The service's filter language (korag.storage.query_filter) on both embedded engines — Qdrant Edge and
qdrant-client's in-memory engine — with the same assertions, through QdrantStore.search's
``where`` in every search mode, and through the Retriever with the real offline model.

Fail closed: a filter that matches nothing returns nothing, a bad one is an error naming it.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from bench import documents as docs
from ingest.pipeline import DocumentInfo, Pipeline
from korag.storage.query_filter import FilterError, parse_filter
from korag.storage.store import QdrantStore, open_client
from retrieval import Retriever
from tests.conftest import make_settings

DIM = 4
# name -> metadata; "year" of d3 is the text "2024", d4's lang is null, d5 has no team and no tags
DOCS = {
    "d0": {"team": "legal", "year": 2021, "score": 0.5, "draft": True, "date": "2024-01-15", "tags": ["a", "b"]},
    "d1": {"team": "legal", "year": 2024, "score": 1.5, "draft": False, "date": "2024-06-01T09:00:00Z"},
    "d2": {"team": "sales", "year": 2019, "score": 2.0, "draft": True, "lang": "en"},
    "d3": {"team": "sales", "year": "2024", "draft": False},
    "d4": {"team": "hr", "year": 2023, "score": -1, "lang": None},
    "d5": {"year": 2025, "lang": "ko", "tags": []},
    "d6": {"team": "3", "year": 3},
    "d7": {"team": "legal", "year": 2022, "date": "2023-12-31"},
}
ALL = set(DOCS)


class _Sparse:
    def __init__(self, indices, values):
        self.indices, self.values = indices, values


@pytest.fixture(scope="module", params=["memory", "edge"])
def store(request, tmp_path_factory):
    url = ":memory:" if request.param == "memory" else None
    settings = make_settings(tmp_path_factory.mktemp(request.param), qdrant_url=url)
    client = open_client(settings)
    store = QdrantStore(client, settings.collection)
    store.ensure_collection("test-model", DIM)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(len(DOCS), DIM)).astype(np.float32)
    payloads, sparse = [], []
    for i, (name, meta) in enumerate(DOCS.items()):
        payloads.append({"page_content": name, "metadata": {**meta, "doc_id": name,
                                                            "tenant": "globex" if name == "d3" else "acme"}})
        sparse.append(_Sparse([1, 10 + i], [1.0, 0.5]))  # every document shares term 1 with the query
    store.upsert([str(uuid.uuid5(uuid.NAMESPACE_URL, name)) for name in DOCS], vectors, payloads, sparse)
    yield store
    client.close()


def _found(store, flt, mode="dense", filters=None) -> set[str]:
    results = store.search(np.ones(DIM, dtype=np.float32), 50, filters, sparse=_Sparse([1], [1.0]), mode=mode,
                           where=parse_filter(flt))
    return {r.text for r in results}


CASES = [
    ({"team": "legal"}, {"d0", "d1", "d7"}),
    ({"team": ["legal", "hr"]}, {"d0", "d1", "d4", "d7"}),
    ({"year": 2024}, {"d1", "d3"}),  # the CLI's reading: 2024 and "2024" match each other
    ({"team": 3}, {"d6"}),
    ({"team": "legal", "draft": True}, {"d0"}),
    ({"key": "year", "op": "eq", "value": 2024}, {"d1"}),  # typed: the number only
    ({"key": "year", "op": "eq", "value": "2024"}, {"d3"}),
    ({"key": "team", "op": "eq", "value": 3}, set()),
    ({"key": "draft", "op": "eq", "value": True}, {"d0", "d2"}),
    ({"key": "score", "op": "eq", "value": 1.5}, {"d1"}),
    ({"key": "score", "op": "eq", "value": 2.0}, {"d2"}),
    ({"key": "team", "op": "ne", "value": "legal"}, {"d2", "d3", "d4", "d5", "d6"}),
    ({"key": "team", "op": "in", "value": ["legal", "hr"]}, {"d0", "d1", "d4", "d7"}),
    ({"key": "year", "op": "in", "value": [2019, "2024"]}, {"d2", "d3"}),
    ({"key": "team", "op": "nin", "value": ["legal", "sales"]}, {"d4", "d5", "d6"}),
    ({"key": "team", "op": "in", "value": []}, set()),
    ({"key": "team", "op": "nin", "value": []}, ALL),
    ({"key": "year", "op": "gt", "value": 2022}, {"d1", "d4", "d5"}),  # the text "2024" is not a number
    ({"key": "year", "op": "gte", "value": 2022}, {"d1", "d4", "d5", "d7"}),
    ({"key": "score", "op": "lt", "value": 1.5}, {"d0", "d4"}),
    ({"key": "score", "op": "lte", "value": 1.5}, {"d0", "d1", "d4"}),
    ({"key": "date", "op": "gte", "value": "2024-01-01"}, {"d0", "d1"}),
    ({"key": "date", "op": "lt", "value": "2024-01-01T00:00:00Z"}, {"d7"}),
    ({"key": "date", "op": "gt", "value": "2024-06-01T08:59:59+00:00"}, {"d1"}),
    ({"key": "lang", "op": "exists"}, {"d2", "d5"}),  # null is not a value
    ({"key": "lang", "op": "exists", "value": False}, {"d0", "d1", "d3", "d4", "d6", "d7"}),
    ({"key": "tags", "op": "exists", "value": True}, {"d0"}),  # an empty list is not a value
    ({"and": [{"team": "legal"}, {"key": "year", "op": "gte", "value": 2022}]}, {"d1", "d7"}),
    ({"or": [{"team": "hr"}, {"key": "draft", "op": "eq", "value": True}]}, {"d0", "d2", "d4"}),
    ({"not": {"team": "legal"}}, {"d2", "d3", "d4", "d5", "d6"}),
    ({"not": [{"team": "legal"}, {"team": "sales"}]}, {"d4", "d5", "d6"}),
    ({"or": [{"and": [{"team": "sales"}, {"key": "draft", "op": "eq", "value": False}]},
             {"not": {"key": "year", "op": "lt", "value": 2025}}]}, {"d3", "d5"}),
    ({"team": "nobody"}, set()),
    ({"key": "nothing_has_this", "op": "eq", "value": "x"}, set()),
    ({}, ALL),
]


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
@pytest.mark.parametrize("flt, expected", CASES, ids=[str(i) for i in range(len(CASES))])
def test_filter_returns_exactly_the_matching_documents(store, flt, expected, mode):
    assert _found(store, flt, mode) == expected


def test_where_is_anded_with_the_tenant_and_the_exact_filters(store):
    assert _found(store, {"team": "sales"}, filters={"tenant": "acme"}) == {"d2"}
    assert _found(store, {"team": "sales"}, filters={"tenant": "globex"}) == {"d3"}
    assert _found(store, {"team": "legal"}, filters={"tenant": "globex"}) == set()
    # an "or" inside the filter cannot widen the tenant restriction
    assert _found(store, {"or": [{"team": "legal"}, {"key": "tenant", "op": "eq", "value": "globex"}]},
                  mode="hybrid", filters={"tenant": "acme"}) == {"d0", "d1", "d7"}


@pytest.mark.parametrize("flt, message", [
    ({"key": "year", "op": "between", "value": 1}, "unknown op 'between'"),
    ({"key": "year", "op": "gt", "value": "abc"}, r"gt takes a number or an ISO 8601 date-time .* got a string 'abc'"),
    ({"key": "year", "op": "gt", "value": True}, "got a boolean"),
    ({"key": "date", "op": "gte", "value": "2024-13-45"}, "ISO 8601 date-time .*'2024-13-45'"),
    ({"key": "a.b", "op": "eq", "value": 1}, r"key 'a.b' contains '\.'"),
    ({"key": "", "op": "eq", "value": 1}, "key '' is not a metadata field name"),
    ({"key": "team", "op": "in", "value": "legal"}, "in takes a list of values, got a string"),
    ({"key": "team", "op": "eq", "value": {"a": 1}}, "eq takes a string, number or boolean, got an object"),
    ({"key": "team", "op": "eq", "value": None}, "got null"),
    ({"key": "team", "op": "eq"}, 'condition without "value"'),
    ({"key": "team", "value": "x"}, 'condition without "op"'),
    ({"key": "team", "opp": "eq", "value": "x"}, "unknown field 'opp'"),
    ({"key": "team", "op": "exists", "value": "yes"}, "exists takes true or false"),
    ({"key": "year", "op": "eq", "value": 2**70}, "outside the 64-bit range"),
    ({"team": {"$eq": "legal"}}, r"filter\.team: an exact match takes a string, number or boolean, got an object"),
    ({"team": []}, "empty list"),
    ({"and": []}, "'and' has an empty list"),
    ({"or": {"team": "x"}}, "'or' takes a list of objects, got an object"),
    ({"and": [{"team": "x"}], "team": "y"}, "'and' cannot share an object with 'team'"),
    ({"and": [{"team": "x"}, 3]}, r"filter\.and\[1\]: expected an object, got a number"),
    ({"and": [{}]}, "empty object"),
])
def test_bad_filters_are_refused_naming_the_problem(flt, message):
    with pytest.raises(FilterError, match=message):
        parse_filter(flt)


def test_filter_error_is_a_value_error_and_limits_hold():
    assert issubclass(FilterError, ValueError)
    assert parse_filter(None) is None and parse_filter({}) is None
    with pytest.raises(FilterError, match="expected an object, got a list"):
        parse_filter([{"team": "x"}])
    deep: dict = {"team": "x"}
    for _ in range(10):
        deep = {"not": deep}
    with pytest.raises(FilterError, match="nested deeper"):
        parse_filter(deep)
    with pytest.raises(FilterError, match="more than 100 conditions"):
        parse_filter({"or": [{"key": "n", "op": "eq", "value": i} for i in range(101)]})


@pytest.fixture(params=["memory", "path"])
def retriever_setup(request, tmp_path, minilm):
    settings = make_settings(tmp_path, qdrant_url=":memory:" if request.param == "memory" else None)
    client = open_client(settings)
    store = QdrantStore(client, settings.collection)
    pipeline = Pipeline.build(minilm, store, settings)
    for name, tenant, year in (("a", "acme", 2021), ("b", "acme", 2024), ("c", "globex", 2024)):
        path = docs.make_text(tmp_path / f"{name}.txt")
        result = pipeline.ingest_path(path, source=f"{name}.txt",
                                      info=DocumentInfo(tenant=tenant, meta=(("year", year), ("team", "legal"))))
        assert result.status == "indexed", result
    yield Retriever(minilm, store)
    client.close()


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_retriever_applies_where_with_tenant_and_filters(retriever_setup, mode):
    retriever = retriever_setup
    where = parse_filter({"key": "year", "op": "gte", "value": 2024})
    sources = {r.metadata["source"] for r in retriever.search("정기 점검", k=10, mode=mode, where=where)}
    assert sources == {"b.txt", "c.txt"}
    hits = retriever.search_with_notes("정기 점검", k=10, mode=mode, tenant="acme", where=where).results
    assert {r.metadata["source"] for r in hits} == {"b.txt"}
    hits = retriever.search("정기 점검", k=10, mode=mode, filters={"source": "a.txt"}, where=where)
    assert hits == []
    assert retriever.search("정기 점검", k=10, mode=mode, where=parse_filter({"team": "sales"})) == []


# -- the JSON Schema says what the parser accepts ------------------------------------------------------
def _filter_validator():
    import jsonschema_rs

    from korag.services.schemas import FILTER_SCHEMA  # SearchRequest's filter: null or a KoragFilter
    from korag.storage.query_filter import json_schemas

    root = json.loads(json.dumps(FILTER_SCHEMA).replace("#/components/schemas/", "#/$defs/"))
    return jsonschema_rs.validator_for({**root, "$defs": json_schemas("#/$defs/")})


def _accepted(flt) -> bool:
    try:
        parse_filter(flt)
    except FilterError:
        return False
    return True


_KEYS = ["team", "연도", " x ", "and", "or", "not", "key", "op", "value", "a.b", "", " ", "\u3000", 'q"', "x[0]"]
_OPS = ["eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "exists", "EQ", "like"]
_VALUES = ["legal", "3", "", True, False, None, 0, 3, -7, 2.5, 3.0, 1e30, -1e19, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1,
           "2024-05-01", " 2024-05-01T09:00Z ", "2024-02-29", "2023-02-29", "2024-13-01", "0000-01-01",
           "2024-05-01T24:00", "2024-05-01T09:00:00.1234567890", "2024-05-01T09:00+09:60", "2024-05-01T09:00+0930",
           "２０２４-05-01", "2024-5-1", [], {}]


def _filters():
    from hypothesis import strategies as st

    def mostly(good: list, every: list):  # well-formed most of the time, so both answers come up often
        return st.sampled_from(good * 6 + every)

    scalar = mostly(["legal", 3, 2.5, True, "2024-05-01"], _VALUES)
    values = st.one_of(scalar, scalar, st.lists(scalar, max_size=3))
    key = mostly(["team", "연도", " x "], _KEYS)
    well = st.fixed_dictionaries({"key": key, "op": mostly(_OPS[:9], _OPS), "value": values})
    condition = st.one_of(*[well] * 6, st.fixed_dictionaries({"key": key, "op": mostly(["exists"], _OPS)}),
                          well.map(lambda c: {**c, "extra": 1}), st.fixed_dictionaries({"op": st.just("eq")}))
    exact = st.dictionaries(key, values, max_size=3)
    leaf = st.one_of(condition, exact, exact, scalar.map(lambda v: v if v is None else {"team": v}))

    def nest(inner):
        lists = st.lists(inner, max_size=3)
        logical = st.builds(lambda op, v: {op: v}, st.sampled_from(["and", "or", "not"]), st.one_of(lists, inner))
        return st.one_of(logical, logical, logical, st.builds(lambda a, b: {"and": a, "team": b}, lists, scalar))

    return st.recursive(leaf, nest, max_leaves=6)


def test_the_json_schema_admits_exactly_the_filters_the_parser_accepts():
    """korag.storage.query_filter.json_schemas (the service's OpenAPI) and parse_filter say the same of
    every filter: well formed and not, typed values, dates that exist and do not, keys korag
    refuses, numbers beyond 64 bits. (The two limits the schema only states, MAX_DEPTH and
    MAX_CONDITIONS, are not reached here.)"""
    from hypothesis import given, settings

    validator = _filter_validator()

    @settings(max_examples=3000, deadline=None, derandomize=True)
    @given(_filters())
    def agree(flt):
        assert validator.is_valid(flt) == _accepted(flt), flt

    agree()


@pytest.mark.parametrize("engine", ["memory", "edge"])
def test_keys_qdrant_reads_only_quoted_are_filtered_too(engine, tmp_path):
    """A metadata key with a space, ":", "/" or a soft hyphen is stored, and korag's filter on it
    was Qdrant's "invalid JSON path" (422 on the service): the path now quotes such keys. A key
    with a backslash, which Qdrant Edge reads in no path, is refused by name."""
    settings = make_settings(tmp_path, qdrant_url=":memory:" if engine == "memory" else None)
    client = open_client(settings)
    store = QdrantStore(client, settings.collection)
    store.ensure_collection("test-model", DIM)
    keys = ["due date", "a:b", "x/y", "soft\xadhyphen", "한국어 키", "plain_key-1"]
    store.upsert([str(uuid.uuid5(uuid.NAMESPACE_URL, k)) for k in keys], np.ones((len(keys), DIM), np.float32),
                 [{"page_content": k, "metadata": {k: "v", "n": i}} for i, k in enumerate(keys)],
                 [_Sparse([1], [1.0])] * len(keys))
    try:
        for key in keys:
            assert _found(store, {key: "v"}) == {key}
            assert _found(store, {"key": key, "op": "eq", "value": "v"}) == {key}
            assert _found(store, {"not": {"key": key, "op": "exists"}}) == set(keys) - {key}
    finally:
        client.close()
    with pytest.raises(FilterError, match=r"contains '\\\\'"):
        parse_filter({"a\\b": "v"})
