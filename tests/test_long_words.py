"""A long "word" never becomes one enormous chunk (issue 24, item 4).

The offline MiniLM's WordPiece tokenizer reads any word over ``max_input_chars_per_word`` (100
normalized characters: about 38 Hangul syllables, which it spells in jamo) as one ``[UNK]``, so
the token limit alone let 1.5 MB of unspaced Korean through as two chunks of 300-400k
characters. Real chunker, real MiniLM tokenizer, the tiny XLM-R (KoE5's SentencePiece kind of
tokenizer) from conftest, and a real `korag ingest` into an embedded store.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from ingest.chunking import Chunker, ChunkingOptions
from ingest.parsing.blocks import Block
from korag.types import Chunk
from tests.conftest import korag_cli, korag_env, offline_model_path

# Real Korean sentences, varied enough that about 7% of their syllables use a jamo MiniLM's
# vocabulary lacks (있, 했, 째 ...), as in any Korean text.
KOREAN = (
    "대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다. "
    "도서관은 평일 오전 아홉 시부터 오후 여섯 시까지 문을 엽니다. "
    "서버 점검은 매월 둘째 주 토요일 새벽에 진행되었습니다. "
    "직원은 입사 후 일 년이 지나면 열다섯 일의 연차 휴가를 받는다. "
    "소유권 규칙은 러스트가 메모리를 안전하게 관리하는 방법을 설명한다. "
    "계약서에 서명하기 전에 보험 약관의 면책 조항을 꼼꼼히 읽어야 했다. "
    "야구 경기는 아홉 회로 이루어지며 비기면 연장전을 치른다. "
    "한글은 세종대왕이 백성을 위하여 만든 문자로 널리 쓰이고 있다. "
)


def _hangul_only(size: int) -> str:
    """``size`` characters of Korean with every space, digit and mark removed: one line that
    Kiwi still cuts into sentences, but whose words run far past the tokenizer's limit."""
    base = re.sub(r"[^가-힣]", "", KOREAN)
    return (base * (size // len(base) + 1))[:size]


def _random_syllables(size: int) -> str:
    """``size`` random Hangul syllables: no sentence for Kiwi to find, one word of the whole
    line (the shape of the issue's report)."""
    rng = random.Random(24)
    return "".join(chr(0xAC00 + rng.randrange(11172)) for _ in range(size))


def _chunks(embedder, text: str, overlap: int = 0) -> list[Chunk]:
    return Chunker(embedder.passage_budget, ChunkingOptions(overlap_tokens=overlap)).chunk([Block("text", text)])


def _max_chars(embedder) -> int:
    """The documented bound: 8 characters per token of the model's limit."""
    return 8 * embedder.passage_budget.max_input_tokens


def _assert_bounded_and_whole(embedder, chunks: list[Chunk], text: str) -> None:
    """Every chunk under both bounds, and every character of ``text`` in a chunk, in order."""
    budget = embedder.passage_budget
    assert max(len(c.text) for c in chunks) <= _max_chars(embedder)
    assert max(len(c.input_ids) for c in chunks) <= budget.max_input_tokens
    assert all(budget.fits(c.header, c.text) for c in chunks)
    assert "".join("".join(c.text.split()) for c in chunks) == "".join(text.split())


def _unknown_spans(embedder, chunk: Chunk) -> list[int]:
    """The number of characters each unknown token of the chunk's text stands for."""
    tokenizer = embedder.passage_budget.tokenizer
    encoded = tokenizer(chunk.text, add_special_tokens=False, return_offsets_mapping=True)
    return [b - a for token, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"])
            if token == tokenizer.unk_token_id]


def _unknown_share(chunk: Chunk, unknown: int) -> float:
    return chunk.input_ids.count(unknown) / len(chunk.input_ids)


def test_the_bound_is_eight_characters_per_token_of_the_model(minilm, tiny_xlmr):
    assert minilm.passage_budget.max_chars == 8 * 256 == 2048
    assert tiny_xlmr.passage_budget.max_chars == 8 * 512
    assert minilm.passage_budget.word_limit == 100  # WordPiece's max_input_chars_per_word
    assert tiny_xlmr.passage_budget.word_limit is None  # SentencePiece reads a word of any length


def test_200_kb_of_one_unspaced_word_is_cut_into_bounded_chunks(minilm):
    text = _random_syllables(66_000)  # 200 KB of UTF-8
    chunks = _chunks(minilm, text)
    assert len(chunks) > 100  # not 1: the token limit now sees the text
    _assert_bounded_and_whole(minilm, chunks, text)
    # A random syllable uses a jamo MiniLM lacks 87% of the time: that syllable is one [UNK] of
    # its own, and the rest of the word is read, not swallowed.
    assert max(span for c in chunks for span in _unknown_spans(minilm, c)) == 1
    with_overlap = _chunks(minilm, text, overlap=48)
    assert max(len(c.text) for c in with_overlap) <= _max_chars(minilm)
    assert max(len(c.input_ids) for c in with_overlap) <= minilm.passage_budget.max_input_tokens


def test_200_kb_of_korean_without_spaces_gets_real_tokens(minilm):
    text = _hangul_only(66_000)
    chunks = _chunks(minilm, text)
    _assert_bounded_and_whole(minilm, chunks, text)
    unknown = minilm.passage_budget.tokenizer.unk_token_id
    assert max(_unknown_share(c, unknown) for c in chunks) < 0.25  # before: 14 chunks, up to 68% [UNK]
    # No unknown token stands for a word the tokenizer found too long.
    assert max(span for c in chunks for span in _unknown_spans(minilm, c)) < 38


def test_one_giant_word_inside_normal_text(minilm):
    word = ("가나다라마바사아자차카타파하" * 1500)[:20_000]  # every syllable one MiniLM reads
    before, after = KOREAN * 3, KOREAN * 2
    text = f"{before}{word} {after}"
    chunks = _chunks(minilm, text)
    _assert_bounded_and_whole(minilm, chunks, text)
    unknown = minilm.passage_budget.tokenizer.unk_token_id
    assert max(_unknown_share(c, unknown) for c in chunks) < 0.25
    word_chunks = [c for c in chunks if "가나다라" in c.text]
    assert len(word_chunks) > 40  # 20,000 syllables of real tokens: ~50,000 tokens
    assert all(_unknown_share(c, unknown) == 0 for c in word_chunks if "다." not in c.text)
    # The normal sentences around the word are untouched: each lands whole in a chunk.
    for sentence in KOREAN.split(". ")[:-1]:
        assert any(f"{sentence}." in c.text for c in chunks), sentence


def test_the_sentencepiece_tokenizer_is_bounded_by_tokens_and_characters(tiny_xlmr):
    """KoE5 and multilingual-e5 tokenize with SentencePiece (Unigram), which has no per-word
    limit, so nothing is cut as a long word. But it fuses a run of characters missing from its
    vocabulary into one ``<unk>`` (the tiny model's 400 pieces lack most random syllables; KoE5's
    250k lack the rarest): there the character bound is what cuts the line."""
    text = _random_syllables(66_000)
    chunks = _chunks(tiny_xlmr, text)
    assert len(chunks) >= len(text) // _max_chars(tiny_xlmr)
    _assert_bounded_and_whole(tiny_xlmr, chunks, text)
    korean = _hangul_only(66_000)  # syllables it knows: the token limit cuts, far below the bound
    chunks = _chunks(tiny_xlmr, korean)
    _assert_bounded_and_whole(tiny_xlmr, chunks, korean)
    assert max(len(c.text) for c in chunks) < _max_chars(tiny_xlmr) // 2


def test_characters_the_tokenizer_does_not_count_are_bounded_by_characters(minilm):
    """Zero-width spaces (which BERT's normalizer drops) and runs of padding inside a line cost
    no token: only the character bound keeps such a chunk small."""
    text = ("이름" + "\u200b" * 3000 + "홍길동 | 부서" + " " * 3000 + "총무과 ") * 5
    chunks = _chunks(minilm, text)
    _assert_bounded_and_whole(minilm, chunks, text)


@pytest.mark.slow
def test_korag_ingest_stores_bounded_chunks_of_a_long_unspaced_line(tmp_path):
    text = _random_syllables(10_000) + _hangul_only(10_000)  # 60 KB on one line
    (tmp_path / "long.txt").write_text(text, encoding="utf-8")
    env = korag_env({"KORAG_EMBEDDING_MODEL": offline_model_path(), "KORAG_DATA_DIR": str(tmp_path / "data"),
                     "KORAG_CHUNK_OVERLAP_TOKENS": "0"})
    done = korag_cli(["ingest", "long.txt", "--json"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "indexed" and result["chunks"] > 50  # before: 5 chunks of up to 10,000 characters
    listed = korag_cli(["chunks", "--doc-id", result["doc_id"], "--json"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    chunks = sorted((json.loads(line) for line in listed.stdout.splitlines()),
                    key=lambda c: c["metadata"]["chunk_index"])
    assert len(chunks) == result["chunks"]
    assert max(len(c["text"]) for c in chunks) <= 2048  # MiniLM: 8 characters per token of 256
    assert max(c["metadata"]["token_count"] for c in chunks) <= 256
    assert "".join("".join(c["text"].split()) for c in chunks) == text
