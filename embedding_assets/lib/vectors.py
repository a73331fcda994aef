"""What makes a vector publishable, in one place: the embed step filters by it, checks report it."""

from __future__ import annotations

import numpy as np
import polars as pl

UNIT_NORM_TOLERANCE = 1e-3


def vectors_matrix(frame: pl.DataFrame) -> np.ndarray:
    """The ``vector`` column as a float32 matrix."""
    if frame.height == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return frame["vector"].to_numpy().astype(np.float32, copy=False)


def vector_problems(vectors: np.ndarray) -> dict[str, np.ndarray]:
    """Row masks: non-finite values, constant (all-zero included), not of unit length."""
    n = vectors.shape[0]
    if vectors.size == 0:
        empty = np.zeros(n, dtype=bool)
        return {"non_finite": empty, "constant": empty, "norm": empty}
    finite = np.isfinite(vectors).all(axis=1)
    cleaned = np.where(np.isfinite(vectors), vectors, 0.0)
    norms = np.linalg.norm(cleaned, axis=1)
    return {
        "non_finite": ~finite,
        "constant": np.ptp(cleaned, axis=1) == 0,
        "norm": finite & (np.abs(norms - 1) > UNIT_NORM_TOLERANCE),
    }


def unpublishable(vectors: np.ndarray) -> np.ndarray:
    """Rows that must never be published: non-finite or constant (pooling normalizes the rest)."""
    problems = vector_problems(vectors)
    return problems["non_finite"] | problems["constant"]


def split_invalid(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(valid, invalid)`` rows of a vector frame."""
    if frame.height == 0:
        return frame, frame
    mask = pl.Series(unpublishable(vectors_matrix(frame)))
    return frame.filter(~mask), frame.filter(mask)
