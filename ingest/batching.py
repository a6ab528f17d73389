"""Batches formed by a token budget over length-sorted inputs.

A batch of ``rows`` inputs padded to ``length`` tokens costs ``rows * length`` tokens of compute,
padding included. Sorting by length first keeps the padding small; the budget keeps every batch
the same size in tokens whatever the lengths, instead of a fixed count of inputs that is too few
for short queries and too many for 512-token chunks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Batch:
    """Inputs ``indices`` (positions in the caller's list) padded to ``length`` tokens.

    ``rows`` is the batch's row count: ``len(indices)``, or more when shapes are fixed for a
    compiled model (the extra rows are filler whose outputs are dropped).
    """

    indices: tuple[int, ...]
    length: int
    rows: int

    def __post_init__(self) -> None:
        if not self.indices or self.rows < len(self.indices) or self.length < 1:
            raise ValueError(f"malformed batch: {self}")

    @property
    def padded_tokens(self) -> int:
        return self.rows * self.length


def plan_batches(
    lengths: Sequence[int], batch_tokens: int, bucket: int = 1, max_length: int | None = None,
    fixed_rows: bool = False,
) -> list[Batch]:
    """Group inputs of token ``lengths`` so that every batch's padded size ``rows * length`` stays
    within ``batch_tokens``. An input longer than the budget on its own gets a batch of one.

    ``bucket`` rounds padded lengths up to a multiple (capped at ``max_length``), so a compiled
    model meets a few shapes only; with ``fixed_rows`` every batch of one length has the same row
    count (``batch_tokens // length``), its last one filled up with filler rows.
    """
    if batch_tokens < 1 or bucket < 1:
        raise ValueError(f"batch_tokens ({batch_tokens}) and bucket ({bucket}) must be >= 1")

    def padded(n: int) -> int:
        rounded = math.ceil(max(n, 1) / bucket) * bucket
        return max(n, min(rounded, max_length)) if max_length is not None else rounded

    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[Batch] = []
    current: list[int] = []
    current_length = 0

    def close() -> None:
        rows = max(len(current), batch_tokens // current_length) if fixed_rows else len(current)
        batches.append(Batch(tuple(current), current_length, rows))

    for i in order:
        length = padded(lengths[i])
        if current and (max(current_length, length) * (len(current) + 1) > batch_tokens
                        or (fixed_rows and length != current_length)):
            close()
            current, current_length = [], 0
        current.append(i)
        current_length = max(current_length, length)
    if current:
        close()
    return batches
