"""What a model's files say about it without loading its weights: dimension, sequence limit and
the prompts it expects before queries and documents.

The version tag needs all of them; reading a few JSON files costs milliseconds where loading torch
and the weights costs seconds (and a GPU's memory).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedding_assets import settings

_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


# Names sentence-transformers models give the prompt of the indexed side.
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus", "doc")


@dataclass(frozen=True)
class ModelShape:
    dimension: int
    max_seq_length: int
    query_prompt: str = ""
    document_prompt: str = ""

    @property
    def max_text_tokens(self) -> int:
        """Tokens of text one input holds whole: the limit less the two special tokens and the
        document prompt. A prompt takes at most one token per character, plus one for a leading
        word marker, so the reserve holds for any subword tokenizer without loading it."""
        reserve = len(self.document_prompt) + 1 if self.document_prompt else 0
        return self.max_seq_length - 2 - reserve


class ShapedByModelFiles:
    """What an embedder answers from its model's ``_shape`` (read from files, or from the loaded
    model where the files do not say): the version tag's dimension, window and prompts."""

    _shape: ModelShape

    @property
    def dimension(self) -> int:
        return self._shape.dimension

    @property
    def max_tokens(self) -> int:
        """Tokens of text per chunk the model sees whole (special tokens and prompt excluded)."""
        return self._shape.max_text_tokens

    @property
    def query_prompt(self) -> str:
        return self._shape.query_prompt

    @property
    def document_prompt(self) -> str:
        return self._shape.document_prompt


def prompts(folder: Path) -> tuple[str, str]:
    """``(query prompt, document prompt)`` from ``config_sentence_transformers.json``; "" where none."""
    config = _json(folder / "config_sentence_transformers.json")
    found = config.get("prompts") if isinstance(config, dict) else None
    if not isinstance(found, dict):
        return "", ""
    document = next((found[n] for n in DOCUMENT_PROMPT_NAMES if found.get(n)), "")
    return str(found.get("query") or ""), str(document)


def local_dir(model: str) -> Path | None:
    """The model's folder: the path itself, or a hub name's snapshot in the local cache."""
    path = Path(model)
    if path.is_dir():
        return path
    settings.models_offline()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not cached, or not a hub name: the caller loads the model instead
        return None


def _json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sentence_transformer_shape(folder: Path) -> ModelShape | None:
    """Output dimension and max_seq_length of a sentence-transformers folder, from its configs.

    Follows modules.json: the transformer's hidden size, pooling (times its modes), dense
    layers' out_features; None for any module it does not know (the caller then loads).
    """
    modules = _json(folder / "modules.json")
    st_config = _json(folder / "sentence_bert_config.json")
    if not isinstance(modules, list) or not isinstance(st_config, dict) or "max_seq_length" not in st_config:
        return None
    dimension: int | None = None
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        config = _json(folder / module.get("path", "") / "config.json") or {}
        if not isinstance(config, dict):
            return None
        if kind == "Transformer":
            dimension = config.get("hidden_size") or config.get("d_model")
        elif kind == "Pooling":
            modes = sum(bool(config.get(m)) for m in _POOLING_MODES) or 1
            dimension = int(config["word_embedding_dimension"]) * modes
        elif kind == "Dense":
            dimension = config.get("out_features")
        elif kind != "Normalize":
            return None
    if not dimension:
        return None
    return ModelShape(int(dimension), int(st_config["max_seq_length"]), *prompts(folder))


class FastTokenizer:
    """A model's ``tokenizer.json`` through ``tokenizers`` alone, called as a Hugging Face
    tokenizer is for chunking (offsets, no special tokens).

    Loading it takes a fraction of a second where ``AutoTokenizer`` first imports transformers and
    builds its wrapper (seconds each): a fixed cost of every incremental run's chunking step.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tokenizer = shared_tokenizer(path)

    def __call__(self, texts: str | list[str], *, add_special_tokens: bool = True, **_: object) -> dict:
        if isinstance(texts, str):
            one = self._tokenizer.encode(texts, add_special_tokens=add_special_tokens)
            return {"input_ids": one.ids, "offset_mapping": one.offsets}
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return {
            "input_ids": [e.ids for e in encodings],
            "offset_mapping": [e.offsets for e in encodings],
        }


def shared_tokenizer(path: Path) -> Any:
    """A ``tokenizer.json`` loaded once per process and file version, with no padding and no
    truncation, shared by the chunking step and the compiled runtimes' encoder: loading one with a
    250k-piece vocabulary (the multilingual model's) takes about a second, which every change run
    paid twice, once in each step. Callers never change its settings (the encoder truncates each
    encoding itself, ``compiled.py``)."""
    return _loaded_tokenizer(path, path.stat().st_mtime)


@functools.lru_cache(maxsize=8)
def _loaded_tokenizer(path: Path, mtime: float) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


@functools.lru_cache(maxsize=8)
def _fast_tokenizer(path: Path, mtime: float) -> FastTokenizer:
    """Once per process and file version: every run of a process builds its resources anew."""
    return FastTokenizer(path)


def tokenizer_json(folder: Path) -> Path | None:
    """The ``tokenizer.json`` of a sentence-transformers folder's Transformer module, if any."""
    modules = _json(folder / "modules.json")
    paths = [""]
    if isinstance(modules, list):
        paths = [
            str(m.get("path", ""))
            for m in modules
            if str(m.get("type", "")).rsplit(".", 1)[-1] == "Transformer"
        ] or paths
    found = folder / paths[0] / "tokenizer.json"
    return found if found.is_file() else None


def load_tokenizer(model: str) -> object:
    """The model's tokenizer for chunking: ``tokenizer.json`` directly when the folder has one,
    else ``AutoTokenizer`` (a model with only a slow tokenizer)."""
    folder = local_dir(model)
    found = tokenizer_json(folder) if folder else None
    if found is not None:
        return _fast_tokenizer(found, found.stat().st_mtime)
    settings.models_offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)
