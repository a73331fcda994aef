import itertools

import dagster as dg

from embedding_assets.definitions import defs
from embedding_assets.defs.partitions import NUM_SHARDS

ASSETS = ["document_snapshots", "chunked_text", "document_vectors", "feature_store_entries"]


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == set(ASSETS)


def test_graph_is_a_chain_of_shard_partitioned_assets():
    graph = defs.resolve_asset_graph()
    for upstream, downstream in itertools.pairwise(ASSETS):
        node = graph.get(dg.AssetKey(downstream))
        assert dg.AssetKey(upstream) in node.parent_keys
    for name in ASSETS:
        node = graph.get(dg.AssetKey(name))
        assert node.partitions_def.get_partition_keys()[0] == "shard-00"
        assert len(node.partitions_def.get_partition_keys()) == NUM_SHARDS
        assert node.backfill_policy == dg.BackfillPolicy.single_run()


def test_job_and_resources_resolve():
    job = defs.resolve_job_def("embed_documents")
    assert {"source", "feature_store", "embedding_model", "parquet_io_manager"} <= set(job.resource_defs)
