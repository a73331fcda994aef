"""The labeled-set score: pure, on vectors made to be right or wrong."""

import numpy as np
import pytest

from embedding_assets.lib import quality
from embedding_assets.lib.quantization import calibrate_int8
from embedding_assets.lib.versioning import EmbeddingSpec

LABELED = quality.labeled_set()
N, L = len(LABELED.subjects), len(LABELED.languages)


def _spec(quantization: str, dimension: int) -> EmbeddingSpec:
    return EmbeddingSpec("m", "f", dimension, 510, 32, 2, 200_000, "t1", "fp32", quantization)


def _vectors(noise: float, seed: int = 0, *, cross: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Subject i's passages and queries near the same direction; with ``cross`` False, each
    language in a space of its own (what a single-language model does with other languages)."""
    rng = np.random.default_rng(seed)
    dim = 64
    topics = rng.normal(size=(N, dim))
    rows = []
    for lang in range(L):
        rows.append(topics if cross or lang == 0 else rng.normal(size=(N, dim)))
    passages = np.concatenate(rows) + rng.normal(size=(N * L, dim)) * noise
    queries = np.concatenate(rows) + rng.normal(size=(N * L, dim)) * noise
    return passages.astype(np.float32), queries.astype(np.float32)


def test_the_shipped_set_has_every_text_in_every_language():
    assert (N, L) == (16, 8)
    assert len(set(LABELED.passage_texts())) == N * L and len(set(LABELED.query_texts())) == N * L
    assert {"en", "zh", "ja", "ru"} <= set(LABELED.languages)


def test_right_vectors_score_one_and_random_ones_near_chance():
    passages, queries = _vectors(0.0)
    perfect = quality.score(passages, queries, LABELED)
    assert perfect.as_dict() == {
        "score": 1.0,
        "same_mrr": 1.0,
        "cross_mrr": 1.0,
        "same_r1": 1.0,
        "cross_r1": 1.0,
    }
    rng = np.random.default_rng(1)
    chance = quality.score(rng.normal(size=passages.shape), rng.normal(size=queries.shape), LABELED)
    assert chance.score < 0.35  # 16 candidates: a random ranking's MRR is about 0.21


def test_a_model_without_a_shared_space_fails_only_across_languages():
    passages, queries = _vectors(0.3, cross=False)
    found = quality.score(passages, queries, LABELED)
    assert found.same_r1 > 0.9 and found.cross_r1 < 0.5


def test_vectors_as_stored_keep_the_score_and_a_wrong_calibration_does_not():
    passages, queries = _vectors(1.5)  # noisy enough that codes matter: a score near 0.84
    unit = passages / np.linalg.norm(passages, axis=1, keepdims=True)
    spec = _spec("int8", unit.shape[1])
    exact = quality.score(unit, queries, LABELED)
    stored = quality.score(quality.as_stored(unit, spec, calibrate_int8(unit)), queries, LABELED)
    assert abs(stored.score - exact.score) <= 0.02
    binary = quality.score(quality.as_stored(unit, _spec("binary", unit.shape[1]), None), queries, LABELED)
    assert binary.score > 0.5
    # a calibration of other vectors (all positive: another version's, say) clips every negative code
    wrong = calibrate_int8(np.abs(unit) + 0.05)
    assert quality.score(quality.as_stored(unit, spec, wrong), queries, LABELED).score < exact.score - 0.05
    with pytest.raises(ValueError, match="no int8 calibration"):
        quality.as_stored(unit, spec, None)


def test_a_version_worse_than_the_active_one_by_more_than_the_margin_is_refused():
    assert quality.worse_than({"score": 0.70}, {"score": 0.80}, 0.02) is not None
    assert quality.worse_than({"score": 0.79}, {"score": 0.80}, 0.02) is None
    assert quality.worse_than({"score": 0.79}, None, 0.02) is None  # nothing to compare with
    assert "no quality record" in quality.worse_than(None, {"score": 0.8}, 0.02)
