"""The embedder of a stored version, found for its queries, and refused unless it is that version's.

A query vector is comparable with stored vectors only when it comes from the same weights, with
the same prompts, at the same dimension. The pipeline records where it loaded its model from
(``source_of``); a client tries that, then whatever it is told or configured with, and takes the
first candidate whose identity equals the version's (``identity``): never a near miss.
"""

from __future__ import annotations

from pathlib import Path

from embedding_assets import settings
from embedding_assets.lib.protocols import Embedder
from embedding_assets.lib.runtimes import parse_label
from embedding_assets.lib.versioning import EmbeddingSpec


class QueryModelMismatch(LookupError):
    """No model at hand embeds queries as the version's documents were embedded."""


def backend_of(spec: EmbeddingSpec) -> str:
    if spec.precision == "remote":
        return "remote"
    return "static" if spec.model.startswith("static-") else "transformer"


def source_of(embedder: object) -> dict[str, str]:
    """What a client needs to load ``embedder`` again: its backend and its folder."""
    from embedding_assets.embedders.remote import RemoteEmbedder
    from embedding_assets.embedders.static import StaticEmbedder

    if isinstance(embedder, StaticEmbedder):
        return {"backend": "static", "model": str(embedder.path)}
    if isinstance(embedder, RemoteEmbedder):
        return {"backend": "remote", "model": embedder.model_name, "served_model": embedder.served_model}
    return {"backend": "transformer", "model": str(getattr(embedder, "model_name", ""))}


def identity(embedder: Embedder) -> tuple[str, int, str, str, str]:
    return (
        embedder.fingerprint,
        embedder.dimension,
        embedder.query_prompt,
        embedder.document_prompt,
        embedder.precision,
    )


def spec_identity(spec: EmbeddingSpec) -> tuple[str, int, str, str, str]:
    return (spec.model_fingerprint, spec.dimension, spec.query_prompt, spec.document_prompt, spec.precision)


def build(
    source: dict[str, str], spec: EmbeddingSpec | None = None, calibration: list[str] | None = None
) -> Embedder:
    """An embedder for queries from a recorded or configured source (nothing loads yet); a
    transformer runs through the runtime and precision ``spec`` records, as its documents did."""
    from embedding_assets.embedders.remote import RemoteEmbedder
    from embedding_assets.embedders.sentence_transformer import SentenceTransformerEmbedder
    from embedding_assets.embedders.static import StaticEmbedder

    backend, model = source["backend"], source.get("model", "")
    if backend == "static":
        folder = Path(model)
        if (folder / "config.json").exists():
            return StaticEmbedder.from_folder(folder)
        return StaticEmbedder(model or None, cache_dir=settings.static_dir())
    if backend == "remote":
        urls = [u.strip() for u in str(settings.get("EA_EMBED_URLS")).split(",") if u.strip()]
        return RemoteEmbedder(
            model,
            urls,
            served_model=source.get("served_model") or str(settings.get("EA_EMBED_MODEL")),
            api_key=str(settings.get("EA_EMBED_API_KEY")),
        )
    if spec is None:
        return SentenceTransformerEmbedder(model or None, device=str(settings.get("EA_DEVICE")))
    choice = parse_label(spec.precision)
    if choice.runtime == "torch":
        return SentenceTransformerEmbedder(
            model or None, device=str(settings.get("EA_DEVICE")), precision=choice.precision
        )
    from embedding_assets.embedders.packaged import resolve
    from embedding_assets.embedders.runtime_choice import build as build_runtime

    return build_runtime(
        resolve(model or None), choice, threads=int(settings.get("EA_THREADS")), calibration=calibration
    )


def configured_source(backend: str) -> dict[str, str]:
    """The source this machine's settings name (EA_MODEL), for ``backend``."""
    return {"backend": backend, "model": str(settings.get("EA_MODEL"))}


def query_embedder(
    spec: EmbeddingSpec, sources: list[dict[str, str] | None], calibration: list[str] | None = None
) -> Embedder:
    """The first of ``sources`` whose embedder is the version's; ``QueryModelMismatch`` if none.
    ``calibration``: the windows a statically quantized version was calibrated on."""
    tried = []
    for source in sources:
        if not source:
            continue
        try:
            embedder = build(source, spec, calibration)
            found = identity(embedder)
        except (OSError, ValueError, ImportError) as err:
            tried.append(f"{source}: {type(err).__name__}: {err}")
            continue
        if found == spec_identity(spec):
            return embedder
        tried.append(
            f"{source}: fingerprint {found[0]}, dimension {found[1]}, prompts {found[2:4]!r}, "
            f"runtime {found[4]}"
        )
    raise QueryModelMismatch(
        f"no model at hand embeds queries for version {spec.tag} (fingerprint {spec.model_fingerprint}, "
        f"dimension {spec.dimension}, prompts {(spec.query_prompt, spec.document_prompt)!r}); tried "
        + ("; ".join(tried) or "nothing")
        + ". Give the client the version's model folder (EmbeddingClient(..., model=PATH) or EA_MODEL)"
    )
