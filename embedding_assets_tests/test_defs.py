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
    assert {"source", "feature_store", "embedding_model", "shard_state"} <= set(job.resource_defs)


def test_shard_state_has_one_owner():
    """No asset hands frames to an IO manager or loads its upstream through one: each depends on
    its upstream and reads and writes shards through the shard_state resource."""
    graph = defs.resolve_asset_graph()
    for name in ASSETS:
        assets_def = graph.get(dg.AssetKey(name)).assets_def
        # deps only: Nothing-typed inputs, which no IO manager loads
        assert all(i.dagster_type.is_nothing for i in assets_def.op.ins.values()), name
        assert "shard_state" in assets_def.required_resource_keys or name == "feature_store_entries"
        # only Dagster's default key, which a MaterializeResult never writes through
        assert {k for k in assets_def.required_resource_keys if "io_manager" in k} <= {"io_manager"}
    assert "shard_state" in graph.get(dg.AssetKey("feature_store_entries")).assets_def.required_resource_keys
    assert not [k for k in defs.resources if "io_manager" in k]


def test_sensor_runs_are_the_whole_job_so_its_snapshot_never_changes():
    """A run request naming an asset or check selection, even of everything, is a subset job with
    a snapshot id of its own; the sensors' runs name none, and the job alone runs the four assets
    and all nine checks (the gates and the store audit)."""
    import subprocess
    import sys

    from embedding_assets.defs.sensors import delta_run_requests

    for kind in ("changes", "deletions", "repair"):
        for request in delta_run_requests(kind, "p", ["doc-000001", "doc-000777"]):
            assert request.asset_selection is None and request.asset_check_keys is None, kind
    job = defs.get_job_def("embed_documents")
    checks = {k.name for k in job.asset_layer.asset_graph.asset_check_keys}
    assert checks == {
        "vector_validity", "error_rate", "retrieval_quality", "coverage", "staleness", "orphans",
        "failed_documents", "entry_validity", "control_plane",
    }  # fmt: skip
    # and the job's snapshot is the same in every process loading the same settings (with the two
    # gates as single checks, Dagster ordered them by set iteration: loads differed one time in two)
    code = (
        "from embedding_assets.definitions import defs; from dagster._core.snap import JobSnap; "
        "print(JobSnap.from_job_def(defs.get_job_def('embed_documents')).snapshot_id)"
    )
    command = [sys.executable, "-c", code]
    loads = [
        subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1] for _ in "abcd"
    ]
    assert len(set(loads)) == 1 and len(loads[0]) == 40, loads


def _tick_gaps(interval: int, offsets: list[float], loop: float) -> list[float]:
    """Dagster's sensor daemon as it decides: a loop every ``loop`` seconds, this sensor evaluated
    ``offset`` seconds into it (after the sensors before it), and only when its last tick started
    at least ``interval`` seconds before."""
    starts: list[float] = []
    for i, offset in enumerate(offsets):
        now = i * loop + offset
        if not starts or now - starts[-1] >= interval:
            starts.append(now)
    return [b - a for a, b in itertools.pairwise(starts)]


def test_change_sensors_tick_every_daemon_loop_not_every_other():
    """EA_SENSOR_SECONDS=5 meant ticks 9 to 11 s apart half the time under `dagster dev`: the
    daemon loops every 5 s, and a tick that started late in one loop made the next skip it."""
    import random

    from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME as LOOP

    from embedding_assets.defs.sensors import (
        SENSOR_SECONDS,
        document_changes_sensor,
        document_deletions_sensor,
        minimum_interval,
    )

    rng = random.Random(7)
    offsets = [rng.uniform(0.1, 1.5) for _ in range(400)]
    assert max(_tick_gaps(LOOP, offsets, LOOP)) >= 2 * LOOP - 1.5  # the interval as given skips loops
    for seconds in range(1, 31):
        gaps = _tick_gaps(minimum_interval(seconds), offsets, LOOP)
        loops = max(1, -(-seconds // LOOP))  # the daemon's loops the setting spans
        assert max(gaps) <= loops * LOOP + 1.5, seconds
        assert min(gaps) >= min(seconds, LOOP) - 1.5, seconds
    for sensor in (document_changes_sensor, document_deletions_sensor):
        assert sensor.minimum_interval_seconds == minimum_interval(SENSOR_SECONDS)
