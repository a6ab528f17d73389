"""Cut a document's blocks into chunks that always fit the embedding model.

Rules, in order of precedence:
1. No chunk's embedded input (prefix + section header + body) exceeds the model's limit;
   checked with the model's own tokenizer on the exact string. No chunk's text exceeds
   :attr:`TokenBudget.max_chars` characters either (8 per token of the limit), for what the
   token count cannot see: whitespace, and words the tokenizer reads as one ``[UNK]``.
2. A title opens a new section; a chunk does not run across a section boundary unless what
   it holds so far is too small to stand alone (a heading-only or one-line section).
3. Text breaks at Korean sentence boundaries (Kiwi); a table stays whole when it fits,
   otherwise it breaks between rows.
4. A single sentence or row longer than the budget is cut at tokenizer offsets. A word too
   long for the tokenizer to read (WordPiece: over ``max_input_chars_per_word``) is cut into
   parts it reads, with a space at each cut (:meth:`TokenBudget.pieces`).
5. The trailing sentences of a chunk, up to ``overlap_tokens``, open the next chunk of the
   same section.
6. Consecutive chunks of one section are grouped into runs that together fit ``section_budget``
   (the model's own limit, when the chunks are cut smaller by ``KORAG_CHUNK_MAX_TOKENS``): each
   chunk records the first chunk of its run (``Chunk.parent``), the unit a section-context search
   returns (:mod:`retrieval.sections`).

The work is linear in the text: Kiwi and the tokenizer only ever see bounded windows of it
(:data:`ingest.sentences.KIWI_WINDOW`, :meth:`TokenBudget.window_chars`), cut at whitespace
where there is some, so a 50 MB line costs fifty times a 1 MB one, in time and in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from ingest.parsing.blocks import Block
from ingest.sentences import Analysis, Morph, analyse
from ingest.tokens import TokenBudget, compose_input
from korag.types import Chunk

_MAX_HEADER_SHARE = 4  # a section header may take at most 1/4 of the body budget
_GROUP_CHARS = 65536  # blocks analysed and counted together (one tokenizer call), at most this much text
Terms = Callable[[Sequence[Morph]], list[str]]  # morphemes -> the keyword terms a chunk keeps


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    page: int | None
    block: int  # index of the block it came from: units of one block join with " "
    kind: str
    terms: tuple[str, ...] = ()  # keyword terms of the text (from Kiwi's morphemes), when asked for
    ocr_confidence: float | None = None  # the block's, when it was read by OCR


@dataclass(frozen=True)
class ChunkingOptions:
    overlap_tokens: int = 48
    embed_header: bool = True
    min_section_tokens: int = 32  # a chunk smaller than this may continue into the next section

    def __post_init__(self) -> None:
        if self.overlap_tokens < 0:
            raise ValueError("overlap_tokens must be >= 0")


class Chunker:
    def __init__(self, budget: TokenBudget, options: ChunkingOptions | None = None,
                 section_budget: TokenBudget | None = None) -> None:
        self.budget = budget
        self.options = options if options is not None else ChunkingOptions()
        # the budget of a section run (rule 6); None or the chunks' own: every chunk is its own run
        self.section_budget = section_budget if section_budget is not None else budget
        bare = budget.body_budget(None)
        # The smallest body budget any header can leave: every unit must fit under every header.
        self._max_unit = bare - bare // _MAX_HEADER_SHARE - 2
        self._max_chars = budget.max_chars
        # Per section header, computed once (a header repeats in every chunk of its section).
        self._embedded_header = lru_cache(maxsize=1024)(self._header_of)
        self._body_budget = lru_cache(maxsize=1024)(budget.body_budget)
        self._terms: Terms | None = None
        self._header_repeat = 1

    # -- public -----------------------------------------------------------------------------
    def chunk(self, blocks: Sequence[Block]) -> list[Chunk]:
        return [chunk for chunk, _ in self._chunk(blocks, None)]

    def chunk_with_terms(self, blocks: Sequence[Block], terms: Terms,
                         header_repeat: int = 1) -> list[tuple[Chunk, list[str]]]:
        """The chunks, each with the keyword terms of what is embedded for it (header and text),
        taken by ``terms`` from the same Kiwi analysis that found the sentence boundaries: no
        second pass over the text for the keyword channel. The header's terms come
        ``header_repeat`` times (a section title weighs more than a word of body text:
        :attr:`ingest.sparse.SparseEncoder.header_repeat`)."""
        self._header_repeat = header_repeat
        return self._chunk(blocks, terms)

    def _chunk(self, blocks: Sequence[Block], terms: Terms | None) -> list[tuple[Chunk, list[str]]]:
        self._terms = terms
        out: list[tuple[Chunk, list[str]]] = []
        for header, header_terms, units in self._sections(blocks):
            self._pack(header, header_terms, units, out)
        return [(replace(chunk, input_ids=tuple(ids)), terms)
                for (chunk, terms), ids in zip(out, self._check([chunk for chunk, _ in out]))]

    # -- sections -----------------------------------------------------------------------------
    def _sections(self, blocks: Sequence[Block]):
        """Yield ``(header, header terms, units)`` per section. No title is dropped: a heading
        with no body of its own, or one that follows a section too small to stand alone, stays
        as text."""
        trail: list[tuple[int, str, tuple[str, ...]]] = []  # (depth, text, terms) of the open headings
        header: str | None = None
        header_terms: tuple[str, ...] = ()
        units: list[_Unit] = []
        bare_title: Block | None = None  # the last heading, while no body has followed it
        for i, block, block_units in self._units_of(blocks):
            if block.kind != "title":
                units.extend(block_units)
                bare_title = None
                continue
            if units and sum(u.tokens for u in units) >= self.options.min_section_tokens:
                yield header, header_terms, units
                units = []
            if units or (bare_title is not None and block.depth <= bare_title.depth):
                units.extend(block_units)
                continue
            title_terms = tuple(term for unit in block_units for term in unit.terms)
            trail = [entry for entry in trail if entry[0] < block.depth] + [(block.depth, block.text, title_terms)]
            header = " > ".join(text for _, text, _ in trail)
            embedded = self._embedded_header(header)
            if embedded == header:  # the titles' own terms: no analysis of the header
                header_terms = tuple(term for _, _, terms in trail for term in terms)
            else:
                header_terms = self._terms_of(embedded) if embedded else ()
            if self.options.embed_header and embedded != header:
                units.extend(block_units)  # too long for a header: keep it as text too
            bare_title = block
        if units:
            yield header, header_terms, units
        elif bare_title is not None:
            lone = Block("text", " > ".join(text for _, text, _ in trail), bare_title.page_number)
            yield None, (), next(self._units_of([lone]))[2]

    def _terms_of(self, text: str) -> tuple[str, ...]:
        return tuple(self._terms(analyse(text).morphs)) if self._terms is not None else ()

    def _header_of(self, section: str | None) -> str | None:
        """The part of the section path embedded in front of each chunk (None: nothing)."""
        if not self.options.embed_header or not section:
            return None
        limit = max(1, self._body_budget(None) // _MAX_HEADER_SHARE)
        # The first piece lies within the first window: never tokenize the rest of a huge title.
        pieces = self.budget.split(section[: self.budget.window_chars(limit)], limit)
        return pieces[0] if pieces else None

    def _units_of(self, blocks: Sequence[Block]) -> Iterator[tuple[int, Block, list[_Unit]]]:
        """``(index, block, units)`` for every block, in order. Blocks are taken in groups of
        up to :data:`_GROUP_CHARS` characters: one Kiwi pass per block, one tokenizer call for
        the sentences of the whole group (one per document for most documents)."""
        group: list[tuple[int, Block]] = []
        size = 0
        for i, block in enumerate(blocks):
            group.append((i, block))
            size += len(block.text)
            if size >= _GROUP_CHARS:
                yield from self._group_units(group)
                group, size = [], 0
        if group:
            yield from self._group_units(group)

    def _group_units(self, group: list[tuple[int, Block]]) -> Iterator[tuple[int, Block, list[_Unit]]]:
        planned = []  # per block: its analysis and its parts, (start in the block's text, text)
        for _, block in group:
            analysis = analyse(block.text)
            if block.kind == "table":
                parts = [(0, block.text)], _rows(block)  # whole, or by rows when it does not fit
            else:
                parts = [(a, block.text[a:b]) for a, b in analysis.sentences], None
            planned.append((analysis, parts))
        texts = [text for _, (parts, rows) in planned for _, text in [*parts, *(rows or ())]]
        counts = iter(self._counts(texts))
        for (i, block), (analysis, (parts, rows)) in zip(group, planned):
            counted = [(start, text, next(counts)) for start, text in parts]
            counted_rows = [(start, text, next(counts)) for start, text in rows or ()]
            if rows is not None and (counted[0][2] > self._max_unit or len(block.text) > self._max_chars):
                counted = counted_rows
            yield i, block, self._block_units(block, i, analysis, counted)

    def _block_units(self, block: Block, index: int, analysis: Analysis,
                     counted: list[tuple[int, str, int]]) -> list[_Unit]:
        def terms(start: int, end: int, text: str) -> tuple[str, ...]:
            if self._terms is None:
                return ()
            if start < 0:  # not located in the block's text: analysed on its own
                return self._terms_of(text)
            return tuple(self._terms(analysis.morphs_in(start, end)))

        units = []
        for start, part, count in counted:
            if count <= self._max_unit and len(part) <= self._max_chars and not self.budget.long_words(part):
                units.append(_Unit(part, count, block.page_number, index, block.kind,
                                   terms(start, start + len(part), part), block.ocr_confidence))
                continue
            pieces = self.budget.pieces(part, self._max_unit, self._max_chars, break_long_words=True)
            for piece, piece_count in zip(pieces, self._counts([piece.text for piece in pieces])):
                located = start >= 0
                units.append(_Unit(piece.text, piece_count, block.page_number, index, block.kind,
                                   terms(start + piece.start if located else -1, start + piece.end, piece.text),
                                   block.ocr_confidence))
        return units

    def _counts(self, parts: list[str]) -> list[int]:
        """Token counts of ``parts``, in one tokenizer call. A part longer than one tokenizer
        window is never counted (it gets a count over any budget, and is split instead), so no
        count tokenizes an unbounded string."""
        window = self.budget.window_chars(self._max_unit)
        short = [p for p in parts if len(p) <= window]
        counts = iter(self.budget.counts(short))
        return [next(counts) if len(p) <= window else self._max_unit + 1 for p in parts]

    # -- packing --------------------------------------------------------------------------------
    def _pack(self, section: str | None, header_terms: tuple[str, ...], units: list[_Unit],
              out: list[tuple[Chunk, list[str]]]) -> None:
        header = self._embedded_header(section)
        limit = self._body_budget(header)
        runs: list[tuple[list[_Unit], int]] = []  # per chunk: its units, how many open it as overlap
        current: list[_Unit] = []
        fresh = 0  # units in `current` not carried over as overlap
        for unit in units:
            if current and not self._room_for(header, limit, current, unit):
                if fresh:
                    runs.append((current, len(current) - fresh))
                current = self._overlap(current) if fresh else []
                fresh = 0
                while current and not self._fits(header, current + [unit]):
                    current.pop(0)
            current.append(unit)
            fresh += 1
        if fresh:
            runs.append((current, len(current) - fresh))
        first = len(out)
        for (chunk_units, carried), parent in zip(runs, self._parents(header, runs)):
            out.append(self._make(section, header, header_terms, chunk_units, len(out), carried, first + parent))

    def _parents(self, header: str | None, runs: list[tuple[list[_Unit], int]]) -> list[int]:
        """Rule 6: per chunk of one section, the position of the first chunk of its run. A run
        grows by whole chunks while its text (the chunks' units, overlaps once) fits the section
        budget with the section's header; by the token estimate when that is clear, else counted."""
        if self.section_budget.max_input_tokens <= self.budget.max_input_tokens:
            return list(range(len(runs)))
        limit = self.section_budget.body_budget(header)
        parents: list[int] = []
        joined: list[_Unit] = []
        for i, (chunk_units, carried) in enumerate(runs):
            grown = joined + chunk_units[carried:]
            estimate = sum(u.tokens for u in grown) + len(grown)
            fits = bool(joined) and _chars(grown) <= self.section_budget.max_chars and estimate <= limit and (
                estimate <= limit - 8 or self.section_budget.fits(header, _join(grown)))
            if fits:
                joined = grown
                parents.append(parents[-1])
            else:
                joined = list(chunk_units)
                parents.append(i)
        return parents

    def _room_for(self, header: str | None, limit: int, current: list[_Unit], unit: _Unit) -> bool:
        # Token counts of joined pieces are nearly additive: tokenize the joined text only
        # when the sum comes close to the limit.
        estimate = sum(u.tokens for u in current) + unit.tokens + len(current)
        if estimate > limit or _chars(current + [unit]) > self._max_chars:
            return False
        return estimate <= limit - 8 or self._fits(header, current + [unit])

    def _fits(self, header: str | None, units: list[_Unit]) -> bool:
        return _chars(units) <= self._max_chars and self.budget.fits(header, _join(units))

    def _overlap(self, units: list[_Unit]) -> list[_Unit]:
        kept: list[_Unit] = []
        total = 0
        for unit in reversed(units):
            if unit.kind == "table" or total + unit.tokens > self.options.overlap_tokens:
                break
            kept.insert(0, unit)
            total += unit.tokens
        return kept

    def _make(self, section: str | None, header: str | None, header_terms: tuple[str, ...], units: list[_Unit],
              index: int, carried: int, parent: int) -> tuple[Chunk, list[str]]:
        pages = [u.page for u in units if u.page is not None]
        # a chunk across OCR'd pages carries the lowest of their confidences: the weakest text in it
        confidences = [u.ocr_confidence for u in units if u.ocr_confidence is not None]
        chunk = Chunk(
            text=_join(units),
            index=index,
            section=section,
            header=header,
            page_number=pages[0] if pages else None,
            element_types=tuple(dict.fromkeys(u.kind for u in units)),
            ocr_confidence=min(confidences) if confidences else None,
            parent=parent,
            overlap_chars=_chars(units[:carried]),
        )
        terms = [*(header_terms * self._header_repeat if header else ()), *(t for u in units for t in u.terms)]
        return chunk, terms

    def _check(self, chunks: list[Chunk]) -> list[list[int]]:
        """Every chunk's embedded input fits (one tokenizer call for all): the packing estimates
        are checked, never assumed. Returns the inputs' token ids, which the embedder takes."""
        inputs = [compose_input(self.budget.prefix, c.header, c.text) for c in chunks]
        ids = self.budget.input_ids(inputs)
        for chunk, tokens in zip(chunks, ids):
            if len(tokens) > self.budget.max_input_tokens or len(chunk.text) > self._max_chars:
                raise AssertionError(f"chunk {chunk.index} exceeds the model's limit or the character bound; this is a korag bug")
        return ids


def _rows(block: Block) -> list[tuple[int, str]]:
    """A table's rows with where each starts in the block's text (rows are joined by line
    breaks); -1 for a row not found there."""
    rows, at = [], 0
    for row in block.rows:
        found = block.text.find(row, at)
        rows.append((found, row))
        at = found + len(row) if found >= 0 else at
    return rows


def _chars(units: list[_Unit]) -> int:
    """``len(_join(units))``, without joining: one separator between units."""
    return sum(len(u.text) for u in units) + len(units) - 1 if units else 0


def _join(units: list[_Unit]) -> str:
    parts: list[str] = []
    for prev, unit in zip([None, *units], units):
        if prev is not None:
            parts.append(" " if prev.block == unit.block and unit.kind != "table" else "\n")
        parts.append(unit.text)
    return "".join(parts)
