"""What may be published: lib/vectors.py."""

import numpy as np
import polars as pl

from embedding_assets.lib.vectors import split_invalid, unpublishable, vector_problems


def test_invalid_vectors_are_found():
    v = np.array([[0.6, 0.8, 0.0], [np.nan, 1, 0], [0, 0, 0], [0.5, 0.5, 0.5], [np.inf, 0, 0]], np.float32)
    assert unpublishable(v).tolist() == [False, True, True, True, True]
    frame = pl.DataFrame({"doc_id": list("abcde"), "vector": pl.Series(v, dtype=pl.Array(pl.Float32, 3))})
    valid, invalid = split_invalid(frame)
    assert valid["doc_id"].to_list() == ["a"]
    assert invalid["doc_id"].to_list() == ["b", "c", "d", "e"]


def test_problems_are_named():
    v = np.array([[0.6, 0.8], [2.0, 0.0], [np.nan, 0.0], [0.0, 0.0]], np.float32)
    problems = vector_problems(v)
    assert problems["norm"].tolist() == [False, True, False, True]  # zero: not unit length either
    assert problems["non_finite"].tolist() == [False, False, True, False]
    assert problems["constant"].tolist() == [False, False, True, True]  # NaN zeroed: constant too
