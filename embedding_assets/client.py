"""The read API for services: float32 vectors by doc_id, with version, time and content hash;
and the query side: queries embedded by the version's own model, candidates re-ranked."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from embedding_assets.embedders.for_version import backend_of, configured_source, query_embedder
from embedding_assets.lib import codec
from embedding_assets.lib import quantization as q
from embedding_assets.lib.identity import doc_key
from embedding_assets.lib.protocols import Embedder
from embedding_assets.lib.ranking import Ranking, cosines, fuse, rank
from embedding_assets.stores.control_plane import ControlPlaneLost
from embedding_assets.stores.feature_store import FeatureStore, connect

T = TypeVar("T")
DocId = Any  # a doc_id as MongoDB holds it (str, int, ObjectId, ...); entries key its string form


@dataclass(slots=True)
class StoredEmbedding:
    """One entry as read. Times are kept as numbers and turned into datetimes when asked for:
    a get_many of 100 would otherwise spend a third of its client time making datetimes."""

    doc_id: DocId  # as the caller gave it
    vector: np.ndarray
    version: str
    computed_at_s: int
    content_hash: int
    source_ms: int

    @property
    def computed_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.computed_at_s, dt.UTC)

    @property
    def source_modified_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.source_ms / 1000, dt.UTC)


@dataclass(frozen=True, slots=True)
class QueryVector:
    """A query embedded by a version's model: it scores only against that version's entries."""

    vector: np.ndarray
    version: str
    text: str | None = None


class VersionMismatch(ValueError):
    """A query vector of another version (model, prompt or settings) than the entries read."""


# A following client that misses looks up the active version at most this often (one GET): a miss
# may be a switch it has not seen yet, and its version may be on its way out (cleanup).
MISS_RECHECK_SECONDS = 1.0


class EmbeddingClient:
    """Reads one version: the one given (pinned), else the store's active version, followed: a
    switch (``embedding-assets activate``) is seen within ``refresh_seconds`` (one GET per
    interval, none in between)."""

    def __init__(
        self,
        store: FeatureStore,
        version: str | None = None,
        *,
        refresh_seconds: float = 5.0,
        model: str | None = None,
    ) -> None:
        self.store = store
        self.pinned = version is not None
        self.refresh_seconds = refresh_seconds
        self.model = model  # where the version's model is, for queries (default: as recorded)
        self._embedders: dict[str, Embedder] = {}
        self._use(version or self._active())
        if self.pinned and self.spec is None:
            try:  # a version whose registration was lost still has its layout: readable
                store.control.buckets(self.version)
            except ControlPlaneLost:
                known = sorted(store.control.versions())
                raise LookupError(f"unknown version {self.version}; known: {known}") from None

    @classmethod
    def from_url(
        cls,
        url: str,
        version: str | None = None,
        *,
        refresh_seconds: float = 5.0,
        model: str | None = None,
    ) -> EmbeddingClient:
        return cls(FeatureStore(connect(url)), version, refresh_seconds=refresh_seconds, model=model)

    def _active(self) -> str:
        resolved = self.store.control.active_version()
        if resolved is None:
            raise LookupError("the feature store has no active version yet; materialize first")
        return resolved

    def _use(self, version: str) -> None:
        spec = self.store.control.versions().get(version)
        self.spec = spec
        self.version = version
        self.version_id = spec.version_id if spec else None
        self._calibration = self.store.control.calibration(version)
        self._checked = time.monotonic()

    def _follow(self) -> None:
        """Switch to the active version if it changed (at most once per refresh interval)."""
        if self.pinned or time.monotonic() - self._checked < self.refresh_seconds:
            return
        active = self._active()
        self._checked = time.monotonic()
        if active != self.version:
            self._use(active)

    def _read(self, read: Callable[[str], T]) -> T:
        """``read(version)`` of the version followed; if that version's keys are gone (removed
        by cleanup), the active one is looked up at once and read instead, and so it is when a
        read misses (at most once a second): a miss may be a switch not seen yet."""
        self._follow()
        try:
            found = read(self.version)
        except ControlPlaneLost:
            if self.pinned:
                raise
            self._checked = float("-inf")
            self._follow()
            return read(self.version)
        missed = found is None or (isinstance(found, list) and None in found)
        if missed and not self.pinned and time.monotonic() - self._checked >= MISS_RECHECK_SECONDS:
            self._checked = float("-inf")
            before = self.version
            self._follow()
            if self.version != before:
                return read(self.version)
        return found

    def get(self, doc_id: DocId) -> StoredEmbedding | None:
        key = doc_key(doc_id)
        raw = self._read(lambda version: self.store.entries.read_one(version, key))
        if raw is None:
            return None
        entry = self._decode(key, raw)
        entry.doc_id = doc_id
        return entry

    def get_many(self, doc_ids: Sequence[DocId]) -> list[StoredEmbedding | None]:
        out: list[StoredEmbedding | None] = [None] * len(doc_ids)
        version, groups = self._read_many(doc_ids)
        for positions, headers, vectors in groups:
            if headers is None:  # decoded one at a time
                for i, entry in zip(positions, vectors, strict=True):
                    entry.doc_id = doc_ids[i]
                    out[i] = entry
                continue
            columns = zip(
                positions,
                vectors,
                headers["computed_at"].tolist(),
                headers["content_hash"].tolist(),
                headers["source_ms"].tolist(),
                strict=True,
            )
            for i, vector, computed_at, content_hash, source_ms in columns:
                out[i] = StoredEmbedding(doc_ids[i], vector, version, computed_at, content_hash, source_ms)
        return out

    def _read_many(
        self, doc_ids: Sequence[DocId]
    ) -> tuple[str, list[tuple[list[int], np.ndarray | None, Any]]]:
        """The version read, and the entries found as groups ``(positions, headers, vectors)``:
        records of one size decode in one numpy pass; odd ones one at a time (``headers`` None,
        ``vectors`` their StoredEmbeddings), so an error names the document."""
        doc_ids = [doc_key(d) for d in doc_ids]
        values = self._read(lambda version: self.store.entries.read(version, doc_ids))
        version = self.version
        by_size: dict[int, list[int]] = {}
        for i, raw in enumerate(values):
            if raw is not None:
                by_size.setdefault(len(raw), []).append(i)
        groups: list[tuple[list[int], np.ndarray | None, Any]] = []
        for positions in by_size.values():
            raws = [values[i] for i in positions]
            try:
                headers, payloads = codec.decode_many(raws)  # type: ignore[arg-type]
            except codec.CodecError:
                entries = [self._decode(doc_ids[i], values[i]) for i in positions]  # type: ignore[arg-type]
                groups.append((positions, None, entries))
                continue
            foreign = self.version_id is not None and (headers["version_id"] != self.version_id).any()
            if foreign:
                i = positions[int(np.argmax(headers["version_id"] != self.version_id))]
                self._decode(doc_ids[i], values[i])  # type: ignore[arg-type] # raises, naming it
            vectors = self._vectors(
                codec.CODEC_NAMES[int(headers["codec"][0])], payloads, int(headers["dimension"][0])
            )
            groups.append((positions, headers, vectors))
        return version, groups

    def _vectors(self, codec_name: str, payloads: np.ndarray, dimension: int) -> np.ndarray:
        if codec_name == q.INT8 and self._calibration is None:
            raise codec.CodecError(f"version {self.version} has no int8 calibration")
        return q.dequantize(codec_name, payloads, self._calibration, dimension)

    def _decode(self, doc_id: str, raw: bytes) -> StoredEmbedding:
        header = codec.decode_header(raw)
        if self.version_id is not None and header.version_id != self.version_id:
            raise codec.CodecError(f"{doc_id}: record of another version ({header.version_id:#010x})")
        vector = self._vectors(header.codec, codec.decode_payload(raw, header), header.dimension)
        return StoredEmbedding(
            doc_id=doc_id,
            vector=vector,
            version=self.version,
            computed_at_s=header.computed_at,
            content_hash=header.content_hash,
            source_ms=header.source_ms,
        )

    # -- the query side ---------------------------------------------------------------------------
    def query_embedder(self) -> Embedder:
        """The model of the version read, loaded on first use: the one the pipeline recorded, the
        client's ``model``, or EA_MODEL, whichever is that version's (checked by identity)."""
        self._follow()
        if self.version not in self._embedders:
            if self.spec is None:
                raise LookupError(f"version {self.version} is not registered: its model is unknown")
            backend = backend_of(self.spec)
            given = {"backend": backend, "model": self.model} if self.model else None
            recorded = self.store.control.query_model(self.version)
            calibration = self.store.control.model_calibration(self.version)
            self._embedders[self.version] = query_embedder(
                self.spec, [given, recorded, configured_source(backend)], calibration
            )
        return self._embedders[self.version]

    def embed_query(self, text: str) -> QueryVector:
        """``text`` as a search query of the version read: its model, its query prompt."""
        embedder = self.query_embedder()
        vector = embedder.encode_queries([text])[0]
        return QueryVector(np.ascontiguousarray(vector, dtype=np.float32), self.version, text)

    def _query(self, query: str | QueryVector) -> QueryVector:
        if isinstance(query, str):
            return self.embed_query(query)
        if not isinstance(query, QueryVector):
            raise TypeError(
                f"a query is text or a QueryVector from embed_query, not {type(query).__name__}: a bare "
                "vector says nothing of the model that made it, so it is never scored"
            )
        self._follow()
        if query.version != self.version:
            raise VersionMismatch(
                f"the query vector is of version {query.version}, the entries read are of {self.version}: "
                "embed the query again with this client"
            )
        if self.spec is not None and query.vector.shape != (self.spec.dimension,):
            raise VersionMismatch(
                f"query vector of shape {query.vector.shape}, version has {self.spec.dimension}"
            )
        return query

    def _scored(
        self, query: str | QueryVector, doc_ids: Sequence[DocId]
    ) -> tuple[QueryVector, np.ndarray, np.ndarray, list[DocId]]:
        """The query, the positions of the candidates that have an entry and their vectors as
        read, all of one version, and the candidates that have none."""
        for attempt in range(2):
            vector = self._query(query)
            version, groups = self._read_many(doc_ids)
            if version == vector.version:
                break
            if not isinstance(query, str) or attempt:  # the active version switched under a text query
                raise VersionMismatch(f"entries were read from {version}, the query is of {vector.version}")
        found = [p for positions, _, _ in groups for p in positions]
        parts = [v if h is not None else np.stack([e.vector for e in v]) for _, h, v in groups]
        dim = len(vector.vector)
        matrix = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
        present = np.asarray(found, dtype=np.int64)
        if len(groups) > 1:  # keep the candidates' order
            order = np.argsort(present, kind="stable")
            present, matrix = present[order], matrix[order]
        taken = set(found)
        missing = [d for i, d in enumerate(doc_ids) if i not in taken]
        return vector, present, matrix, missing

    def rerank(
        self,
        query: str | QueryVector,
        doc_ids: Sequence[DocId],
        *,
        first_stage_scores: Sequence[float] | None = None,
        fusion: str = "cosine",
        weight: float = 0.5,
    ) -> Ranking:
        """``doc_ids`` (a first stage's candidates) ranked for ``query``, best first, as
        ``(doc_id, score)``; candidates without an entry are in ``.missing``. ``fusion``: ``cosine``
        (the vectors alone), ``rrf`` (with the first stage's order, or its scores when given) or
        ``linear`` (``weight`` times the min-max-normalized first-stage scores plus the rest times
        the normalized cosines)."""
        if first_stage_scores is not None and len(first_stage_scores) != len(doc_ids):
            raise ValueError(f"{len(first_stage_scores)} first-stage scores for {len(doc_ids)} candidates")
        vector, present, matrix, missing = self._scored(query, doc_ids)
        ids = [doc_ids[i] for i in present]
        first = (
            None if first_stage_scores is None else np.asarray(first_stage_scores, dtype=np.float64)[present]
        )
        scores = fuse(cosines(vector.vector, matrix), first, fusion, weight=weight) if ids else np.zeros(0)
        return rank(ids, scores, missing)

    def similar(self, doc_id: DocId, doc_ids: Sequence[DocId]) -> Ranking:
        """``doc_ids`` ranked by the cosine of their vectors to ``doc_id``'s (which must have an entry)."""
        entry = self.get(doc_id)
        if entry is None:
            raise LookupError(f"{doc_id} has no entry in version {self.version}")
        query = QueryVector(entry.vector, entry.version)
        return self.rerank(query, doc_ids)
