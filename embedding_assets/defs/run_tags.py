"""What a run keeps in its tags (the version its chunks were made for, and when it read MongoDB),
and what its job holds."""

import dagster as dg

from embedding_assets.defs.resources import EmbeddingModelResource
from embedding_assets.lib.versioning import EmbeddingSpec

VERSION_TAG = "embedding_assets/version"
# When the run's document_snapshots step read MongoDB (feature store seconds): what the run saw
# absent, it saw absent then, and its deletions are ordered by it (lib/merge.py, redis_entries).
READ_TAG = "embedding_assets/read_at"


def read_time(context: dg.AssetExecutionContext) -> int:
    """When this run read MongoDB (READ_TAG), 0 where it did not (no snapshot step in it)."""
    run = context.instance.get_run_by_id(context.run.run_id)
    return int(run.tags.get(READ_TAG, 0)) if run else 0


def stamp_version(context: dg.AssetExecutionContext, spec: EmbeddingSpec) -> None:
    """The run's version tag, computed once (by chunked_text) and kept on the run."""
    context.instance.add_run_tags(context.run.run_id, {VERSION_TAG: spec.tag})


def run_spec(context: dg.AssetExecutionContext, model: EmbeddingModelResource) -> EmbeddingSpec:
    """This step's spec, refused if it is not the version the run's chunks were made for
    (a model folder or setting changed between steps)."""
    spec = model.spec()
    run = context.instance.get_run_by_id(context.run.run_id)
    stamped = run.tags.get(VERSION_TAG) if run else None
    if stamped is None:
        stamp_version(context, spec)
    elif stamped != spec.tag:
        raise dg.Failure(
            f"this step computes version {spec.tag}, but the run's chunks are of {stamped}: the model "
            "or an embedding setting changed during the run; run it again"
        )
    return spec


def run_materializes(context: dg.OpExecutionContext | dg.AssetExecutionContext, key: dg.AssetKey) -> bool:
    """Whether this run's job (a subset, where assets were selected) materializes ``key``: an
    asset job of checks alone materializes nothing."""
    return key in context.job_def.asset_layer.selected_asset_keys
