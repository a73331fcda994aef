"""The code location: ``dagster dev -m embedding_assets.definitions``."""

from __future__ import annotations

import dagster as dg

from embedding_assets.defs.assets import embedding_assets
from embedding_assets.defs.resources import build_resources

embed_all = dg.define_asset_job(
    "embed_documents",
    selection=dg.AssetSelection.assets(*embedding_assets),
    description="Snapshot, chunk, embed and publish the selected shards.",
)

defs = dg.Definitions(assets=embedding_assets, jobs=[embed_all], resources=build_resources())
