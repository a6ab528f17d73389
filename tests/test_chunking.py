"""Chunks always fit the model in use, lose nothing, and follow the document's structure."""

from __future__ import annotations

import re

import pytest

from bench.documents import long_korean_text
from ingest.chunking import Chunker, ChunkingOptions
from ingest.parsing.blocks import Block
from ingest.tokens import compose_input
from korag.errors import InputTooLongError
from korag.types import Chunk

MODELS = ["minilm", "tiny_xlmr"]


def _blocks_from_text(text: str, title: str | None = "제1장 총칙") -> list[Block]:
    blocks = [Block("title", title)] if title else []
    return blocks + [Block("text", p) for p in text.split("\n\n")]


def _model_tokens(embedder, chunk: Chunk) -> int:
    """Independent count: the model's tokenizer on the exact string the model will embed."""
    text = compose_input(embedder.passage_budget.prefix, chunk.header, chunk.text)
    return len(embedder.model.tokenizer(text)["input_ids"])


@pytest.fixture(params=MODELS)
def embedder(request):
    return request.getfixturevalue(request.param)


def test_every_chunk_fits_and_the_limit_follows_the_model(embedder):
    chunks = Chunker(embedder.passage_budget).chunk(_blocks_from_text(long_korean_text(60)))
    limit = embedder.model.max_seq_length
    sizes = [_model_tokens(embedder, c) for c in chunks]
    assert len(chunks) > 3
    assert max(sizes) <= limit
    # Chunks are filled close to the model's own limit: 256 for MiniLM, 512 for the XLM-R model.
    assert max(sizes) > limit * 0.8


def test_the_embedder_takes_the_chunkers_token_ids_and_gets_the_same_vectors(embedder, monkeypatch):
    """The chunker tokenized each embedded input to check the limit; the embedder uses those ids
    instead of tokenizing again, and the vectors are those of tokenizing the text."""
    from dataclasses import replace

    chunks = Chunker(embedder.passage_budget).chunk(_blocks_from_text(long_korean_text(20)))
    assert all(list(c.input_ids) == embedder.model.tokenizer(
        compose_input(embedder.passage_budget.prefix, c.header, c.text))["input_ids"] for c in chunks)
    bare = [replace(c, input_ids=None) for c in chunks]
    assert bare == chunks  # the ids are no part of a chunk's identity
    expected, expected_counts = embedder.embed_passages(bare)

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(embedder.engine, "tokenize", no_tokenizing)
    vectors, counts = embedder.embed_passages(chunks)
    assert counts == expected_counts == [len(c.input_ids) for c in chunks]
    assert float((vectors * expected).sum(axis=1).min()) > 0.9999
    with pytest.raises(AssertionError, match="tokenized again"):  # a chunk without ids: tokenized
        embedder.embed_passages(chunks[:1] + bare[1:2])


def test_limits_differ_between_models(minilm, tiny_xlmr):
    assert minilm.info.max_input_tokens == 256
    assert tiny_xlmr.info.max_input_tokens == 512
    # XLM-R adds <s> ... </s>; the prefix costs tokens too, so the body budget is below 510.
    assert tiny_xlmr.passage_budget.body_budget(None) < 510


def test_no_sentence_is_lost(embedder):
    text = long_korean_text(40)
    chunks = Chunker(embedder.passage_budget, ChunkingOptions(overlap_tokens=0)).chunk(_blocks_from_text(text))
    joined = "\n".join(c.text for c in chunks)
    for sentence in re.findall(r"[^.]+\.", text):
        assert sentence.strip() in joined
    # Without overlap, each sentence is in exactly one chunk.
    assert sum(c.text.count("번째 문장은") for c in chunks) == text.count("번째 문장은")


def test_overlap_repeats_the_previous_chunks_tail(minilm):
    chunks = Chunker(minilm.passage_budget, ChunkingOptions(overlap_tokens=70)).chunk(_blocks_from_text(long_korean_text(30)))
    last_sentence = [re.split(r"(?<=\.)\s+", a.text)[-1] for a in chunks]
    assert all(len(minilm.model.tokenizer(s)["input_ids"]) <= 70 for s in last_sentence)  # ~61 each here
    repeated = [tail in b.text for tail, b in zip(last_sentence, chunks[1:])]
    assert all(repeated)
    no_overlap = Chunker(minilm.passage_budget, ChunkingOptions(overlap_tokens=0)).chunk(_blocks_from_text(long_korean_text(30)))
    assert len(no_overlap) < len(chunks)


def test_sections_are_not_merged(minilm):
    blocks = [
        Block("title", "제1장 총칙"), *[Block("text", p) for p in long_korean_text(3).split("\n\n")],
        Block("title", "제2장 보칙"), Block("text", "이 장은 부칙에 관한 내용입니다. 시행일은 공포한 날입니다."),
    ]
    chunks = Chunker(minilm.passage_budget).chunk(blocks)
    assert chunks[-1].section == "제2장 보칙"
    assert chunks[-1].text.startswith("이 장은 부칙")
    assert all(c.section == "제1장 총칙" for c in chunks[:-1])
    assert chunks[-1].header == "제2장 보칙"  # embedded in front of the text
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_heading_path_nests(minilm):
    blocks = [Block("title", "제1장", depth=0), Block("title", "제1절", depth=1), Block("text", "본문입니다. " * 10)]
    (chunk,) = Chunker(minilm.passage_budget).chunk(blocks)
    assert chunk.section == "제1장 > 제1절"


