"""The transformer embedder: its version comes from the model's files, its precision keeps vectors."""

import json
import subprocess
import sys

import pytest

from embedding_assets import settings
from embedding_assets.embedders.model_files import sentence_transformer_shape
from embedding_assets.embedders.sentence_transformer import SentenceTransformerEmbedder, default_model_path

SPEC_WITHOUT_WEIGHTS = """
import json, sys
import dagster as dg
from embedding_assets.defs.resources import build_resources
with dg.build_resources({"model": build_resources()["embedding_model"]}) as r:
    spec = r.model.spec()
    plan = r.model.chunk_plan()
print(json.dumps({"tag": spec.tag, "dimension": spec.dimension, "window": spec.window_tokens,
                  "torch": "torch" in sys.modules, "single_chunk": plan.single_chunk}))
"""


def test_the_version_is_computed_without_loading_torch_or_weights(embedder):
    out = subprocess.run(
        [sys.executable, "-c", SPEC_WITHOUT_WEIGHTS],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={
            "EA_DEVICE": "cpu",
            "EA_PRECISION": "fp32",
            "EA_WINDOW_TOKENS": "0",  # the model's own limit (the default, 128, is under it)
            "HF_HUB_OFFLINE": "1",
            "PATH": "/usr/bin:/bin",
            "EA_MODEL_CACHE": str(settings.model_cache_dir()),  # built by the embedder fixture
        },
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["torch"] is False
    # and it is what the loaded model says
    assert found["dimension"] == embedder.model.get_embedding_dimension() == 384
    # the window leaves room for the two special tokens and the "passage: " prompt
    assert found["window"] == embedder.model.max_seq_length - 2 - (len("passage: ") + 1)
    assert len(embedder.tokenizer("passage: ", add_special_tokens=False)["input_ids"]) <= len("passage: ") + 1
    assert found["single_chunk"] is False


def test_model_files_describe_dense_and_pooling_layers(tmp_path):
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
            ]
        )
    )
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8192}))
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 1024}))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 1024, "pooling_mode_cls_token": True})
    )
    (tmp_path / "2_Dense").mkdir()
    (tmp_path / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 1024, "out_features": 256}))
    shape = sentence_transformer_shape(tmp_path)
    assert shape is not None and (shape.dimension, shape.max_seq_length) == (256, 8192)
    (tmp_path / "modules.json").write_text(json.dumps([{"path": "", "type": "my.custom.Module"}]))
    assert sentence_transformer_shape(tmp_path) is None  # unknown: the embedder loads the model instead
    assert sentence_transformer_shape(__import__("pathlib").Path(default_model_path())).dimension == 384


@pytest.mark.slow
def test_bf16_precision_keeps_the_vectors(embedder):
    from embedding_assets.embedders.sentence_transformer import resolve_precision

    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu") in ("bf16", "fp32")
    texts = [
        "Sea levels are rising as glaciers melt.",
        "Mélanger la farine et l'eau.",
        "数据库用索引存储文档。",
    ]
    fast = SentenceTransformerEmbedder(device="cpu", precision="bf16")
    fast.__dict__["model"] = embedder.model  # the same loaded weights
    exact = embedder.model.encode(texts, normalize_embeddings=True, prompt=embedder.document_prompt)
    cosine = (fast.encode(texts) * exact).sum(axis=1)
    assert cosine.min() > 0.999


def test_loading_a_model_leaves_nothing_in_a_runs_log():
    """No progress bars, no report of unused weights (MiniLM's position_ids) on stderr."""
    code = (
        "from embedding_assets.embedders.sentence_transformer import SentenceTransformerEmbedder as E\n"
        "for name in ('multilingual-e5-small', 'all-MiniLM-L6-v2'):\n"
        "    E(name).model\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
