import numpy as np
import pytest

from embedding_assets.lib.pooling import chunk_weights, pool_documents, pooling_decay, windows_that_count


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


def test_lead_pooling_shrinks_each_later_window():
    """Three windows of one document, then a one-window document: weights are tokens x 0.3^i."""
    tokens = np.array([128.0, 128.0, 40.0, 90.0])
    weights = chunk_weights(tokens, np.array([3, 1]), "lead")
    np.testing.assert_allclose(weights, [128, 38.4, 3.6, 90])
    np.testing.assert_allclose(chunk_weights(tokens, np.array([3, 1]), "lead:0.25"), [128, 32, 2.5, 90])
    np.testing.assert_allclose(chunk_weights(tokens, np.array([3, 1]), "mean"), tokens)


def test_lead_pooling_leans_toward_the_opening():
    """A page whose opening says what it is about and whose long tail is an option list: the
    mean follows the tail, lead pooling stays with the opening."""
    opening, tail = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    vectors = np.stack([opening, tail, tail, tail]).astype(np.float32)
    tokens, counts, owner = np.full(4, 128.0), np.array([4]), np.zeros(4, int)
    mean = pool_documents(vectors, chunk_weights(tokens, counts, "mean"), owner, 1)[0]
    lead = pool_documents(vectors, chunk_weights(tokens, counts, "lead"), owner, 1)[0]
    assert mean @ opening < mean @ tail
    assert lead @ opening > lead @ tail


@pytest.mark.parametrize("bad", ["max", "lead:0", "lead:1.5", "lead:x", "mean:0.5", ""])
def test_unknown_pooling_is_refused_with_the_setting_named(bad):
    with pytest.raises(ValueError, match="EA_POOLING"):
        pooling_decay(bad)
    assert pooling_decay("lead:1") == 1.0 and pooling_decay("lead") == 0.3


def test_windows_that_count_stop_where_their_weight_is_negligible():
    assert windows_that_count("mean") is None  # the mean needs every window
    assert windows_that_count("lead") == 6  # 0.3**6 < 1e-3 <= 0.3**5
    assert windows_that_count("lead:0.5") == 10
    assert windows_that_count("lead:1") is None