def test_table_stays_whole_when_it_fits_and_splits_between_rows_otherwise(minilm):
    small = ("이름 | 점수", "김철수 | 90", "이영희 | 88")
    chunks = Chunker(minilm.passage_budget).chunk([Block("table", "\n".join(small), rows=small)])
    assert [c.text for c in chunks] == ["\n".join(small)]

    rows = tuple(f"학생{i} | 국어 {i} | 영어 {i * 2} | 수학 {i * 3}" for i in range(200))
    chunks = Chunker(minilm.passage_budget).chunk([Block("table", "\n".join(rows), rows=rows)])
    assert len(chunks) > 1
    stored_rows = [line for c in chunks for line in c.text.split("\n")]
    assert stored_rows == list(rows)  # every row whole, in order, none twice (no overlap in tables)


def test_an_overlong_sentence_is_cut_at_tokenizer_offsets(embedder):
    sentence = "가나다라마바사 아자차카타파하 " * 300 + "끝문장ZEBRA"  # one sentence, no full stop
    chunks = Chunker(embedder.passage_budget, ChunkingOptions(overlap_tokens=0)).chunk([Block("text", sentence)])
    assert len(chunks) > 1
    assert "".join(c.text for c in chunks).replace(" ", "") == sentence.replace(" ", "")
    assert all(_model_tokens(embedder, c) <= embedder.model.max_seq_length for c in chunks)
    assert chunks[-1].text.endswith("끝문장ZEBRA")


def test_a_long_heading_does_not_break_the_budget(minilm):
    title = "아주 긴 제목 " * 200
    chunks = Chunker(minilm.passage_budget).chunk([Block("title", title), Block("text", long_korean_text(5))])
    assert all(_model_tokens(minilm, c) <= 256 for c in chunks)
    # The full title is kept as text, cut between words.
    assert " ".join(c.text for c in chunks).count("아주 긴 제목") == 200


def test_lone_headings_are_kept(minilm):
    blocks = [Block("title", "구분"), Block("title", "토요일"), Block("title", "평일")]
    chunks = Chunker(minilm.passage_budget).chunk(blocks)
    text = " ".join(c.text for c in chunks) + " ".join(c.section or "" for c in chunks)
    assert all(word in text for word in ("구분", "토요일", "평일"))


def test_embedder_refuses_instead_of_truncating(embedder):
    too_long = Chunk(text="가나다라 " * 2000, index=0)
    with pytest.raises(InputTooLongError, match="refuses rather than truncates"):
        embedder.embed_passages([too_long])
    with pytest.raises(InputTooLongError):
        embedder.embed_queries(["질문 " * 2000])


def test_prefixes_are_applied(minilm):

    raw = minilm.model.encode(["query: 비밀번호", "passage: 비밀번호"], normalize_embeddings=True)
    query = minilm.embed_queries(["비밀번호"])[0]
    passage, counts = minilm.embed_passages([Chunk(text="비밀번호", index=0)])
    # the embedder may run at reduced precision (KORAG_EMBEDDING_PRECISION=auto): compare directions
    assert float(query @ raw[0]) >= 0.999 and float(passage[0] @ raw[1]) >= 0.999
    assert float(query @ passage[0]) < float(query @ raw[0]) - 0.001
    assert counts == [len(minilm.model.tokenizer("passage: 비밀번호")["input_ids"])]


def test_keyword_terms_come_from_the_sentence_analysis_with_no_second_pass(minilm, monkeypatch):
    """One Kiwi analysis per text serves the sentence boundaries and the keyword terms: every
    chunk's terms (its header's included) are those of Kiwi on the chunk's own text, and Kiwi
    reads each character of the document once."""
    from ingest import sentences
    from ingest.sparse import SparseEncoder

    analysed: list[int] = []
    real = sentences.kiwi()

    class Counting:
        def split_into_sents(self, text, *args, **kwargs):
            analysed.append(len(text))
            return real.split_into_sents(text, *args, **kwargs)

    monkeypatch.setattr(sentences, "kiwi", lambda: Counting())
    sparse = SparseEncoder()
    blocks = [*_blocks_from_text(long_korean_text(12)), Block("title", "제2장 보칙"),
              Block("text", "이 장은 부칙에 관한 내용입니다. 시행일은 공포한 날입니다.")]
    out = Chunker(minilm.passage_budget).chunk_with_terms(blocks, sparse.terms_of)
    assert sum(analysed) == sum(len(b.text) for b in blocks)  # each block once; headers are not analysed again
    monkeypatch.undo()
    assert [c for c, _ in out] == Chunker(minilm.passage_budget).chunk(blocks)  # the same chunks as without terms
    for chunk, terms in out:
        assert sorted(terms) == sorted(sparse.terms(compose_input("", chunk.header, chunk.text)))
    assert out[-1][0].header == "제2장 보칙" and "부칙" in out[-1][1] and "칙" in out[-1][1]
