"""Cut a document's blocks into chunks that always fit the embedding model.

Rules, in order of precedence:
1. No chunk's embedded input (prefix + section header + body) exceeds the model's limit;
   checked with the model's own tokenizer on the exact string.
2. A title opens a new section; a chunk does not run across a section boundary unless what
   it holds so far is too small to stand alone (a heading-only or one-line section).
3. Text breaks at Korean sentence boundaries (Kiwi); a table stays whole when it fits,
   otherwise it breaks between rows.
4. A single sentence or row longer than the budget is cut at tokenizer offsets.
5. The trailing sentences of a chunk, up to ``overlap_tokens``, open the next chunk of the
   same section.

The work is linear in the text: Kiwi and the tokenizer only ever see bounded windows of it
(:data:`ingest.sentences.KIWI_WINDOW`, :meth:`TokenBudget.window_chars`), cut at whitespace
where there is some, so a 50 MB line costs fifty times a 1 MB one, in time and in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ingest.parsing.blocks import Block
from ingest.sentences import split_sentences
from ingest.tokens import TokenBudget
from korag.types import Chunk

_MAX_HEADER_SHARE = 4  # a section header may take at most 1/4 of the body budget


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    page: int | None
    block: int  # index of the block it came from: units of one block join with " "
    kind: str


@dataclass(frozen=True)
class ChunkingOptions:
    overlap_tokens: int = 48
    embed_header: bool = True
    min_section_tokens: int = 32  # a chunk smaller than this may continue into the next section

    def __post_init__(self) -> None:
        if self.overlap_tokens < 0:
            raise ValueError("overlap_tokens must be >= 0")


class Chunker:
    def __init__(self, budget: TokenBudget, options: ChunkingOptions | None = None) -> None:
        self.budget = budget
        self.options = options if options is not None else ChunkingOptions()
        bare = budget.body_budget(None)
        # The smallest body budget any header can leave: every unit must fit under every header.
        self._max_unit = bare - bare // _MAX_HEADER_SHARE - 2

    # -- public -----------------------------------------------------------------------------
    def chunk(self, blocks: Sequence[Block]) -> list[Chunk]:
        chunks: list[Chunk] = []
        for header, units in self._sections(blocks):
            self._pack(header, units, chunks)
        return chunks

    # -- sections -----------------------------------------------------------------------------
    def _sections(self, blocks: Sequence[Block]):
        """Yield ``(header, units)`` per section. No title is dropped: a heading with no body
        of its own, or one that follows a section too small to stand alone, stays as text."""
        trail: list[tuple[int, str]] = []  # (depth, text) of the open headings
        header: str | None = None
        units: list[_Unit] = []
        bare_title: Block | None = None  # the last heading, while no body has followed it
        for i, block in enumerate(blocks):
            if block.kind != "title":
                units.extend(self._units(block, i))
                bare_title = None
                continue
            if units and sum(u.tokens for u in units) >= self.options.min_section_tokens:
                yield header, units
                units = []
            if units or (bare_title is not None and block.depth <= bare_title.depth):
                units.extend(self._units(block, i))
                continue
            trail = [(d, t) for d, t in trail if d < block.depth] + [(block.depth, block.text)]
            header = " > ".join(t for _, t in trail)
            if self.options.embed_header and self._embedded_header(header) != header:
                units.extend(self._units(block, i))  # too long for a header: keep it as text too
            bare_title = block
        if units:
            yield header, units
        elif bare_title is not None:
            yield None, self._units(Block("text", " > ".join(t for _, t in trail), bare_title.page_number), -1)

    def _embedded_header(self, section: str | None) -> str | None:
        """The part of the section path embedded in front of each chunk (None: nothing)."""
        if not self.options.embed_header or not section:
            return None
        limit = max(1, self.budget.body_budget(None) // _MAX_HEADER_SHARE)
        # The first piece lies within the first window: never tokenize the rest of a huge title.
        pieces = self.budget.split(section[: self.budget.window_chars(limit)], limit)
        return pieces[0] if pieces else None

    def _units(self, block: Block, index: int) -> list[_Unit]:
        if block.kind == "table":
            parts = [block.text] if self._fits_unit(block.text) else list(block.rows)
        else:
            parts = split_sentences(block.text)
        units = []
        for part in parts:
            for piece in self._cut(part):
                units.append(_Unit(piece, self.budget.count(piece), block.page_number, index, block.kind))
        return units

    def _cut(self, text: str) -> list[str]:
        return [text] if self._fits_unit(text) else self.budget.split(text, self._max_unit)

    def _fits_unit(self, text: str) -> bool:
        """``text`` fits one unit; text longer than one tokenizer window never counts as fitting
        (it is split instead), so no count tokenizes an unbounded string."""
        return len(text) <= self.budget.window_chars(self._max_unit) and self.budget.count(text) <= self._max_unit

    # -- packing --------------------------------------------------------------------------------
    def _pack(self, section: str | None, units: list[_Unit], out: list[Chunk]) -> None:
        header = self._embedded_header(section)
        limit = self.budget.body_budget(header)
        current: list[_Unit] = []
        fresh = 0  # units in `current` not carried over as overlap
        for unit in units:
            if current and not self._room_for(header, limit, current, unit):
                if fresh:
                    out.append(self._make(section, header, current, len(out)))
                current = self._overlap(current) if fresh else []
                fresh = 0
                while current and not self._fits(header, current + [unit]):
                    current.pop(0)
            current.append(unit)
            fresh += 1
        if fresh:
            out.append(self._make(section, header, current, len(out)))

    def _room_for(self, header: str | None, limit: int, current: list[_Unit], unit: _Unit) -> bool:
        # Token counts of joined pieces are nearly additive: tokenize the joined text only
        # when the sum comes close to the limit.
        estimate = sum(u.tokens for u in current) + unit.tokens + len(current)
        if estimate > limit:
            return False
        return estimate <= limit - 8 or self._fits(header, current + [unit])

    def _fits(self, header: str | None, units: list[_Unit]) -> bool:
        return self.budget.fits(header, _join(units))

    def _overlap(self, units: list[_Unit]) -> list[_Unit]:
        kept: list[_Unit] = []
        total = 0
        for unit in reversed(units):
            if unit.kind == "table" or total + unit.tokens > self.options.overlap_tokens:
                break
            kept.insert(0, unit)
            total += unit.tokens
        return kept

    def _make(self, section: str | None, header: str | None, units: list[_Unit], index: int) -> Chunk:
        if not self._fits(header, units):  # the estimate above was wrong: check, never assume
            raise AssertionError(f"chunk {index} exceeds the model's limit; this is a korag bug")
        pages = [u.page for u in units if u.page is not None]
        return Chunk(
            text=_join(units),
            index=index,
            section=section,
            header=header,
            page_number=pages[0] if pages else None,
            element_types=tuple(dict.fromkeys(u.kind for u in units)),
        )


def _join(units: list[_Unit]) -> str:
    parts: list[str] = []
    for prev, unit in zip([None, *units], units):
        if prev is not None:
            parts.append(" " if prev.block == unit.block and unit.kind != "table" else "\n")
        parts.append(unit.text)
    return "".join(parts)
