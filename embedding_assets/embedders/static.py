"""The fast tier: static token embeddings distilled from the configured transformer.

Distillation (model2vec) runs once per source model and is cached on disk; the static model
is then loaded as a sentence-transformers ``StaticEmbedding``. No attention, so a document
is one chunk and encoding is a lookup and a mean: thousands of documents per second on a CPU.
Its quality relative to the transformer is measured, not assumed (see docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from embedding_assets import settings
from embedding_assets.embedders.packaged import resolve
from embedding_assets.lib.pooling import pooling_decay
from embedding_assets.lib.versioning import model_fingerprint, model_slug
from embedding_assets.process_memory import drop_mapped_pages

# A static model has no position limit; a window this large makes one chunk per document
# for any text under the character cap.
STATIC_WINDOW_TOKENS = 65_536
# Documents per call of the tokenizer: the bare encode's batch, and the embedding step's on this
# tier (calls of 512 made the 100k step 1 s slower, docs/benchmarks.md)
STATIC_BATCH_DOCS = 1024
# What the tier is, measured (benchmarks.quality on the Debian manual pages, docs/quality.md): said
# by `embedding-assets versions` beside every static version, so nobody mistakes it for the default.
TIER_NOTE = (
    "fast tier: ranks below BM25 on its own (manual pages, same-language R@10 0.483 against BM25's "
    "0.814; the transformer 0.900); for cheap similarity, deduplication and re-ranking BM25's "
    "candidates where the transformer is too slow, not as a first-stage retriever"
)


def distilled_path(cache_dir: Path, source: str, pca_dims: int) -> Path:
    key = hashlib.blake2b(f"{model_fingerprint(source)}:{pca_dims}".encode(), digest_size=6).hexdigest()
    return cache_dir / f"static-{model_slug(source)}-{pca_dims}-{key}"


class StaticModelNotBuilt(LookupError):
    """The distilled model is not on this machine yet, and this process may not build it."""


BUILD_COMMAND = "embedding-assets model"  # with the run's EA_BACKEND=static and EA_MODEL


def ensure_distilled(cache_dir: Path, source: str, pca_dims: int, *, build: bool = True) -> Path:
    """The distilled model's folder, distilling it first if it is not cached yet (``build``)."""
    from embedding_assets.stores.locks import FileLocks

    path = distilled_path(cache_dir, source, pca_dims)
    if (path / "config.json").exists():
        if build and not table_copy(path).exists():  # distilled by an earlier release
            token_table(path)
        return path
    if not build:
        raise StaticModelNotBuilt(
            f"the static model {path.name} is not built in {cache_dir} on this machine; distilling it "
            f"takes minutes and is never done inside a run: run `{BUILD_COMMAND}` once (EA_BACKEND=static)"
        )
    # one builder per machine: a second process (a test worker, a run) waits for the first's
    # minutes of distillation instead of doing them again beside it
    with FileLocks(cache_dir / "_locks").hold(path.name):
        if (path / "config.json").exists():
            return path
        settings.models_offline()
        from model2vec.distill import distill

        model = distill(model_name=source, pca_dims=pca_dims)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        model.save_pretrained(str(tmp))
        tmp.rename(path)
        # the float32 table too: converting it takes seconds and ~0.6 GB, which no run should pay
        token_table(path)
    return path


def table_copy(folder: Path) -> Path:
    """Where the float32 copy of a distilled model's table lives: beside the folder, not in it
    (the folder's files make the version's fingerprint)."""
    return folder.with_name(folder.name + ".table-f32.npy")


def token_table(folder: Path) -> np.ndarray:
    """The token-vector table as float32, memory-mapped from a copy written once beside the
    model: a run that embeds a few documents reads the rows of their tokens, not the whole table
    (2.4 s to read and convert the float16 file, at every run's start)."""
    source = folder / "model.safetensors"
    flat = table_copy(folder)
    if not flat.exists() or flat.stat().st_mtime < source.stat().st_mtime:
        from safetensors.numpy import load_file

        table = load_file(str(source))["embeddings"].astype(np.float32)
        tmp = flat.with_name(flat.name + f".tmp{os.getpid()}-{threading.get_ident()}")
        try:
            with open(tmp, "wb") as out:
                np.save(out, table)
            tmp.rename(flat)  # concurrent writers: the same bytes, the last rename wins
        except OSError:  # a read-only model folder (a client's): kept in memory
            tmp.unlink(missing_ok=True)
            return table
    return np.load(flat, mmap_mode="r")


_LOOKUPS: dict[tuple[str, float], tuple[Any, np.ndarray]] = {}
_LOOKUPS_LOCK = threading.Lock()


def token_lookup(folder: Path) -> tuple[Any, np.ndarray]:
    """Tokenizer and table of a distilled model, once per process (a process that executes
    several runs, the test harness, a client, would read them again for each)."""
    from tokenizers import Tokenizer

    key = (str(folder), (folder / "model.safetensors").stat().st_mtime)
    with _LOOKUPS_LOCK:
        if key not in _LOOKUPS:
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            tokenizer.no_padding()
            tokenizer.no_truncation()  # a static model has no position limit: the whole text counts
            _LOOKUPS[key] = (tokenizer, token_table(folder))
        return _LOOKUPS[key]


