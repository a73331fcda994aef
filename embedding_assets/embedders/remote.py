"""An OpenAI-compatible embedding service (TEI, Infinity, vLLM, OpenAI) behind ``Embedder``.

The model's local folder (tokenizer and configs, no weights needed) gives what makes the version
tag and what chunking cuts with; the service computes the vectors. Requests are packed by token
count, sent to several endpoints at once with bounded, adaptive concurrency, and retried on
another endpoint when one is overloaded or down. Which errors are whose:

- the service's (429, 5xx, timeouts, connection errors): ``ServiceUnavailable``, transient:
  retried with backoff (honouring ``Retry-After``), never blamed on a document;
- the input's (another 4xx): ``InputRejected``: the batch is bisected down to the document
  (lib/embed.py) and that document is dead-lettered.

Endpoints serving another model under the same name are refused before anything is written:
``verify`` compares each endpoint's vectors of fixed canary texts with the version's stored ones.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

import numpy as np
import requests

from embedding_assets import settings
from embedding_assets.embedders.model_files import (
    ModelShape,
    ShapedByModelFiles,
    load_tokenizer,
    local_dir,
    sentence_transformer_shape,
)
from embedding_assets.lib.versioning import model_fingerprint

CANARY_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings turn text into vectors that can be compared.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "快速的棕色狐狸跳过了懒狗。",
    "Быстрая коричневая лиса перепрыгивает через ленивую собаку.",
    "1234567890 !?",
    "a",
)
MIN_CANARY_COSINE = 0.999


class ServiceUnavailable(RuntimeError):
    """The service could not answer (overload, outage, timeout): retried, never dead-lettered."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InputRejected(ValueError):
    """The service refused this input (4xx other than 429): the input's fault."""


class ModelMismatch(RuntimeError):
    """An endpoint serves vectors that are not the version's model."""


def _redacted(text: str, endpoint: _Endpoint) -> str:
    """A transport error's text without the endpoint's credentials (requests quotes the URL)."""
    return settings.redact(text, settings.url_secrets(endpoint.url))


