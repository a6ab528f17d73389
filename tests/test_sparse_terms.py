"""The keyword channel's terms: compounds, numbers with units, question words (issue 20)."""

from __future__ import annotations

from ingest.sparse import SparseEncoder, SparseVector


def _dot(query: SparseVector, document: SparseVector) -> float:
    weights = dict(zip(document.indices, document.values))
    return sum(v * weights.get(i, 0.0) for i, v in zip(query.indices, query.values))


def test_a_compound_is_found_by_its_parts_and_as_a_whole_however_it_is_spaced():
    encoder = SparseEncoder()
    joined, spaced = encoder.terms("시중은행 전환을 신청한다"), encoder.terms("시중 은행 전환을 신청한다")
    assert "시중은행전환" in joined and set(joined) == set(spaced)
    document = encoder.encode_document("시중은행의 인가 요건")
    for query in ("시중은행", "시중 은행", "은행"):
        assert _dot(encoder.encode_query(query), document) > 0, query


def test_the_compound_ranks_a_passage_with_the_phrase_above_one_with_its_parts_apart():
    phrase, apart = "지방은행의 인가 요건을 정한다", "은행은 지방에서 인가 요건을 정한다"
    plain = SparseEncoder(compounds=False)  # without compounds the two score alike
    query = plain.encode_query("지방은행")
    assert abs(_dot(query, plain.encode_document(phrase)) - _dot(query, plain.encode_document(apart))) < 1e-9
    encoder = SparseEncoder()
    query = encoder.encode_query("지방은행")
    assert _dot(query, encoder.encode_document(phrase)) > _dot(query, encoder.encode_document(apart))


def test_a_number_and_its_unit_give_the_same_terms_spaced_or_not():
    encoder = SparseEncoder()
    assert encoder.terms("14일") == encoder.terms("14 일") == ["14", "일"]


def test_question_words_and_task_words_are_not_query_terms():
    encoder = SparseEncoder()
    assert encoder.query_terms("한도는 얼마인가요? 설명하시오") == ["한도"]
    assert encoder.query_terms("어떠한 조건에 대해 설명해 주세요") == ["조건"]
    # documents keep them: only a query's question words carry no content
    assert "얼마" in encoder.terms("한도는 얼마인가")
    assert SparseEncoder(query_stop=frozenset()).query_terms("한도는 얼마인가") == ["한도", "얼마"]
