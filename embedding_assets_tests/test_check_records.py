"""After runs that overlap and end in any order, every check shows an evaluation in the UI: the
Checks tab's ``executionForLatestMaterialization``, asked of the GraphQL schema the webserver
serves, over a real code server."""

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import execute_run
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget
from dagster_graphql.test.utils import execute_dagster_graphql

from embedding_assets.defs.check_records import EVALUATED_IN
from embedding_assets.defs.partitions import NUM_SHARDS, SHARDS_TAG
from embedding_assets.defs.sensors import delta_run_requests
from embedding_assets.dev.harness import collection, load_sample, materialize
from embedding_assets.lib.sharding import shard_of

pytestmark = [pytest.mark.servers, pytest.mark.slow]

CHECKS = """
query($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) {
  ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks {
    name executionForLatestMaterialization { runId status evaluation { description
      metadataEntries { label ... on PipelineRunMetadataEntry { runId } } } } } } } } } }
"""
ASSETS = {"document_vectors": 2, "feature_store_entries": 7}  # checks of each
DEFINITIONS_NOW = """
import dagster as dg
from embedding_assets import definitions as d
from embedding_assets.defs.resources import build_resources

defs = dg.Definitions(
    assets=d.embedding_assets,
    asset_checks=[*d.embedding_checks, *d.audit_checks],
    jobs=[d.embed_documents],
    resources=build_resources(),
    executor=dg.in_process_executor,
    loggers=d.defs.loggers,
).map_asset_specs(func=d.apply_freshness_policy)
"""


def _create(instance: dg.DagsterInstance, recon: ReconstructableRepository, request: dg.RunRequest):
    """The run as the daemon creates it: its checks are planned now, at creation."""
    job = recon.get_definition().get_job("embed_documents")
    tags = {k: v for k, v in request.tags.items() if k.startswith(("dagster/", "embedding_assets/"))}
    if request.partition_key:
        tags["dagster/partition"] = request.partition_key
    return instance.create_run_for_job(job_def=job, run_config=request.run_config, tags=tags)


def _shown(context: WorkspaceProcessContext) -> dict[str, dict | None]:
    shown = {}
    for asset in ASSETS:
        data = execute_dagster_graphql(context.create_request_context(), CHECKS, {"path": [asset]}).data
        for check in data["assetNodeOrError"]["assetChecksOrError"]["checks"]:
            shown[check["name"]] = check["executionForLatestMaterialization"]
    return shown


@pytest.mark.parametrize("order", ["later_run_ends_first", "in_order"])
def test_every_check_shows_an_evaluation_after_overlapping_runs(pipeline_env, tmp_path, order):
    docs = load_sample(pipeline_env, 40)
    materialize()  # the store is full; the runs below are sensor deltas
    by_shard: dict[int, str] = {}
    for d in docs:
        by_shard.setdefault(shard_of(d["doc_id"], NUM_SHARDS), d["doc_id"])
    edited, deleted = by_shard[min(by_shard)], by_shard[max(by_shard)]
    coll = collection(pipeline_env)
    coll.update_one({"doc_id": edited}, {"$set": {"body": "Edited while a deletion ran."}})
    coll.delete_one({"doc_id": deleted})
    [change] = delta_run_requests("changes", "a", [edited])
    [deletion] = delta_run_requests("deletions", "b", [deleted])
    assert change.tags[SHARDS_TAG] != deletion.tags[SHARDS_TAG]

    # the code location's definitions with resources read now (another test of this worker may
    # have imported embedding_assets.definitions before this test's environment was set)
    module = tmp_path / "definitions_now.py"
    module.write_text(DEFINITIONS_NOW)
    recon = ReconstructableRepository.for_file(str(module), "defs")
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        first = _create(instance, recon, change)  # created first: its check records are older
        second = _create(instance, recon, deletion)
        runs = [second, first] if order == "later_run_ends_first" else [first, second]
        job = recon.get_reconstructable_job("embed_documents")
        for run in runs:
            assert execute_run(job, run, instance).success
        last = runs[-1].run_id  # its materializations are the latest

        target = ModuleTarget("embedding_assets.definitions", None, None, "embedding_assets")
        with WorkspaceProcessContext(instance, target) as context:
            shown = _shown(context)
        # a run's evaluation is recorded again only where nothing later would be: never when the
        # runs end in the order they were created
        runless = {
            key.name: sum(
                not r.run_id for r in instance.event_log_storage.get_asset_check_execution_history(key, 50)
            )
            for key in recon.get_definition()
            .get_job("embed_documents")
            .asset_layer.asset_graph.asset_check_keys
        }
    assert set(runless) == set(shown)
    assert set(runless.values()) == ({1} if order == "later_run_ends_first" else {0}), runless
    assert len(shown) == sum(ASSETS.values())
    for name, execution in shown.items():
        assert execution is not None, f"{name} shows Not Evaluated after runs that ended {order}"
        assert execution["status"] in ("SUCCEEDED", "FAILED"), (name, execution)
        evaluated_in = {e["label"]: e.get("runId") for e in execution["evaluation"]["metadataEntries"]}.get(
            EVALUATED_IN
        )
        # the run that materialized last evaluated it (recorded again if its record is older)
        assert last in (execution["runId"], evaluated_in), (name, execution)
