import datetime as dt
import itertools

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embedding_assets.lib.chunking import chunk_texts, window_spans


def _offsets(words: list[int]) -> list[tuple[int, int]]:
    """Token offsets for words of the given piece counts, words separated by one space."""
    out, pos = [], 0
    for pieces in words:
        for _ in range(pieces):
            out.append((pos, pos + 2))
            pos += 2
        pos += 1
    return out


@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=300),
    st.integers(2, 64),
    st.data(),
)
def test_windows_cover_every_token_within_limits(words, window, data):
    overlap = data.draw(st.integers(0, window - 1))
    offsets = _offsets(words)
    spans = window_spans(offsets, window, overlap)
    assert all(1 <= n <= window for _, _, n in spans)
    # every token lies inside some window, in order, first and last included
    assert spans[0][0] == offsets[0][0]
    assert spans[-1][1] == offsets[-1][1]
    starts = [a for a, _, _ in spans]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    for (_, end, _), (next_start, _, _) in itertools.pairwise(spans):
        assert next_start <= end + 1  # no gap between consecutive windows


def test_window_end_moves_back_to_a_word_boundary():
    offsets = _offsets([3, 3, 3])  # three words of three pieces
    spans = window_spans(offsets, 4, 0)
    # a window of 4 would cut the second word; it ends after the first word instead
    assert spans[0][2] == 3
    assert sum(n for _, _, n in spans) == 9


def test_overlap_repeats_tokens():
    offsets = _offsets([1] * 10)
    spans = window_spans(offsets, 4, 2)
    assert [n for _, _, n in spans] == [4, 4, 4, 4]


@given(st.lists(st.integers(1, 4), min_size=1, max_size=300), st.integers(2, 32), st.integers(1, 12))
def test_max_windows_keeps_the_first_windows_exactly(words, window, max_windows):
    """Lead pooling embeds only the windows that count: the same windows as an uncapped cut, up to
    the cap, so a capped document's vector is its uncapped vector minus a negligible tail."""
    offsets = _offsets(words)
    every = window_spans(offsets, window, window // 4)
    capped = window_spans(offsets, window, window // 4, max_windows)
    assert capped == every[:max_windows]


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError):
        window_spans([(0, 1)], 0, 0)
    with pytest.raises(ValueError):
        window_spans([(0, 1)], 4, 4)


def test_real_tokenizer_chunks_are_text_slices_within_the_window(embedder):
    text = " ".join(f"sentence number {i} about caching and databases." for i in range(200))
    [chunks] = chunk_texts([text], embedder.tokenizer, window=64, overlap=8)
    assert len(chunks) > 5
    for c in chunks:
        assert c.text in text
        assert c.n_tokens <= 64
        retokenized = embedder.tokenizer(c.text, add_special_tokens=False)["input_ids"]
        assert len(retokenized) == c.n_tokens


def test_multilingual_text_and_empty_text(embedder):
    texts = ["海面上昇と沿岸都市。" * 80, "", "Подъём уровня моря " * 60]
    chunked = chunk_texts(texts, embedder.tokenizer, window=100, overlap=10)
    assert chunked[1] == []
    for text, chunks in zip(texts, chunked, strict=True):
        for c in chunks:
            assert c.text in text and c.n_tokens <= 100


@pytest.mark.slow
@pytest.mark.parametrize("model", ["multilingual-e5-small", "all-MiniLM-L6-v2"])
def test_tokenizer_json_gives_the_same_tokens_and_offsets_as_autotokenizer(model):
    """Chunking reads tokenizer.json directly (no transformers import): it must cut exactly
    where the model's own Hugging Face tokenizer would, in every script of the corpus."""
    import json
    from pathlib import Path

    from transformers import AutoTokenizer

    import embedding_assets.dev as dev
    from embedding_assets.embedders.model_files import FastTokenizer, load_tokenizer
    from embedding_assets.embedders.packaged import resolve

    path = resolve(model)
    fast = load_tokenizer(path)
    assert isinstance(fast, FastTokenizer)
    reference = AutoTokenizer.from_pretrained(path)
    corpus = json.loads((Path(dev.__file__).parent / "corpus_text.json").read_text())
    texts = [
        f"{topic['title']}. " + " ".join(topic["sentences"])
        for language in corpus.values()
        for topic in language.values()
    ]
    texts += ["", "  leading and trailing  ", "MiXeD CaSe, ünïcödé & emoji 🚀\ttabs\nnewlines", "x" * 5000]
    kwargs = {"add_special_tokens": False, "return_offsets_mapping": True, "return_attention_mask": False}
    got, want = fast(texts, **kwargs), reference(texts, **kwargs)
    assert got["input_ids"] == want["input_ids"]
    assert [list(map(tuple, o)) for o in got["offset_mapping"]] == [
        list(map(tuple, o)) for o in want["offset_mapping"]
    ]
    window = {"window": 32, "overlap": 4}
    assert chunk_texts(texts, fast, **window) == chunk_texts(texts, reference, **window)


def _snapshot(rows: list[dict]) -> pl.DataFrame:
    from embedding_assets.lib.frames import SNAPSHOT_SCHEMA

    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    base = {"source_id": "s", "language": "en", "indexed_at": when, "modified_at": when, "read_at": when}
    return pl.DataFrame([{**base, "notes": None, **r} for r in rows], schema=SNAPSHOT_SCHEMA)


def test_whole_document_chunks_skips_and_reuse():
    from embedding_assets.lib.chunk import ChunkPlan, chunk_frame
    from embedding_assets.lib.text import content_hash
    from embedding_assets.lib.versioning import EmbeddingSpec

    spec = EmbeddingSpec("m", "f", 16, 8192, 0, 2, 1000, "t1", "fp32", "int8")
    plan = ChunkPlan(spec, single_chunk=True, tokenize_batch=2)
    snapshot = _snapshot(
        [
            {"doc_id": "a", "title": "T", "body": "Body  of\ta"},
            {"doc_id": None, "title": "x", "body": "y", "notes": "doc_id is an array; ..."},
            {"doc_id": "b", "title": None, "body": "  "},
            {"doc_id": "c", "title": None, "body": "c\x00c"},
            {"doc_id": "d", "title": "D", "body": None},
        ]
    )
    frame, reused = chunk_frame(snapshot, None, plan)
    rows = {r["doc_id"]: r for r in frame.to_dicts()}
    assert reused == [] and frame.height == 5
    assert rows["a"]["chunks"] == ["T\nT\nBody of a"] and rows["a"]["chunk_tokens"] == [None]
    assert rows["a"]["content_hash"] == content_hash("T\nT\nBody of a", spec.tag)
    assert rows["a"]["n_tokens"] is None and rows["a"]["skip_reason"] is None
    assert rows[None]["skip_reason"] == "doc_id is an array (source _id s)" and rows[None]["chunks"] == []
    assert rows["b"]["skip_reason"].startswith("no text") and rows["b"]["chunk_tokens"] == []
    assert rows["c"]["chunks"] == ["c c"] and rows["c"]["note"] == "control characters removed"
    assert rows["d"]["chunks"] == ["D\nD"]
    # unchanged text: the stored rows are kept, not chunked again
    again, reused = chunk_frame(snapshot, None, plan, previous=frame)
    assert sorted(reused) == ["a", "c", "d"] and again.equals(frame)
