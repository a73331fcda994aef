"""The two seams of the pipeline: what embeds, and where entries live.

A new embedding provider (an HTTP service, say) or a new sink (Qdrant, pgvector) is one class
that satisfies one of these, and its configuration; the steps in ``lib/`` see only these.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from embedding_assets.lib.codec import RecordHeader


class Tokenizer(Protocol):
    """A Hugging Face tokenizer's call: offsets of tokens in the text, no special tokens."""

    def __call__(self, texts: list[str], **kwargs: Any) -> Any: ...


class Embedder(Protocol):
    """Turns texts into unit vectors.

    ``model_name``, ``fingerprint``, ``dimension``, ``max_tokens`` and ``precision`` make the
    version tag and must be known without loading weights; ``tokenizer`` and ``encode`` may load.
    """

    @property
    def model_name(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Tokens of text one input may hold and be seen whole."""
        ...

    @property
    def needs_chunking(self) -> bool:
        """True: texts are cut into ``max_tokens`` windows first; False: one input per document."""
        ...

    @property
    def precision(self) -> str: ...

    @property
    def query_prompt(self) -> str:
        """Put before each query ("" when the model expects none); part of the version tag."""
        ...

    @property
    def document_prompt(self) -> str:
        """Put before each document text; part of the version tag."""
        ...

    @property
    def device(self) -> str: ...

    @property
    def tokenizer(self) -> Tokenizer | None:
        """What chunking cuts with (None when the embedder needs no chunking)."""
        ...

    def encode(self, texts: list[str], n_tokens: list[int | None] | None = None) -> np.ndarray:
        """Float32 unit vectors of documents (document prompt applied), one row per text, in order."""
        ...

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Float32 unit vectors of search queries (query prompt applied), in order."""
        ...

    def is_transient(self, error: BaseException) -> bool:
        """A fault of the provider (overload, timeout), not of the input: retried, never dead-lettered."""
        ...


class EntryStore(Protocol):
    """Where each document's record (lib/codec.py) lives, per version.

    Writes and deletes are conditional on the record's ``source_ms`` and on when its state was
    read (``computed_at``), and deletions leave tombstones, so two runs racing on one document
    never replace a newer state with an older one nor bring back a deleted document.
    """

    def read_headers(self, version: str, doc_ids: Sequence[str]) -> list[RecordHeader | None]:
        """Each entry's header; None where missing or unreadable (it is then rewritten)."""
        ...

    def read(self, version: str, doc_ids: Sequence[str]) -> list[bytes | None]:
        """Records in ``doc_ids`` order, None where missing (the read API's batch path)."""
        ...

    def read_one(self, version: str, doc_id: str) -> bytes | None:
        """One record (the read API's single lookup: one round trip)."""
        ...

    def write_if_not_older(
        self,
        version: str,
        doc_ids: Sequence[str],
        values: Sequence[bytes],
        read_s: Sequence[int | None] | None = None,
    ) -> int:
        """Write, except over an entry of a later source state (a later modified_at, read no
        earlier than ``read_s``, when each document was read) or over a deletion seen no earlier
        than ``read_s``; returns how many were written."""
        ...

    def server_time(self) -> int:
        """The store's clock (whole seconds): read times and entries' computed_at use it."""
        ...

    def delete_if_not_newer(
        self, version: str, doc_ids: Sequence[str], source_ms: Sequence[int], seen_s: int = 0
    ) -> int:
        """Delete entries of documents seen deleted at ``seen_s``: those read earlier, leaving a
        tombstone; with ``seen_s`` 0, those whose source state is at most the one given.
        Returns how many went."""
        ...

    def deletions_seen(self, version: str, doc_ids: Sequence[str]) -> list[int | None]:
        """When each document was seen deleted (server seconds), where a tombstone says so."""
        ...

    def scan_ids(self, version: str, forget_deletions_before: int = 0) -> Iterator[str]:
        """doc_ids with an entry; tombstones older than ``forget_deletions_before`` go."""
        ...

    def drop(self, version: str) -> int:
        """Remove every entry of a version; returns how many there were."""
        ...
