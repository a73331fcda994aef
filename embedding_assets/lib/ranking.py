"""Re-ranking a first stage's candidates with stored vectors: pure functions, no I/O.

Three fusions, as search teams use them:
- ``cosine``: the candidates ordered by the cosine of their vector to the query's alone;
- ``rrf``: reciprocal-rank fusion of the first stage's order and the cosine order,
  ``1/(k + rank_first) + 1/(k + rank_dense)``: needs no score scale, robust to either stage's outliers;
- ``linear``: ``weight * first + (1 - weight) * cosine``, each min-max normalized over the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FUSIONS = ("cosine", "rrf", "linear")
RRF_K = 60


class Ranking(list):
    """``(doc_id, score)`` pairs, best first; ``missing``: candidates that have no entry (they are
    not ranked: the caller decides where they go)."""

    def __init__(self, pairs: Sequence[tuple[str, float]] = (), missing: Sequence[str] = ()) -> None:
        super().__init__(pairs)
        self.missing = list(missing)

    def ids(self) -> list[str]:
        return [doc_id for doc_id, _ in self]


def cosines(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``vectors`` to ``query`` (rows of any length, zero rows score 0)."""
    norms = np.linalg.norm(vectors, axis=1) * float(np.linalg.norm(query))
    dots = vectors @ query
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each score, highest first (ties by position)."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


def _minmax(values: np.ndarray) -> np.ndarray:
    span = float(values.max() - values.min()) if len(values) else 0.0
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def fuse(
    dense: np.ndarray,
    first_stage: np.ndarray | None,
    fusion: str = "cosine",
    *,
    weight: float = 0.5,
    k: int = RRF_K,
) -> np.ndarray:
    """Fused scores of candidates, given their cosines and (``rrf``, ``linear``) first-stage scores.

    ``first_stage`` None with ``rrf`` means the candidates came in first-stage order.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    dense = np.asarray(dense, dtype=np.float64)
    if fusion == "cosine":
        return dense
    if first_stage is None:
        if fusion == "linear":
            raise ValueError("linear fusion needs first_stage_scores")
        first_ranks = np.arange(1, len(dense) + 1)
    else:
        first_stage = np.asarray(first_stage, dtype=np.float64)
        if first_stage.shape != dense.shape:
            raise ValueError(f"{len(first_stage)} first-stage scores for {len(dense)} candidates")
        if not np.isfinite(first_stage).all():
            raise ValueError("first-stage scores must be finite")
        first_ranks = _ranks(first_stage)
    if fusion == "rrf":
        return 1.0 / (k + first_ranks) + 1.0 / (k + _ranks(dense))
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    assert first_stage is not None
    return weight * _minmax(first_stage) + (1.0 - weight) * _minmax(dense)


def rank(doc_ids: Sequence[str], scores: np.ndarray, missing: Sequence[str] = ()) -> Ranking:
    """``doc_ids`` ordered by ``scores``, best first; ties keep the given order."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return Ranking([(doc_ids[i], float(scores[i])) for i in order], missing)
