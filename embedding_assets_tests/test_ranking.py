"""Re-ranking fusions: pure, no servers."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embedding_assets.lib.ranking import RRF_K, cosines, fuse, rank


def test_cosine_fusion_orders_by_the_vectors_alone():
    query = np.array([1.0, 0.0])
    vectors = np.array([[0.0, 1.0], [1.0, 0.1], [0.5, 0.5], [0.0, 0.0]])
    scores = fuse(cosines(query, vectors), np.array([9.0, 1.0, 5.0, 0.0]), "cosine")
    ranking = rank(["a", "b", "c", "zero"], scores, missing=["gone"])
    assert ranking.ids() == ["b", "c", "a", "zero"]
    assert ranking.missing == ["gone"]
    assert ranking[0][1] == pytest.approx(1 / np.hypot(1, 0.1))
    assert ranking[-1] == ("zero", 0.0)  # a zero vector scores 0, not NaN


def test_rrf_rewards_agreement_of_the_two_stages():
    dense = np.array([0.9, 0.1, 0.8])
    first = np.array([1.0, 3.0, 2.0])  # first stage: b, c, a
    scores = fuse(dense, first, "rrf")
    # c is second in both; a is first and third; b is third and first
    assert scores[2] == pytest.approx(2 / (RRF_K + 2))
    assert scores[0] == pytest.approx(1 / (RRF_K + 1) + 1 / (RRF_K + 3)) == pytest.approx(scores[1])
    # without scores, the candidates' order is the first stage's
    assert np.allclose(fuse(dense, None, "rrf"), [1 / 61 + 1 / 61, 1 / 62 + 1 / 63, 1 / 63 + 1 / 62])


def test_linear_fusion_weighs_normalized_scores():
    dense = np.array([0.2, 0.4, 0.3])
    first = np.array([10.0, 0.0, 5.0])
    assert np.allclose(fuse(dense, first, "linear", weight=1.0), [1.0, 0.0, 0.5])
    assert np.allclose(fuse(dense, first, "linear", weight=0.0), [0.0, 1.0, 0.5])
    assert np.allclose(fuse(dense, first, "linear"), [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="needs first_stage_scores"):
        fuse(dense, None, "linear")
    with pytest.raises(ValueError, match="weight"):
        fuse(dense, first, "linear", weight=1.5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="fusion must be one of"):
        fuse(np.zeros(2), None, "max")
    with pytest.raises(ValueError, match="2 first-stage scores for 3"):
        fuse(np.zeros(3), np.zeros(2), "rrf")
    with pytest.raises(ValueError, match="finite"):
        fuse(np.zeros(2), np.array([1.0, np.nan]), "rrf")


@given(st.lists(st.floats(-1, 1), min_size=1, max_size=40), st.sampled_from(["cosine", "rrf", "linear"]))
def test_a_ranking_is_a_permutation_best_first(values, fusion):
    dense = np.array(values)
    first = np.arange(len(values), 0, -1, dtype=float)
    scores = fuse(dense, first, fusion)
    ids = [f"d{i}" for i in range(len(values))]
    ranking = rank(ids, scores)
    assert sorted(ranking.ids()) == sorted(ids)
    assert all(a[1] >= b[1] for a, b in itertools.pairwise(ranking))
