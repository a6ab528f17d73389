"""Dify's External Knowledge API (retrieval/dify.py): Dify's exact request and response fields,
metadata_condition applied through korag's filter on a real store with the offline model, and
Dify's error codes."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from bench import documents as docs
from ingest.pipeline import DocumentInfo, Pipeline
from korag.storage.query_filter import FilterError, parse_filter
from korag.storage.store import QdrantStore, open_client
from retrieval import Retriever
from retrieval.dify import (
    DifyError,
    DifyRequest,
    DifyResponse,
    MetadataCondition,
    bearer_key,
    condition_filter,
    retrieve,
)
from tests.conftest import make_settings

# Dify's documented example request, byte for byte in its field names
SPEC_REQUEST = {
    "knowledge_id": "korag",
    "query": "정기 점검",
    "retrieval_setting": {"top_k": 5, "score_threshold": 0.0},
}
DOCS = {
    "a.txt": {"team": "legal", "year": 2021, "date": "2024-01-15", "stamp": 1_700_000_000},
    "b.txt": {"team": "sales", "year": 2024, "date": "2024-06-01", "stamp": 1_720_000_000},
    "c.txt": {"team": "hr", "year": "2023"},
}


@pytest.fixture(scope="module")
def retriever(tmp_path_factory, minilm):
    tmp = tmp_path_factory.mktemp("dify")
    settings = make_settings(tmp)
    client = open_client(settings)
    store = QdrantStore(client, settings.collection)
    pipeline = Pipeline.build(minilm, store, settings)
    for number, (source, meta) in enumerate(DOCS.items(), start=1):
        # distinct texts, so the three scores differ and a threshold between them means something
        text = f"공지사항\n\n{number}일에는 정기 점검으로 서비스가 {number}시간 중단됩니다. 불편을 드려 죄송합니다."
        result = pipeline.ingest_path(docs.make_text(tmp / source, text=text), source=source,
                                      info=DocumentInfo(tenant="acme", meta=tuple(meta.items())))
        assert result.status == "indexed", result
    yield Retriever(minilm, store)
    client.close()


@pytest.fixture
def search(retriever):
    calls = []

    def run(query, k, where):
        calls.append((query, k, where))
        return retriever.search(query, k=k, mode="dense", tenant="acme", where=where)

    run.calls = calls
    return run


def _ask(search, condition=None, **setting) -> DifyResponse:
    body = {**SPEC_REQUEST, "retrieval_setting": {**SPEC_REQUEST["retrieval_setting"], **setting}}
    if condition is not None:
        body["metadata_condition"] = condition
    return retrieve(DifyRequest.model_validate(body), search, knowledge_ids={"korag"})


def _titles(response: DifyResponse) -> set[str]:
    return {r.title for r in response.records}


def test_the_spec_request_gets_records_with_exactly_difys_fields(search):
    response = _ask(search)
    body = json.loads(response.model_dump_json())
    assert set(body) == {"records"}
    assert len(body["records"]) == 3
    for record in body["records"]:
        assert set(record) == {"content", "score", "title", "metadata"}
        assert isinstance(record["metadata"], dict)  # never null: Dify fails on null metadata
        assert 0.0 <= record["score"] <= 1.0
        assert record["content"] and record["title"] in DOCS
        assert record["metadata"]["source"] == record["title"] and "chunk_id" in record["metadata"]
        assert not {"tenant", "request", "ingest_seq", "content_hash"} & set(record["metadata"])
    scores = [r["score"] for r in body["records"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("condition, expected", [
    ({"conditions": [{"name": "team", "comparison_operator": "is", "value": "legal"}]}, {"a.txt"}),
    ({"conditions": [{"name": ["team"], "comparison_operator": "is not", "value": "legal"}]}, {"b.txt", "c.txt"}),
    ({"conditions": [{"name": "team", "comparison_operator": "in", "value": ["legal", "hr"]}]}, {"a.txt", "c.txt"}),
    ({"conditions": [{"name": "team", "comparison_operator": "not in", "value": "legal,hr"}]}, {"b.txt"}),
    ({"conditions": [{"name": "year", "comparison_operator": "=", "value": "2023"}]}, {"c.txt"}),
    ({"conditions": [{"name": "year", "comparison_operator": "≠", "value": 2024}]}, {"a.txt", "c.txt"}),
    ({"conditions": [{"name": "year", "comparison_operator": "≥", "value": 2022}]}, {"b.txt"}),
    ({"conditions": [{"name": "year", "comparison_operator": "<", "value": "2022"}]}, {"a.txt"}),
    ({"conditions": [{"name": "date", "comparison_operator": "after", "value": "2024-03-01"}]}, {"b.txt"}),
    ({"conditions": [{"name": "stamp", "comparison_operator": "before", "value": 1_710_000_000}]}, {"a.txt"}),
    ({"conditions": [{"name": "date", "comparison_operator": "before", "value": 1_710_000_000}]}, {"a.txt"}),
    ({"conditions": [{"name": "date", "comparison_operator": "empty"}]}, {"c.txt"}),
    ({"conditions": [{"name": "date", "comparison_operator": "not empty"}]}, {"a.txt", "b.txt"}),
    ({"logical_operator": "or", "conditions": [{"name": "team", "comparison_operator": "is", "value": "hr"},
                                               {"name": "year", "comparison_operator": ">", "value": 2023}]},
     {"b.txt", "c.txt"}),
    ({"logical_operator": "and", "conditions": [{"name": "team", "comparison_operator": "is", "value": "hr"},
                                                {"name": "year", "comparison_operator": ">", "value": 2023}]},
     set()),
    ({"conditions": [{"name": ["team", "date"], "comparison_operator": "is", "value": "2024-06-01"}]}, {"b.txt"}),
    ({"conditions": [{"name": "team", "comparison_operator": "is", "value": "nobody"}]}, set()),
    ({"conditions": []}, {"a.txt", "b.txt", "c.txt"}),
])
def test_metadata_condition_selects_the_matching_documents(search, condition, expected):
    assert _titles(_ask(search, condition)) == expected


@pytest.mark.parametrize("condition, message", [
    ({"conditions": [{"name": "team", "comparison_operator": "contains", "value": "leg"}]},
     "'contains' is not supported"),
    ({"conditions": [{"name": "team", "comparison_operator": "like", "value": "x"}]},
     "unknown comparison_operator 'like'"),
    ({"conditions": [{"name": "year", "comparison_operator": ">", "value": "soon"}]}, "expected a number, got 'soon'"),
    ({"conditions": [{"name": "year", "comparison_operator": "is"}]}, "needs a value"),
    ({"conditions": [{"name": "a.b", "comparison_operator": "is", "value": "x"}]}, "contains '.'"),
    # no finite number, or a time past the year 9999: were 500 (OverflowError, ValueError)
    ({"conditions": [{"name": "stamp", "comparison_operator": "before", "value": "inf"}]}, "'inf' is neither an ISO 8601"),
    ({"conditions": [{"name": "stamp", "comparison_operator": "after", "value": "nan"}]}, "'nan' is neither an ISO 8601"),
    ({"conditions": [{"name": "stamp", "comparison_operator": "before", "value": 1e20}]}, "not a Unix timestamp"),
    ({"conditions": [{"name": "stamp", "comparison_operator": "after", "value": "-1e20"}]}, "nor a Unix timestamp"),
    ({"conditions": [{"name": "year", "comparison_operator": "=", "value": "NaN"}]}, "expected a number, got 'NaN'"),
    ({"conditions": [{"name": "year", "comparison_operator": ">", "value": float("inf")}]}, "finite number, got inf"),
    ({"conditions": [{"name": "year", "comparison_operator": "≥", "value": 99999999999999999999}]},
     "outside the 64-bit range"),
    ({"conditions": [{"name": "year", "comparison_operator": "≥", "value": "99999999999999999999"}]},
     "expected a number"),  # as text: up to 18 digits, as the schema says (NUMBER_TEXT)
    ({"conditions": [{"name": "year", "comparison_operator": "=", "value": " IS "}]}, "expected a number"),
    ({"conditions": [{"name": "team", "comparison_operator": "IS", "value": "x"}]}, "unknown comparison_operator"),
    ({"conditions": [{"name": "key", "comparison_operator": "is", "value": "x"}]}, "field named 'key'"),
    ({"conditions": [{"name": "team", "comparison_operator": "in", "value": {"a": 1}}]}, "list or comma-separated"),
    ({"conditions": [{"name": "team", "comparison_operator": "is", "value": "\ud800"}]}, "lone surrogate"),
])
def test_a_condition_korag_cannot_apply_is_error_3001_and_nothing_is_searched(search, condition, message):
    with pytest.raises(DifyError, match=message) as caught:
        _ask(search, condition)
    assert (caught.value.status, caught.value.error_code) == (422, 3001)
    assert set(caught.value.to_json()) == {"error_code", "error_msg"}
    assert search.calls == []


def test_score_threshold_and_top_k(search):
    everything = _ask(search)
    scores = sorted(r.score for r in everything.records)
    assert len(set(scores)) == 3, scores
    cut = scores[1]
    kept = _ask(search, score_threshold=cut)
    assert all(r.score >= cut for r in kept.records) and len(kept.records) == 2
    assert len(_ask(search, top_k=1).records) == 1
    _ask(search, top_k=500)
    assert search.calls[-1][1] == 100  # korag's limit


def test_unknown_knowledge_is_error_2001(search):
    body = {**SPEC_REQUEST, "knowledge_id": "other"}
    with pytest.raises(DifyError) as caught:
        retrieve(DifyRequest.model_validate(body), search, knowledge_ids={"korag"})
    assert (caught.value.status, caught.value.error_code) == (404, 2001)
    assert search.calls == []
    assert retrieve(DifyRequest.model_validate(body), search).records  # no knowledge_ids: any id is served


def test_bearer_header_and_error_bodies():
    """Dify's documented status for 1001 and 1002 is 403 (its setup check rejects only 403, 404
    and 502); no header at all is HTTP's 401 with a challenge."""
    assert bearer_key("Bearer korag_abc") == "korag_abc"
    assert bearer_key("bearer  korag_abc ") == "korag_abc"
    for bad, status in ((None, 401), ("", 401), ("korag_abc", 403), ("Basic xyz", 403), ("Bearer ", 403)):
        with pytest.raises(DifyError) as caught:
            bearer_key(bad)
        assert caught.value.to_json()["error_code"] == 1001 and caught.value.status == status
        assert (caught.value.headers is not None) == (status == 401)
    failed = DifyError.authorization_failed()
    assert (failed.to_json()["error_code"], failed.status) == (1002, 403)


