"""Token arithmetic with the embedding model's own tokenizer.

The budget for a chunk is the model's max_seq_length minus the special tokens the tokenizer
adds, minus the passage prefix, minus any header embedded with the chunk. Counts here are exact:
they come from tokenizing the very string the model will see.

Tokens alone do not bound a chunk's length: WordPiece (the offline MiniLM) turns any word longer
than its ``max_input_chars_per_word`` into one ``[UNK]``, and whitespace or control characters
cost no token at all. So a chunk has a character bound too (:data:`CHARS_PER_TOKEN`), and the
chunker cuts such long words into pieces the tokenizer reads (:meth:`TokenBudget.pieces`).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from ingest.text_windows import windows

BATCH = 512  # texts per tokenizer call when counting many: bounds the memory of one call
# Characters a chunk may hold per token of the model's limit. Generous: English prose runs about
# 4.5 characters per token, Korean 0.4 (MiniLM's jamo) to 2.5 (KoE5); the longest chunk of the
# shared samples and 300 corpus passages with MiniLM is 681 characters for 256 tokens (2.7 per
# token). So only text the token count cannot see (a word that became one [UNK], runs of
# whitespace or control characters) is ever cut by it: 2,048 characters with MiniLM, 4,096 with KoE5.
CHARS_PER_TOKEN = 8
# BERT's normalizer (lowercase, NFD, accents stripped) turns one character into at most four, so
# a run of non-space characters shorter than a quarter of the per-word limit cannot be too long.
_MAX_EXPANSION = 4


class Piece(NamedTuple):
    """A piece of a text: ``text[start:end]`` of the original, stripped, as ``text`` (which has a
    space added at each cut inside a word the tokenizer could not read whole)."""

    start: int
    end: int
    text: str


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

    @property
    def max_chars(self) -> int:
        """The most characters a chunk's text may hold: :data:`CHARS_PER_TOKEN` per token of the
        model's limit."""
        return CHARS_PER_TOKEN * self.max_input_tokens

    def split(self, text: str, max_tokens: int) -> list[str]:
        """Cut ``text`` into pieces of at most ``max_tokens`` tokens at tokenizer offsets.

        Pieces are slices of the original string (no detokenisation), so no character is lost
        or altered; whitespace at a cut goes with the earlier piece and is then stripped. Long
        text is tokenized in windows of :meth:`window_chars` characters (cut at whitespace where
        there is one), so the work is linear in the length and no call sees an enormous string.
        """
        return [piece.text for piece in self.pieces(text, max_tokens)]

    def pieces(self, text: str, max_tokens: int, max_chars: int | None = None,
               break_long_words: bool = False) -> list[Piece]:
        """:meth:`split`'s pieces with where each lies in ``text``; each also at most ``max_chars``
        characters, given one.

        With ``break_long_words``, a word the tokenizer would read as one unknown token because it
        is too long (:meth:`long_words`) is cut where the tokenizer can read each part: parts of
        at most its per-word limit, and each character it cannot read on its own. A space marks
        each cut in the piece's text, so the model sees the words it counted, and no ``[UNK]``
        stands for more than one character of such a word. (Only for text that is all kept: the
        section header and a query keep just the first piece.)
        """
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        out: list[Piece] = []
        for start, end in windows(text, self.window_chars(max_tokens)):
            window = text[start:end]
            cuts = self._long_word_cuts(window) if break_long_words else []
            marks = [cut + k for k, cut in enumerate(cuts)]  # where each added space lies in `spaced`
            spaced = "".join(window[a:b] + " " for a, b in zip([0, *cuts], cuts)) + window[cuts[-1] if cuts else 0:]
            for a, b in self._split_window(spaced, max_tokens):
                for a, b in self._within_chars(spaced, a, b, max_tokens, max_chars):
                    out.append(Piece(start + a - bisect_left(marks, a), start + b - bisect_left(marks, b), spaced[a:b]))
        return out

    def _within_chars(self, text: str, start: int, end: int, max_tokens: int,
                      max_chars: int | None) -> list[tuple[int, int]]:
        """``text[start:end]`` (one piece within ``max_tokens``) cut into stripped spans of at
        most ``max_chars`` characters, at whitespace where there is some. Only pieces over the
        bound are cut, so text the token count already bounds is split exactly as before."""
        if max_chars is None or end - start <= max_chars:
            return [(start, end)]
        spans = []
        for low, high in windows(text[start:end], max_chars):
            a, b = _stripped(text, start + low, start + high)
            if a == b:
                continue
            if self.count(text[a:b]) <= max_tokens:
                spans.append((a, b))
            else:  # cut inside a word: the tail's first token can differ from the one in context
                spans.extend((a + x, a + y) for x, y in self._split_window(text[a:b], max_tokens))
        return spans

    @staticmethod
    def window_chars(max_tokens: int) -> int:
        """Characters tokenized at a time when splitting into pieces of ``max_tokens``."""
        return max(4096, 16 * max_tokens)

    def _split_window(self, text: str, max_tokens: int) -> list[tuple[int, int]]:
        """``(start, end)`` of each stripped piece of ``text``."""
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = [span for span in encoding["offset_mapping"] if span[1] > span[0]]
        if len(offsets) <= max_tokens:
            return [_stripped(text, 0, len(text))] if text.strip() else []
        pieces: list[tuple[int, int]] = []
        start_token = 0
        window = max_tokens
        while start_token < len(offsets):
            end_token = min(start_token + window, len(offsets))
            end_token = _word_start_before(text, offsets, start_token, end_token)
            char_start = offsets[start_token][0] if start_token else 0
            char_end = offsets[end_token][0] if end_token < len(offsets) else len(text)
            span = _stripped(text, char_start, char_end)
            piece = text[span[0]:span[1]]
            # A slice can tokenize longer than its tokens did in context (a word-start marker):
            # shrink the window by the excess, not one token at a time.
            excess = self.count(piece) - max_tokens if window > 1 else 0
            if excess > 0:
                window = max(1, min(window, end_token - start_token) - excess)
                continue
            if piece:
                pieces.append(span)
            start_token = end_token
            window = max_tokens
        return pieces

    # -- words the tokenizer cannot read whole -----------------------------------------------------
    @cached_property
    def word_limit(self) -> int | None:
        """WordPiece's ``max_input_chars_per_word`` (in normalized characters: MiniLM's 100 are
        about 38 Hangul syllables, which NFD spells in jamo): a longer word becomes one unknown
        token. None for tokenizers without one (SentencePiece: KoE5, multilingual-e5)."""
        model = getattr(getattr(self.tokenizer, "backend_tokenizer", None), "model", None)
        limit = getattr(model, "max_input_chars_per_word", None)
        return int(limit) if isinstance(limit, int) and limit > 0 else None

    def long_words(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` of each word of ``text`` that the tokenizer reads as one unknown token
        because it is longer than :attr:`word_limit`. Only runs of non-space characters long
        enough to qualify are tokenized (``text`` is at most one tokenizer window)."""
        limit = self.word_limit
        if limit is None:
            return []
        runs = [(m.start(), m.group()) for m in self._run_pattern.finditer(text)]
        if not runs:
            return []
        encoded = self.tokenizer([run for _, run in runs], add_special_tokens=False, return_offsets_mapping=True,
                                 verbose=False)
        unknown = self.tokenizer.unk_token_id
        return [(at + a, at + b)
                for (at, run), ids, offsets in zip(runs, encoded["input_ids"], encoded["offset_mapping"])
                for token, (a, b) in zip(ids, offsets)
                if token == unknown and b - a > 1 and self._normalized_len(run[a:b]) > limit]

    @cached_property
    def _run_pattern(self) -> re.Pattern:
        return re.compile(r"[^ \t\n\r]{%d,}" % ((self.word_limit or 0) // _MAX_EXPANSION + 1))

    @cached_property
    def _normalizer(self) -> Any:
        return getattr(getattr(self.tokenizer, "backend_tokenizer", None), "normalizer", None)

    def _normalized_len(self, text: str) -> int:
        return len(self._normalizer.normalize_str(text)) if self._normalizer is not None else len(text)

    def _long_word_cuts(self, text: str) -> list[int]:
        """Where to cut ``text`` so no word in it is too long for the tokenizer, in order."""
        return [start + cut for start, end in self.long_words(text) for cut in self._word_cuts(text[start:end])]

    def _word_cuts(self, word: str) -> list[int]:
        """Cuts in a too-long word: around each character the tokenizer cannot read (it becomes
        one ``[UNK]`` of its own instead of taking the word with it), and between them every
        :attr:`word_limit` normalized characters."""
        unreadable = self._unreadable(word)
        cuts: list[int] = []
        start = 0
        for i, char in enumerate(word):
            if char in unreadable:
                cuts.extend(self._limit_cuts(word, start, i))
                cuts.extend((i, i + 1))
                start = i + 1
        cuts.extend(self._limit_cuts(word, start, len(word)))
        return sorted({cut for cut in cuts if 0 < cut < len(word)})

    def _limit_cuts(self, word: str, start: int, end: int) -> list[int]:
        """Cuts in ``word[start:end]`` leaving parts of at most :attr:`word_limit` normalized
        characters."""
        limit = self.word_limit if self.word_limit is not None else end - start
        cuts, at = [], start
        while at < end:
            stop = min(end, at + limit)
            while stop - at > 1 and (length := self._normalized_len(word[at:stop])) > limit:
                stop = at + max(1, (stop - at) * limit // length)  # shrink by the expansion seen
            cuts.append(stop)
            at = stop
        return cuts[:-1]

    def _unreadable(self, word: str) -> set[str]:
        """The characters of ``word`` the tokenizer reads as an unknown token on their own
        (MiniLM lacks 32 of the 67 jamo: 7% of Korean syllables), remembered per budget."""
        known = self._char_readable
        new = [char for char in dict.fromkeys(word) if char not in known]
        for start in range(0, len(new), BATCH):
            batch = new[start:start + BATCH]
            encoded = self.tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
            known.update((char, self.tokenizer.unk_token_id not in ids) for char, ids in zip(batch, encoded))
        return {char for char in set(word) if not known[char]}

    @cached_property
    def _char_readable(self) -> dict[str, bool]:
        return {}


def _stripped(text: str, start: int, end: int) -> tuple[int, int]:
    """``(start, end)`` of ``text[start:end].strip()`` in ``text``."""
    piece = text[start:end]
    first = start + len(piece) - len(piece.lstrip())
    return first, first + len(piece.strip())


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
