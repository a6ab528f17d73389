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

import numpy as np

# A forward call's own cost, as a share of the token budget: what one more batch must save in
# padding to pay for itself. Measured on this machine's CPU with MiniLM (bench/RESULTS.md): a
# batch costs about the time of 1,000 tokens beside the tokens themselves at a 16k budget.
BATCH_COST = 1 / 16


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

    Without ``fixed_rows`` the grouping is the cheapest one (:func:`_cheapest_cuts`): filling each
    batch up to the budget in length order wastes a fifth of a small call on padding (a batch
    spans short and long inputs); the cheapest grouping pays a batch's fixed cost only where it
    saves more padding than it costs.

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
    if not fixed_rows:
        sizes = [padded(lengths[i]) for i in order]
        cuts = _cheapest_cuts(sizes, batch_tokens)
        return [Batch(tuple(order[a:b]), sizes[b - 1], b - a) for a, b in zip(cuts, cuts[1:])]
    batches: list[Batch] = []
    current: list[int] = []
    current_length = 0

    def close() -> None:
        rows = max(len(current), batch_tokens // current_length)
        batches.append(Batch(tuple(current), current_length, rows))

    for i in order:
        length = padded(lengths[i])
        if current and (max(current_length, length) * (len(current) + 1) > batch_tokens or length != current_length):
            close()
            current, current_length = [], 0
        current.append(i)
        current_length = max(current_length, length)
    if current:
        close()
    return batches


def _cheapest_cuts(sizes: Sequence[int], batch_tokens: int) -> list[int]:
    """Where to cut ascending ``sizes`` into batches (positions, 0 and ``len(sizes)`` included)
    so that the total cost is least: a batch of ``rows`` inputs padded to its longest,
    ``length``, costs ``rows * length`` tokens plus a fixed :data:`BATCH_COST` share of the budget
    (a forward call's own overhead), and ``rows * length`` stays within the budget. Dynamic
    programming over the sorted inputs, one vectorised step per input."""
    n = len(sizes)
    if n == 0:
        return [0]
    fixed = batch_tokens * BATCH_COST
    length = np.asarray(sizes, dtype=np.float64)
    best = np.zeros(n + 1)  # best[j]: least cost of the first j inputs
    cut = np.zeros(n + 1, dtype=np.int64)  # cut[j]: where the last batch of that grouping starts
    for j in range(1, n + 1):
        rows = max(1, batch_tokens // sizes[j - 1])  # the longest input of the batch sets its length
        start = max(0, j - rows)
        costs = best[start:j] + (j - np.arange(start, j)) * length[j - 1]
        k = int(np.argmin(costs))
        best[j] = costs[k] + fixed
        cut[j] = start + k
    cuts = [n]
    while cuts[-1] > 0:
        cuts.append(int(cut[cuts[-1]]))
    return cuts[::-1]