def test_request_validation_follows_the_spec():
    with pytest.raises(ValueError):
        DifyRequest.model_validate({"knowledge_id": "k", "query": "q"})  # retrieval_setting is required
    with pytest.raises(ValueError):
        DifyRequest.model_validate({**SPEC_REQUEST, "query": "가" * 2001})
    with pytest.raises(ValueError):
        DifyRequest.model_validate({**SPEC_REQUEST, "retrieval_setting": {"top_k": 0, "score_threshold": 0.5}})
    assert condition_filter(None) is None and condition_filter({"conditions": []}) is None
    assert condition_filter({"conditions": [{"name": "t", "comparison_operator": "empty"}]}) == {
        "and": [{"not": {"key": "t", "op": "exists", "value": True}}]}


# -- the JSON Schema of metadata_condition says what korag applies -------------------------------------
_OPERATORS = ["is", "is not", "in", "not in", "=", "≠", "!=", ">", "<", "≥", "≤", ">=", "<=", "before", "after",
              "empty", "not empty", "null", "not null", "contains", "start with", "IS", " is", "like"]
_VALUES = ["legal", "legal, hr", ",", " , ", "", "2024", " 2024 ", "-3.5", "+3", "1e3", "1_000", "inf", "NaN",
           "99999999999999999999", "1710000000", "17100000000", "2024-03-01", "2024-02-30", "2024-03-01T09:00Z",
           2024, 2.5, -1e20, 1e20, 1_710_000_000, 253_402_300_800, 2**63, True, None, [], ["legal", 3], [None], {}]


