"""sentence-transformers behind a small interface the pipeline needs.

Models load offline: the default is multilingual-e5-small, built from registry packages
(``packaged.py``); any local folder or cached hub name works too. Documents are encoded with
the model's document prompt, queries with its query prompt.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from embedding_assets import settings
from embedding_assets.embedders.model_files import (
    DOCUMENT_PROMPT_NAMES,
    ModelShape,
    ShapedByModelFiles,
    load_tokenizer,
    local_dir,
    sentence_transformer_shape,
)
from embedding_assets.lib.versioning import model_fingerprint

PRECISIONS = ("fp32", "bf16", "fp16")


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively (Linux reports them in cpuinfo)."""
    try:
        flags = open("/proc/cpuinfo").read()  # noqa: SIM115 - a one-shot read
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: bf16 where the hardware runs it natively (CUDA with bf16) or a bf16 CPU runs it
    faster (measured once per machine: ``cpu_precision``), else fp32.

    Cosine to fp32 >= 0.9999 in bf16. The resolved value is part of the version tag: pin
    EA_PRECISION when workers differ.
    """
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if not cpu_has_bf16():
        return "fp32"
    from embedding_assets.embedders.cpu_precision import cpu_precision
    from embedding_assets.settings import model_cache_dir

    return cpu_precision(model_cache_dir())


def default_model_path() -> str:
    from embedding_assets.embedders.packaged import resolve

    return resolve(None)


def resolve_device(device: str) -> str:
    """``auto``: CUDA when a GPU is there. torch is asked only where an NVIDIA driver is present,
    so deciding costs nothing on CPU machines."""
    if device != "auto":
        return device
    if not Path("/proc/driver/nvidia/version").exists():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_LOADED: dict[tuple[str, str, float], Any] = {}
_LOADING = threading.Lock()


def loaded_model(model_name: str, device: str) -> Any:
    """The model, loaded once per process (and again only when its folder changes).

    Each run builds its resources anew; a process that executes several runs (a run of many
    partitions' steps, the test harness, ``execute_in_process``) would otherwise load the same
    weights each time: seconds of tokenizer and weight loading for one document.
    """
    folder = Path(model_name)
    key = (model_name, device, folder.stat().st_mtime if folder.is_dir() else 0.0)
    with _LOADING:
        if key not in _LOADED:
            settings.models_offline()
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            # what loading prints (a progress bar per load, a report of weights the architecture
            # does not use, e.g. MiniLM's position_ids) is noise in every run's log: errors show
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
            _LOADED[key] = SentenceTransformer(model_name, device=device)
        return _LOADED[key]


class SentenceTransformerEmbedder(ShapedByModelFiles):
    """``protocols.Embedder`` over sentence-transformers. What makes the version tag is read from
    the model's files; the weights load on the first ``encode``."""

    needs_chunking = True

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "auto",
        batch_size: int = 16,
        precision: str = "auto",
    ) -> None:
        if precision not in (*PRECISIONS, "auto"):
            raise ValueError(f"precision must be auto or one of {PRECISIONS}, got {precision!r}")
        from embedding_assets.embedders.packaged import resolve

        self.model_name = resolve(model)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.precision = resolve_precision(precision, self.device)

    @cached_property
    def model(self) -> Any:
        return loaded_model(self.model_name, self.device)

    @cached_property
    def _shape(self) -> ModelShape:
        folder = local_dir(self.model_name)
        shape = sentence_transformer_shape(folder) if folder else None
        if shape is None:  # a layout the configs do not describe: ask the loaded model
            found = self.model.prompts or {}
            shape = ModelShape(
                int(self.model.get_embedding_dimension()),
                int(self.model.max_seq_length),
                found.get("query") or "",
                next((found[n] for n in DOCUMENT_PROMPT_NAMES if found.get(n)), ""),
            )
        return shape

    @cached_property
    def tokenizer(self) -> Any:
        """The model's own tokenizer, loaded alone (no weights) unless the model already is."""
        if "model" in self.__dict__:
            return self.model.tokenizer
        return load_tokenizer(self.model_name)

    def is_transient(self, error: BaseException) -> bool:
        """A local model's errors are the input's (or a bug): none is worth retrying as is."""
        return False

    @cached_property
    def fingerprint(self) -> str:
        return model_fingerprint(self.model_name)

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        if self.precision == "fp32":
            yield
            return
        import torch

        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.autocast(device_type, dtype=dtype):
            yield

    def encode(self, texts: list[str], n_tokens: list[int] | None = None) -> np.ndarray:
        """Unit vectors of documents (with the document prompt), float32, in input order.

        Batches are formed by token count (when given) rather than character length,
        which cuts padding sharply for mixed-script text.
        """
        return self._encode(texts, n_tokens, self.document_prompt)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of search queries, with the query prompt."""
        return self._encode(texts, None, self.query_prompt)

    def _encode(self, texts: list[str], n_tokens: list[int] | None, prompt: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        keys = n_tokens if n_tokens is not None else [len(t) for t in texts]
        order = np.argsort(np.asarray(keys), kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        with self._precision():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                vectors = self.model.encode(
                    [texts[i] for i in idx],
                    batch_size=len(idx),
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                    prompt=prompt or None,
                )
                out[idx] = vectors.astype(np.float32)
        return out
