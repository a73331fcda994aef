"""Helpers that materialize the asset graph in process, as a backfill or a UI click would."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
import pymongo

from embedding_assets.defs.assets import embedding_assets
from embedding_assets.defs.partitions import shard_partitions
from embedding_assets.defs.resources import build_resources
from embedding_assets.lib import corpus

ALL_KEYS = shard_partitions.get_partition_keys()


def materialize(keys: Sequence[str] | None = None) -> dg.ExecuteInProcessResult:
    """One run over ``keys`` (default: every shard) with resources read from the environment now."""
    keys = list(keys or ALL_KEYS)
    kwargs: dict = {}
    if len(keys) == 1:
        kwargs["partition_key"] = keys[0]
    else:
        kwargs["tags"] = {
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        }
    return dg.materialize(
        embedding_assets,
        resources=build_resources(),
        instance=dg.DagsterInstance.ephemeral(),
        **kwargs,
    )


def collection(env: dict[str, str]) -> pymongo.collection.Collection:
    client = pymongo.MongoClient(env["MONGO_URI"], tz_aware=True)
    return client[env["MONGO_DB"]][env["MONGO_COLLECTION"]]


def load_sample(env: dict[str, str], n: int, extra: Sequence[dict] = ()) -> list[dict]:
    docs = list(corpus.generate_documents(n)) + list(extra)
    corpus.load_into(collection(env), docs)
    return docs


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        m = event.materialization
        if m.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in m.metadata.items()}
    raise KeyError(asset)