class _Endpoint:
    """One URL, with its own session per thread and a cool-down after failures."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.path = self.url if self.url.endswith("/embeddings") else f"{self.url}/embeddings"
        self.shown = settings.mask_url(self.url)  # what messages, metadata and dead letters say
        self.down_until = 0.0
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session


class _Permits:
    """Concurrency that halves on overload and grows back by one per success (AIMD)."""

    def __init__(self, limit: int) -> None:
        self.limit = self.allowed = limit
        self.used = 0
        self.cond = threading.Condition()

    def acquire(self) -> None:
        with self.cond:
            while self.used >= self.allowed:
                self.cond.wait()
            self.used += 1

    def release(self, overloaded: bool) -> None:
        with self.cond:
            self.used -= 1
            if overloaded:
                self.allowed = max(1, self.allowed // 2)
            elif self.allowed < self.limit:
                self.allowed += 1
            self.cond.notify_all()


class RemoteEmbedder(ShapedByModelFiles):
    """``protocols.Embedder`` over an OpenAI-compatible ``/embeddings`` API."""

    needs_chunking = True
    precision = "remote"

    def __init__(
        self,
        model_dir: str,
        urls: Sequence[str],
        *,
        served_model: str = "",
        api_key: str = "",
        concurrency: int = 4,
        max_batch_tokens: int = 8192,
        max_batch_inputs: int = 64,
        timeout_seconds: float = 60.0,
        retry_seconds: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("a remote embedder needs at least one endpoint URL (EA_EMBED_URLS)")
        self.model_name = model_dir
        self.endpoints = [_Endpoint(u) for u in urls]
        self.served_model = served_model or model_dir
        self.api_key = api_key
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_inputs = max_batch_inputs
        self.timeout_seconds = timeout_seconds
        self.retry_seconds = retry_seconds
        self.permits = _Permits(concurrency * len(self.endpoints))
        self.pool = ThreadPoolExecutor(max_workers=concurrency * len(self.endpoints))
        self.clock = clock
        self._next = 0
        self._lock = threading.Lock()

    # -- what the version tag and chunking need: the local folder, never the service -------------
    @property
    def device(self) -> str:
        return "remote:" + ",".join(e.shown for e in self.endpoints)

    @cached_property
    def _shape(self) -> ModelShape:
        folder = local_dir(self.model_name)
        shape = sentence_transformer_shape(folder) if folder else None
        if shape is None:
            raise ValueError(
                f"{self.model_name}: no sentence-transformers configs to read the dimension from"
            )
        return shape

    @cached_property
    def fingerprint(self) -> str:
        return model_fingerprint(self.model_name)

    @cached_property
    def tokenizer(self) -> Any:
        return load_tokenizer(self.model_name)

    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, ServiceUnavailable)

    # -- embedding ------------------------------------------------------------------------------
    def encode(self, texts: list[str], n_tokens: list[int | None] | None = None) -> np.ndarray:
        """Unit vectors of documents in input order. Services embed what they are sent, so the
        document prompt is put before each text here. Requests are packed by token count, run
        concurrently over the endpoints; a request the service cannot answer now is retried
        (another endpoint first) for ``retry_seconds``, then ``ServiceUnavailable`` is raised."""
        if self.document_prompt:
            texts = [self.document_prompt + t for t in texts]
        return self._encode(texts, n_tokens)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of search queries, with the query prompt."""
        return self._encode([self.query_prompt + t for t in texts], None)

    def _encode(self, texts: list[str], n_tokens: list[int | None] | None) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        sizes = [
            t if t is not None else max(1, len(s) // 4)
            for t, s in zip(n_tokens or [None] * len(texts), texts, strict=True)
        ]
        futures = [
            (batch, self.pool.submit(self._request, [texts[i] for i in batch]))
            for batch in pack(sizes, self.max_batch_tokens, self.max_batch_inputs)
        ]
        for batch, future in futures:
            out[batch] = future.result()
        return out

    def encode_on(self, endpoint: int, texts: list[str]) -> np.ndarray:
        """``texts`` embedded by one endpoint only (canary checks)."""
        return self._send(self.endpoints[endpoint], texts)

    def _request(self, texts: list[str]) -> np.ndarray:
        deadline = self.clock() + self.retry_seconds
        delay = 0.5
        while True:
            endpoint = self._pick()
            self.permits.acquire()
            overloaded = False
            try:
                return self._send(endpoint, texts)
            except ServiceUnavailable as err:
                overloaded = True
                wait = err.retry_after if err.retry_after is not None else delay
                endpoint.down_until = self.clock() + wait
                if self.clock() + wait > deadline:
                    raise
                if all(e.down_until > self.clock() for e in self.endpoints):
                    time.sleep(min(wait, max(0.0, deadline - self.clock())))
                delay = min(delay * 2, 15.0) * (0.5 + random.random())
            finally:
                self.permits.release(overloaded)

    def _pick(self) -> _Endpoint:
        """The next endpoint not cooling down (round robin); the soonest back if all are."""
        with self._lock:
            now = self.clock()
            for _ in range(len(self.endpoints)):
                endpoint = self.endpoints[self._next % len(self.endpoints)]
                self._next += 1
                if endpoint.down_until <= now:
                    return endpoint
            return min(self.endpoints, key=lambda e: e.down_until)

    def _send(self, endpoint: _Endpoint, texts: list[str]) -> np.ndarray:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = endpoint.session.post(
                endpoint.path,
                json={"model": self.served_model, "input": texts, "encoding_format": "float"},
                headers=headers,
                timeout=self.timeout_seconds,
            )
        except (requests.ConnectionError, requests.Timeout) as err:
            said = _redacted(str(err), endpoint)
            raise ServiceUnavailable(f"{endpoint.shown}: {type(err).__name__}: {said}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise ServiceUnavailable(
                f"{endpoint.shown} answered {response.status_code}: {response.text[:200]}",
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        if response.status_code >= 400:
            raise InputRejected(
                f"{endpoint.shown} refused the input ({response.status_code}): {response.text[:300]}"
            )
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        vectors = np.asarray([d["embedding"] for d in data], dtype=np.float32)
        if vectors.shape != (len(texts), self.dimension):
            raise ModelMismatch(
                f"{endpoint.shown} returned {vectors.shape} for {len(texts)} texts; the version's model "
                f"has dimension {self.dimension}"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1)

    # -- identity ---------------------------------------------------------------------------------
    def verify(self, reference: np.ndarray | None) -> np.ndarray:
        """Each endpoint's vectors of CANARY_TEXTS, checked against ``reference`` (the version's
        stored canaries; None: the first run, whose canaries become the reference, and whose
        endpoints must then agree with each other). Returns the canaries to store."""
        texts = list(CANARY_TEXTS)
        got = [self._send(e, texts) for e in self.endpoints]
        base = reference if reference is not None else got[0]
        for endpoint, vectors in zip(self.endpoints, got, strict=True):
            worst = float(np.min(np.sum(vectors * base, axis=1)))
            if worst < MIN_CANARY_COSINE:
                raise ModelMismatch(
                    f"{endpoint.shown} (model {self.served_model!r}) embeds the canary texts at cosine "
                    f"{worst:.4f} to the version's vectors (at least {MIN_CANARY_COSINE} required): it "
                    "serves another model; remove it from EA_EMBED_URLS or embed a new version"
                )
        return base


def pack(sizes: Sequence[int], max_tokens: int, max_inputs: int) -> list[list[int]]:
    """Indexes grouped into requests of at most ``max_tokens`` tokens and ``max_inputs`` inputs,
    longest first so that requests are full; an input over the limit goes alone."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    batches: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in order:
        if current and (tokens + sizes[i] > max_tokens or len(current) >= max_inputs):
            batches.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += sizes[i]
    if current:
        batches.append(current)
    return batches


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
