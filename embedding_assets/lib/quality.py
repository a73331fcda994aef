"""A version's retrieval quality on the labeled set shipped with the project (data/labeled_set.json).

16 subjects, a passage and a query for each in 8 languages and scripts. Per language, the
passages are the index; a query's one relevant passage is its subject's. Same-language queries
search their own language; English queries search every other language (cross-lingual). The
score is the mean of the two kinds' MRR, computed on vectors as a client reads them (quantized
with the version's calibration, encoded, decoded), so a codec or calibration that hurts ranking
shows in it. Pure: the vectors come in, numbers go out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from embedding_assets.lib import codec
from embedding_assets.lib import quantization as q
from embedding_assets.lib.versioning import EmbeddingSpec

SOURCE_LANGUAGE = "en"


@dataclass(frozen=True)
class LabeledSet:
    languages: tuple[str, ...]
    subjects: tuple[str, ...]
    passages: dict[str, tuple[str, ...]]  # language -> passage of each subject
    queries: dict[str, tuple[str, ...]]
    digest: str

    def passage_texts(self) -> list[str]:
        """Every passage, language by language (the row order of ``score``'s passage matrix)."""
        return [t for lang in self.languages for t in self.passages[lang]]

    def query_texts(self) -> list[str]:
        return [t for lang in self.languages for t in self.queries[lang]]


@cache
def labeled_set() -> LabeledSet:
    raw = resources.files("embedding_assets").joinpath("data/labeled_set.json").read_text("utf-8")
    data = json.loads(raw)
    languages = tuple(data["languages"])
    subjects = data["subjects"]
    return LabeledSet(
        languages,
        tuple(s["id"] for s in subjects),
        {lang: tuple(s["passages"][lang] for s in subjects) for lang in languages},
        {lang: tuple(s["queries"][lang] for s in subjects) for lang in languages},
        hashlib.blake2b(raw.encode(), digest_size=6).hexdigest(),
    )


@dataclass(frozen=True)
class QualityScore:
    same_mrr: float
    cross_mrr: float
    same_r1: float
    cross_r1: float

    @property
    def score(self) -> float:
        return round((self.same_mrr + self.cross_mrr) / 2, 4)

    def as_dict(self) -> dict[str, float]:
        return {
            "score": self.score,
            "same_mrr": round(self.same_mrr, 4),
            "cross_mrr": round(self.cross_mrr, 4),
            "same_r1": round(self.same_r1, 4),
            "cross_r1": round(self.cross_r1, 4),
        }


def _unit(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms > 0, norms, 1)


def _ranks(queries: np.ndarray, passages: np.ndarray) -> np.ndarray:
    """1-based rank of each query's own passage (row i's is passage i); ties count against it."""
    sims = _unit(queries) @ _unit(passages).T
    own = np.diag(sims)
    return (sims >= own[:, None]).sum(axis=1)


def score(passages: np.ndarray, queries: np.ndarray, labeled: LabeledSet) -> QualityScore:
    """MRR and R@1 of same-language and English-to-other-language queries."""
    n = len(labeled.subjects)
    by_lang = {lang: i * n for i, lang in enumerate(labeled.languages)}
    same: list[np.ndarray] = []
    cross: list[np.ndarray] = []
    source = queries[by_lang[SOURCE_LANGUAGE] : by_lang[SOURCE_LANGUAGE] + n]
    for lang, start in by_lang.items():
        index = passages[start : start + n]
        same.append(_ranks(queries[start : start + n], index))
        if lang != SOURCE_LANGUAGE:
            cross.append(_ranks(source, index))
    s, c = np.concatenate(same), np.concatenate(cross)
    return QualityScore(
        float((1 / s).mean()), float((1 / c).mean()), float((s == 1).mean()), float((c == 1).mean())
    )


def as_stored(vectors: np.ndarray, spec: EmbeddingSpec, calibration: q.Int8Calibration | None) -> np.ndarray:
    """``vectors`` as a client reads them back: quantized with the version's codec and calibration,
    encoded as records, decoded."""
    if spec.quantization == q.INT8:
        if calibration is None:
            raise ValueError(f"version {spec.tag} has no int8 calibration")
        codes = q.quantize_int8(vectors, calibration)
    else:
        codes = q.quantize_binary(vectors)
    zeros = np.zeros(len(vectors), dtype=np.int64)
    records = codec.encode_records(
        codes,
        codec=spec.quantization,
        dimension=spec.dimension,
        version_id=spec.version_id,
        computed_at=0,
        content_hashes=zeros.astype(np.uint64),
        source_ms=zeros,
    )
    _, payloads = codec.decode_many(records)
    return q.dequantize(spec.quantization, payloads, calibration, spec.dimension)


def worse_than(candidate: dict | None, active: dict | None, margin: float) -> str | None:
    """Why ``candidate`` (a version's quality record) must not replace ``active``'s; None if it may."""
    if candidate is None:
        return "it has no quality record (versions built by this release record one when published)"
    if active is None:
        return None
    if candidate["score"] < active["score"] - margin:
        return (
            f"it scores {candidate['score']:.4f} on the labeled set, the active version "
            f"{active['score']:.4f}: more than the margin of {margin} worse"
        )
    return None
