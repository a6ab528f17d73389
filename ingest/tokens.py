"""Token arithmetic with the embedding model's own tokenizer.

The budget for a chunk is the model's max_seq_length minus the special tokens the tokenizer
adds, minus the passage prefix, minus any header embedded with the chunk. Counts here are exact:
they come from tokenizing the very string the model will see.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ingest.text_windows import windows

BATCH = 512  # texts per tokenizer call when counting many: bounds the memory of one call


def compose_input(prefix: str, header: str | None, body: str) -> str:
    """The exact string embedded for a chunk. The chunker budgets for it, the embedder embeds it."""
    return f"{prefix}{header}\n{body}" if header else f"{prefix}{body}"


@dataclass(frozen=True)
class TokenBudget:
    tokenizer: Any  # a Hugging Face tokenizer with offsets (a "fast" tokenizer)
    max_input_tokens: int  # the model's max_seq_length, special tokens included
    prefix: str

    def __post_init__(self) -> None:
        if self.max_input_tokens <= self.overhead(None) + 8:
            raise ValueError(f"max_input_tokens={self.max_input_tokens} leaves no room for text")

    def count(self, text: str) -> int:
        """Tokens of ``text`` alone, without special tokens."""
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def counts(self, texts: list[str]) -> list[int]:
        """:meth:`count` of each text, in one tokenizer call per :data:`BATCH` texts (the fast
        tokenizer batches natively)."""
        return self._batched(texts, False)

    def input_counts(self, texts: list[str]) -> list[int]:
        """:meth:`input_tokens` of each composed input, batched as :meth:`counts`."""
        return self._batched(texts, True)

    def input_ids(self, texts: list[str]) -> list[list[int]]:
        """The token ids the model sees for each composed input (special tokens included), in one
        tokenizer call per :data:`BATCH` texts."""
        return self._ids(texts, True)

    def _batched(self, texts: list[str], special: bool) -> list[int]:
        return [len(ids) for ids in self._ids(texts, special)]

    def _ids(self, texts: list[str], special: bool) -> list[list[int]]:
        out: list[list[int]] = []
        for start in range(0, len(texts), BATCH):
            encoded = self.tokenizer(texts[start:start + BATCH], add_special_tokens=special, verbose=False)
            out.extend(encoded["input_ids"])
        return out

    def input_tokens(self, text: str) -> int:
        """Tokens the model sees for an already-composed input, special tokens included."""
        return len(self.tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])

    def overhead(self, header: str | None) -> int:
        """Tokens spent on everything but the body: specials, prefix, header and its newline."""
        return self.input_tokens(compose_input(self.prefix, header, "x")) - self._x_tokens

    @cached_property
    def _x_tokens(self) -> int:
        return self.count("x")

    def body_budget(self, header: str | None) -> int:
        return self.max_input_tokens - self.overhead(header)

    def fits(self, header: str | None, body: str) -> bool:
        return self.input_tokens(compose_input(self.prefix, header, body)) <= self.max_input_tokens

    def split(self, text: str, max_tokens: int) -> list[str]:
        """Cut ``text`` into pieces of at most ``max_tokens`` tokens at tokenizer offsets.

        Pieces are slices of the original string (no detokenisation), so no character is lost
        or altered; whitespace at a cut goes with the earlier piece and is then stripped. Long
        text is tokenized in windows of :meth:`window_chars` characters (cut at whitespace where
        there is one), so the work is linear in the length and no call sees an enormous string.
        """
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        pieces: list[str] = []
        for start, end in windows(text, self.window_chars(max_tokens)):
            pieces.extend(self._split_window(text[start:end], max_tokens))
        return pieces

    @staticmethod
    def window_chars(max_tokens: int) -> int:
        """Characters tokenized at a time when splitting into pieces of ``max_tokens``."""
        return max(4096, 16 * max_tokens)

    def _split_window(self, text: str, max_tokens: int) -> list[str]:
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = [span for span in encoding["offset_mapping"] if span[1] > span[0]]
        if len(offsets) <= max_tokens:
            return [text.strip()] if text.strip() else []
        pieces: list[str] = []
        start_token = 0
        window = max_tokens
        while start_token < len(offsets):
            end_token = min(start_token + window, len(offsets))
            end_token = _word_start_before(text, offsets, start_token, end_token)
            char_start = offsets[start_token][0] if start_token else 0
            char_end = offsets[end_token][0] if end_token < len(offsets) else len(text)
            piece = text[char_start:char_end].strip()
            # A slice can tokenize longer than its tokens did in context (a word-start marker):
            # shrink the window by the excess, not one token at a time.
            excess = self.count(piece) - max_tokens if window > 1 else 0
            if excess > 0:
                window = max(1, min(window, end_token - start_token) - excess)
                continue
            if piece:
                pieces.append(piece)
            start_token = end_token
            window = max_tokens
        return pieces


def _word_start_before(text: str, offsets: list, start: int, end: int) -> int:
    """Move a cut back to the nearest token that starts a word (follows whitespace), if one lies
    in the last fifth of the window, so pieces end between words, not inside one."""
    if end >= len(offsets):
        return end
    floor = start + max(1, (end - start) * 4 // 5)
    for candidate in range(end, floor - 1, -1):
        char = offsets[candidate][0]
        if char > 0 and text[char - 1].isspace() and offsets[candidate - 1][0] != char:
            return candidate
    return end