def _applies(condition) -> bool:
    try:
        parse_filter(condition_filter(condition))
    except (FilterError, ValidationError):
        return False
    return True


def test_the_json_schema_of_metadata_condition_admits_exactly_what_korag_applies():
    """The OpenAPI schema of Dify's metadata_condition (per operator: its value's types, numbers
    within 64 bits, timestamps within years 1 to 9999, dates that exist, names korag can filter
    on) and condition_filter say the same of every condition."""
    import jsonschema_rs
    from hypothesis import given, settings
    from hypothesis import strategies as st

    validator = jsonschema_rs.validator_for(MetadataCondition.model_json_schema())
    name = st.sampled_from(["team", "team", "year", "key", "a.b", " ", ["team", "date"], [], ["and"]])
    value = st.sampled_from(_VALUES)
    condition = st.fixed_dictionaries({"name": name, "comparison_operator": st.sampled_from(_OPERATORS)},
                                      optional={"value": value})
    conditions = st.fixed_dictionaries({"conditions": st.lists(condition, max_size=3)},
                                       optional={"logical_operator": st.sampled_from(["and", "or", "xor"])})

    @settings(max_examples=3000, deadline=None, derandomize=True)
    @given(conditions)
    def agree(body):
        assert validator.is_valid(body) == _applies(body), body

    agree()
