"""One vector per document from its chunk vectors."""

from __future__ import annotations

import numpy as np


def pool_documents(
    chunk_vectors: np.ndarray, weights: np.ndarray, owner: np.ndarray, n_docs: int
) -> np.ndarray:
    """Weighted mean of each document's chunk vectors (weights = token counts), unit length.

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
