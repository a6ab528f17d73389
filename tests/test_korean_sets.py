"""The Korean labelled sets bench/korean_sets.py builds from ../shared/samples and demo/docs
(issue 20 item 2): BEIR folders `korag eval` reads, whose answers are really hidden in the query's
passage, big enough to compare fusions on. Skips when ../shared is absent."""

from __future__ import annotations

import pytest

from bench import korean_sets
from retrieval.evaluation import Dataset
from tests.conftest import shared_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("sets")
    shared = shared_path("samples").parent
    assert korean_sets.main([str(out), "--shared", str(shared)]) == 0
    return {name: Dataset.load(out / name) for name in ("ko-ict", "ko-headings")}


def test_sets_load_as_beir_folders_with_enough_queries(built):
    ict, headings = built["ko-ict"], built["ko-headings"]
    assert len(ict.qrels) >= 100 and len(headings.qrels) >= 40
    assert [p["_id"] for p in ict.corpus] == [p["_id"] for p in headings.corpus]
    ids = {p["_id"] for p in ict.corpus}
    assert len(ids) == len(ict.corpus)
    for dataset in built.values():
        assert all(set(relevant) <= ids for relevant in dataset.qrels.values())


def test_ict_query_is_removed_from_its_passage(built):
    ict = built["ko-ict"]
    texts = {p["_id"]: p["text"] for p in ict.corpus}
    for qid, relevant in ict.qrels.items():
        (gold,) = relevant
        query = " ".join(ict.queries[qid].split())
        assert query not in texts[gold]
        assert korean_sets.hangul_share(query) >= korean_sets.MIN_HANGUL_SHARE


def test_heading_queries_are_unique_and_not_in_the_corpus(built):
    headings = built["ko-headings"]
    questions = list(headings.queries.values())
    assert len(set(questions)) == len(questions)
    assert "소유권 규칙" in questions  # a Rust book heading: its section, without the heading, is relevant
    assert not any(p["text"] == q for p in headings.corpus for q in questions)
