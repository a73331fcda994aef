"""Step 3 over any Embedder: transient faults are retried and never blamed on documents; input
faults are isolated to the documents that cause them."""

import numpy as np
import polars as pl
import pytest

from embedding_assets.lib.embed import vector_frame
from embedding_assets.lib.frames import CHUNK_SCHEMA


class Overloaded(Exception):
    """What an HTTP embedding service's 429 or 503 becomes."""


class HashEmbedder:
    """A deterministic 8-dimensional embedder that fails as told."""

    model_name = "hash"
    fingerprint = "f"
    dimension = 8
    max_tokens = 100
    needs_chunking = True
    precision = "fp32"
    device = "cpu"
    tokenizer = None

    def __init__(self, overloaded_calls: int = 0, poison: str | None = None) -> None:
        self.overloaded_calls = overloaded_calls
        self.poison = poison
        self.calls = 0

    def encode(self, texts, n_tokens=None):
        self.calls += 1
        if self.calls <= self.overloaded_calls:
            raise Overloaded("503 Service Unavailable")
        if self.poison and any(self.poison in t for t in texts):
            raise ValueError("input rejected")
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=8) for t in texts]
        v = np.asarray(rows, dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def is_transient(self, error):
        return isinstance(error, Overloaded)


def _chunked(n: int, poison_at: int | None = None) -> pl.DataFrame:
    rows = [
        {
            "doc_id": f"d{i}",
            "source_id": str(i),
            "modified_at": None,
            "content_hash": i,
            "n_tokens": 3,
            "chunks": [f"text {i}" + (" POISON" if i == poison_at else ""), f"more {i}"],
            "chunk_tokens": [2, 1],
            "skip_reason": None,
            "note": None,
        }
        for i in range(n)
    ]
    return pl.DataFrame(rows, schema=CHUNK_SCHEMA)


def test_transient_faults_are_retried_and_nobody_is_dead_lettered():
    embedder = HashEmbedder(overloaded_calls=3)
    result = vector_frame(_chunked(20), embedder, retry_seconds=30, docs_per_batch=8)
    assert result.failures == []
    assert result.embedded == 20 and result.frame.height == 20
    assert embedder.calls == 3 + 3  # three refusals, then one call per batch of 8, 8, 4


def test_a_lasting_transient_fault_fails_the_step_instead_of_blaming_documents():
    embedder = HashEmbedder(overloaded_calls=10**9)
    with pytest.raises(Overloaded):
        vector_frame(_chunked(20), embedder, retry_seconds=1, docs_per_batch=8)
    # no bisection happened: a bisection would have called once per half, down to single documents
    assert embedder.calls < 20


def test_an_input_fault_is_isolated_to_its_document():
    embedder = HashEmbedder(poison="POISON")
    result = vector_frame(_chunked(20, poison_at=13), embedder, retry_seconds=1, docs_per_batch=8)
    assert [d for d, _ in result.failures] == ["d13"]
    assert "input rejected" in result.failures[0][1]
    assert result.frame.height == 19 and "d13" not in result.frame["doc_id"].to_list()


def test_vectors_are_reused_by_content_hash():
    embedder = HashEmbedder()
    first = vector_frame(_chunked(10), embedder, retry_seconds=1)
    calls = embedder.calls
    again = vector_frame(_chunked(10), embedder, retry_seconds=1, previous=first.frame)
    assert again.embedded == 0 and embedder.calls == calls
    assert again.frame["vector"].to_list() == first.frame["vector"].to_list()


def test_vectors_come_out_in_doc_id_order_whatever_order_they_were_embedded_in():
    """The stored shard is sorted by doc_id (readers join and diff on it), whether its rows were
    reused, embedded now or both, and whatever order the chunks came in."""
    embedder = HashEmbedder()
    chunked = _chunked(12)  # d0, d1, ..., d10, d11: not in string order
    first = vector_frame(chunked.filter(pl.col("content_hash") % 2 == 0), embedder, retry_seconds=1)
    edited = chunked.with_columns(
        pl.when(pl.col("content_hash") % 3 == 0).then(pl.col("content_hash") + 100).otherwise("content_hash")
    )
    mixed = vector_frame(edited, embedder, retry_seconds=1, previous=first.frame)
    assert 0 < mixed.embedded < 12
    ids = mixed.frame["doc_id"].to_list()
    assert ids == sorted(f"d{i}" for i in range(12))
    for row in mixed.frame.iter_rows(named=True):  # each row kept its own document's vector
        alone = vector_frame(edited.filter(pl.col("doc_id") == row["doc_id"]), embedder, retry_seconds=1)
        assert alone.frame["vector"].to_list() == [row["vector"]]
        assert alone.frame["content_hash"].item() == row["content_hash"]
    ordered = vector_frame(chunked.sort("doc_id"), embedder, retry_seconds=1)
    assert ordered.frame["doc_id"].to_list() == ids


def test_the_model_is_prepared_only_when_a_document_needs_it():
    """Deletions and metadata-only edits embed nothing: their runs must not pay a model load."""
    embedder, prepared = HashEmbedder(), []
    first = vector_frame(_chunked(10), embedder, retry_seconds=1, before_embedding=lambda: prepared.append(1))
    assert prepared == [1] and first.embedded == 10
    reused = vector_frame(
        _chunked(10),
        embedder,
        retry_seconds=1,
        previous=first.frame,
        before_embedding=lambda: prepared.append(2),
    )
    assert prepared == [1] and reused.embedded == 0
    empty = vector_frame(_chunked(0), embedder, retry_seconds=1, before_embedding=lambda: prepared.append(3))
    assert prepared == [1] and empty.frame.height == 0


class Clocked(HashEmbedder):
    """Each batch takes one second of a clock the test holds."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def encode(self, texts, n_tokens=None):
        self.now += 1.0
        return super().encode(texts, n_tokens)


def _checkpointed(seconds: float, docs: int = 20, per_batch: int = 2) -> tuple[list[list[str]], pl.DataFrame]:
    embedder, saved = Clocked(), []
    result = vector_frame(
        _chunked(docs),
        embedder,
        retry_seconds=1,
        docs_per_batch=per_batch,
        checkpoint=lambda part: saved.append(part["doc_id"].to_list()),
        checkpoint_seconds=seconds,
        clock=lambda: embedder.now,
    )
    return saved, result.frame


def test_every_batch_is_checkpointed_when_the_interval_is_zero():
    saved, frame = _checkpointed(0.0)
    assert saved == [[f"d{i}", f"d{i + 1}"] for i in range(0, 20, 2)]
    assert frame.height == 20


def test_finished_batches_are_checkpointed_together_once_the_interval_has_passed():
    """A killed run loses the batch in flight and at most ``checkpoint_seconds`` of finished
    work; a fast model does not write a file per batch."""
    saved, frame = _checkpointed(3.0)
    # one second per batch of two: a checkpoint after every third batch, the last batch is not
    # checkpointed (the caller stores the whole shard right after)
    assert saved == [[f"d{i}" for i in range(start, start + 6)] for start in (0, 6, 12)]
    assert frame.height == 20 and sorted(frame["doc_id"].to_list()) == sorted(f"d{i}" for i in range(20))


def test_a_shard_faster_than_the_interval_writes_no_checkpoint():
    saved, frame = _checkpointed(3600.0)
    assert saved == [] and frame.height == 20
