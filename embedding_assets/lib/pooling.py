"""One vector per document from its chunk vectors.

Pooling is part of the version tag. ``mean`` weighs each chunk by its tokens. ``lead`` also
multiplies the weight of each window by 0.3 after the one before it (``lead:<r>``: by ``r``):
documents say what they are about first, and a plain mean lets pages of option lists, logs or
appendices drown that. docs/quality.md measures both on the multilingual manual-page set.
"""

from __future__ import annotations

import math

import numpy as np

LEAD_DECAY = 0.3
# Windows whose weight is below this fraction of the first's are not embedded: under ``lead`` they
# would move the vector by less than the int8 codec's rounding, and a long page costs 6 windows,
# not hundreds. Part of what ``lead`` means: changing it changes the vectors a tag stands for.
NEGLIGIBLE_WEIGHT = 1e-3


def pooling_decay(pooling: str) -> float:
    """The factor each later window's weight is multiplied by: 1.0 for ``mean``.

    Raises ValueError for anything but ``mean``, ``lead`` or ``lead:<r>`` with 0 < r <= 1.
    """
    name, _, arg = pooling.partition(":")
    if name == "mean" and not arg:
        return 1.0
    if name == "lead":
        if not arg:
            return LEAD_DECAY
        try:
            decay = float(arg)
        except ValueError:
            decay = float("nan")
        if 0 < decay <= 1:
            return decay
    raise ValueError(f"EA_POOLING must be 'mean', 'lead' or 'lead:<r>' with 0 < r <= 1, got {pooling!r}")


def windows_that_count(pooling: str) -> int | None:
    """How many windows of a document are embedded under ``pooling``: all (None) for ``mean``."""
    decay = pooling_decay(pooling)
    if decay == 1.0:
        return None
    return max(1, math.ceil(math.log(NEGLIGIBLE_WEIGHT) / math.log(decay)))


def chunk_weights(tokens: np.ndarray, counts: np.ndarray, pooling: str) -> np.ndarray:
    """Each chunk's weight in its document's vector: its tokens, times ``decay ** position``.

    ``counts[d]`` is the number of chunks of document ``d``; chunks are in document order.
    """
    decay = pooling_decay(pooling)
    weights = np.asarray(tokens, dtype=np.float64)
    if decay == 1.0 or not len(weights):
        return weights
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    position = np.arange(len(weights)) - starts
    return weights * np.power(decay, position)


def pool_documents(
    chunk_vectors: np.ndarray, weights: np.ndarray, owner: np.ndarray, n_docs: int
) -> np.ndarray:
    """Weighted mean of each document's chunk vectors, unit length.

    ``owner[i]`` is the document index of chunk ``i``. Documents without chunks get zeros.
    """
    if chunk_vectors.ndim != 2:
        raise ValueError("chunk_vectors must be 2-D")
    dim = chunk_vectors.shape[1]
    sums = np.zeros((n_docs, dim), dtype=np.float64)
    np.add.at(sums, owner, chunk_vectors.astype(np.float64) * weights[:, None].astype(np.float64))
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    np.divide(sums, norms, out=sums, where=norms > 0)
    return sums.astype(np.float32)
