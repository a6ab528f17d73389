"""bench/dense_index.py's helpers: how the corpus is cut into pieces and how recall is counted."""

from __future__ import annotations

import numpy as np

from bench import dense_index


def test_pieces_split_at_sentence_ends_and_lines_drop_short_ones_cut_long_ones_and_keep_one_of_duplicates():
    passages = ["첫 문장이다. 둘째 문장이다!\n목차\n" + "가" * 25, "첫 문장이다.  셋째   문장?"]
    assert dense_index.pieces(passages, min_chars=5, max_chars=10) == [
        "첫 문장이다.", "둘째 문장이다!", "가" * 10, "가" * 5, "셋째 문장?"]


def test_exact_top_ranks_by_cosine_best_first():
    vectors = np.eye(4, dtype=np.float32)
    vectors[3] = [0.8, 0.6, 0, 0]
    query = np.array([[1.0, 0.1, 0, 0]], dtype=np.float32)
    query /= np.linalg.norm(query)
    assert dense_index.exact_top(vectors, query, k=2).tolist() == [[0, 3]]


def test_recall_counts_shared_ids_in_the_first_k_only():
    truth = [[1, 2, 3], [4, 5, 6]]
    assert dense_index.recall([[3, 2, 1], [4, 5, 6]], truth, k=3) == 1.0
    assert dense_index.recall([[1, 9, 8, 2], [6, 0, 0]], truth, k=3) == 2 / 6


def test_recall_takes_numpy_rows_as_the_truth():
    assert dense_index.recall([[0, 1]], np.array([[1, 2]]), k=2) == 0.5
