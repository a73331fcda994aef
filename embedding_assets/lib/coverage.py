"""Does a version have a current entry for every live document of the source?"""

from __future__ import annotations

from dataclasses import dataclass, field

from embedding_assets.lib.document_source import MongoDocumentSource
from embedding_assets.lib.feature_store import FeatureStore
from embedding_assets.lib.pipeline import snapshot_frame
from embedding_assets.lib.text import content_hash, embeddable_text
from embedding_assets.lib.versioning import EmbeddingSpec

SAMPLE = 20


@dataclass
class Coverage:
    documents: int = 0  # live documents with text: each should have an entry
    covered: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    without_text: int = 0

    @property
    def complete(self) -> bool:
        return self.documents == self.covered

    def summary(self) -> str:
        return (
            f"{self.covered}/{self.documents} covered, {len(self.missing)} missing "
            f"(e.g. {self.missing[:5]}), {len(self.mismatched)} mismatched (e.g. {self.mismatched[:5]}), "
            f"{self.without_text} without text"
        )


def expected_hashes(
    source: MongoDocumentSource, spec: EmbeddingSpec, num_shards: int
) -> tuple[dict[str, int], int]:
    """doc_id -> the content hash its entry must carry under ``spec``; and how many have no text."""
    frame = snapshot_frame(doc for _, doc in source.iter_shards(range(num_shards), num_shards))
    expected: dict[str, int] = {}
    without_text = 0
    for row in frame.filter(frame["doc_id"].is_not_null()).iter_rows(named=True):
        text = embeddable_text(
            row["title"], row["body"], title_repeat=spec.title_repeat, max_chars=spec.max_chars
        )
        if text.skip_reason:
            without_text += 1
        else:
            expected[row["doc_id"]] = content_hash(text.text, spec.tag)
    return expected, without_text


def measure_coverage(
    source: MongoDocumentSource, store: FeatureStore, spec: EmbeddingSpec, num_shards: int
) -> Coverage:
    expected, without_text = expected_hashes(source, spec, num_shards)
    result = Coverage(documents=len(expected), without_text=without_text)
    ids = sorted(expected)
    for doc_id, header in zip(ids, store.read_headers(spec.tag, ids), strict=True):
        if header is None:
            result.missing.append(doc_id)
        elif header.content_hash != expected[doc_id] or header.version_id != spec.version_id:
            result.mismatched.append(doc_id)
        else:
            result.covered += 1
    return result