class StaticEmbedder:
    """``protocols.Embedder`` of the fast tier: whole documents, no chunking, no torch."""

    precision = "fp32"
    device = "cpu"
    needs_chunking = False
    tokenizer = None  # tokenizes inside encode; chunking is not needed
    # A static model sums token vectors: a prompt would add the same vector to every text.
    query_prompt = ""
    document_prompt = ""

    def __init__(
        self,
        source: str | None,
        *,
        cache_dir: Path,
        pca_dims: int = 256,
        batch_size: int = STATIC_BATCH_DOCS,
        pooling: str = "mean",
        window: int = 128,
        build: bool = True,
    ) -> None:
        self.source = resolve(source)
        self.build = build  # False in runs: a missing model is refused with the command that builds it
        self.cache_dir = cache_dir
        self.pca_dims = pca_dims
        self.batch_size = batch_size
        # Documents' token vectors are weighted as the transformer tier weighs its windows: the
        # tokens of the i-th block of ``window`` tokens count decay**i (lib/pooling.py).
        self.decay = pooling_decay(pooling)
        self.window = window

    @classmethod
    def from_folder(cls, folder: Path) -> StaticEmbedder:
        """A static model already distilled (a client's query side: it never distills)."""
        embedder = cls(str(folder), cache_dir=folder.parent)
        embedder.__dict__["path"] = folder
        return embedder

    @cached_property
    def path(self) -> Path:
        return ensure_distilled(self.cache_dir, self.source, self.pca_dims, build=self.build)

    @property
    def model_name(self) -> str:
        return f"static-{model_slug(self.source)}"

    @cached_property
    def model(self) -> Any:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding

        return SentenceTransformer(modules=[StaticEmbedding.from_model2vec(str(self.path))], device="cpu")

    @property
    def max_tokens(self) -> int:
        return STATIC_WINDOW_TOKENS

    @cached_property
    def dimension(self) -> int:
        """From the distilled model's config: asking for it must not load a model."""
        return int(json.loads((self.path / "config.json").read_text())["hidden_dim"])

    @cached_property
    def fingerprint(self) -> str:
        # ":whole": every token of the text is embedded (releases before truncated at 512 tokens,
        # as model2vec's tokenizer does): other vectors for long texts, so another version
        return f"{model_fingerprint(str(self.path))}:whole"

    def is_transient(self, error: BaseException) -> bool:
        return False

    @cached_property
    def _lookup(self) -> tuple[Any, np.ndarray]:
        """Tokenizer and token-vector table, read straight from the distilled model's files:
        no torch or transformers import, so a step process starts in a fraction of a second."""
        return token_lookup(self.path)

    def preload(self) -> None:
        """Read the tokenizer and map the table now, so that the first encode finds them read (a
        run's first step calls this in a thread, beside its source scan). Never distils: a model
        not built yet is the embedding step's to refuse."""
        try:
            folder = ensure_distilled(self.cache_dir, self.source, self.pca_dims, build=False)
        except StaticModelNotBuilt:
            return
        token_lookup(folder)

    def release_pages(self) -> bool:
        """Take the mapped table's pages out of the process's resident memory (a full run's
        embedding has read nearly all of it, 256 MB); a later encode maps what it reads again.
        False where no table is loaded, or it is not mapped from a file."""
        if "_lookup" not in self.__dict__:
            return False
        return drop_mapped_pages(self._lookup[1])

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Queries: no torch, a lookup and a mean (a query is shorter than one block)."""
        return self._encode(texts, 1.0)

    def encode(self, texts: list[str], n_tokens: list[int | None] | None = None) -> np.ndarray:
        """Mean of token vectors (weighted by their block under ``lead``), unit length: what
        ``SentenceTransformer.encode`` computes with ``StaticEmbedding``, but tokenized without
        offsets (``encode_batch_fast``) and pooled as a sparse count matrix times the table: 2x
        faster on 200-word documents (benchmarks.run)."""
        return self._encode(texts, self.decay)

    def _encode(self, texts: list[str], decay: float) -> np.ndarray:
        from scipy.sparse import csr_matrix

        tokenizer, table = self._lookup
        out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            encodings = tokenizer.encode_batch_fast(
                texts[start : start + self.batch_size], add_special_tokens=False
            )
            lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))  # no id lists
            flat = np.fromiter(
                itertools.chain.from_iterable(e.ids for e in encodings),
                dtype=np.int64,
                count=int(lengths.sum()),
            )
            indptr = np.concatenate([[0], np.cumsum(lengths)])
            # each row counts its tokens; times the table it is the sum of their vectors
            weights = np.ones(len(flat), np.float32)
            if decay != 1.0:
                position = np.arange(len(flat)) - np.repeat(indptr[:-1], lengths)
                weights = np.power(decay, position // self.window).astype(np.float32)
            counts = csr_matrix((weights, flat, indptr), shape=(len(encodings), len(table)))
            out[start : start + len(encodings)] = counts @ table
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out
