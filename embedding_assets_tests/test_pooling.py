import numpy as np
import pytest

from embedding_assets.lib.pooling import pool_documents


def test_token_weighted_mean_is_unit_length():
    vectors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    pooled = pool_documents(vectors, np.array([3.0, 1.0, 5.0]), np.array([0, 0, 1]), 2)
    expected0 = np.array([3, 1, 0]) / np.linalg.norm([3, 1, 0])
    np.testing.assert_allclose(pooled[0], expected0, rtol=1e-6)
    np.testing.assert_allclose(pooled[1], [0, 0, 1])
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1, rtol=1e-6)


def test_single_chunk_document_keeps_its_direction():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(1, 16)).astype(np.float32)
    pooled = pool_documents(v, np.array([7.0]), np.array([0]), 1)
    np.testing.assert_allclose(pooled[0], v[0] / np.linalg.norm(v[0]), rtol=1e-5)


def test_document_without_chunks_is_zero():
    pooled = pool_documents(np.ones((1, 4), np.float32), np.ones(1), np.array([1]), 2)
    assert not pooled[0].any()


def test_rejects_non_matrix():
    with pytest.raises(ValueError):
        pool_documents(np.ones(4), np.ones(1), np.array([0]), 1)
