"""Where the commands find a deployment: its servers and its Dagster instance.

Servers: the environment's URLs (``MONGO_URI``, ``REDIS_URL``), else the embedded servers a
running `dev` or `demo` holds on the state folder (dev/servers.py, ``FolderLease``), else embedded
servers started for the command. Instance: ``DAGSTER_HOME``, else the state folder's local one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from embedding_assets import settings

if TYPE_CHECKING:
    from embedding_assets.stores.feature_store import FeatureStore

# The local instance of demo and dev: SQLite storage, the deployment's concurrency rules.
LOCAL_INSTANCE_YAML = """\
concurrency:
  runs:
    max_concurrent_runs: 4
    # change and repair runs executing at once: a sensor's own limit (MAX_DELTA_RUNS_IN_FLIGHT),
    # so that a tick's several ranges never take every place: a deletion run always finds one
    tag_concurrency_limits:
      - key: embedding_assets/trigger
        value: changes
        limit: 2
      - key: embedding_assets/trigger
        value: repair
        limit: 2
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
    # a run dequeued while the code server restarts waits for it (10 x 30 s) instead of failing
    max_user_code_failure_retries: 10
    user_code_failure_retry_delay: 30
telemetry:
  enabled: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 300
  poll_interval_seconds: 30
run_retries:
  enabled: true
  max_retries: 2
retention:
  schedule:
    purge_after_days: 30
  sensor:
    purge_after_days:
      skipped: 1
      failure: 14
      success: 7
"""


def state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir).resolve() if args.state_dir else settings.state_dir()


def use_state(state: Path) -> None:
    """Point Dagster and the shard state at the state directory, unless DAGSTER_HOME is set."""
    os.environ["EA_STATE_DIR"] = str(state)
    home_given = settings.dagster_home()
    if home_given:
        Path(home_given).mkdir(parents=True, exist_ok=True)
        return
    home = state / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = home / "dagster.yaml"
    if not instance_yaml.exists() or instance_yaml.read_text() != LOCAL_INSTANCE_YAML:
        instance_yaml.write_text(LOCAL_INSTANCE_YAML)  # ours: a new release's settings apply
    os.environ["DAGSTER_HOME"] = str(home)


@contextlib.contextmanager
def feature_store(args: argparse.Namespace) -> Iterator[FeatureStore]:
    """The feature store of REDIS_URL, or of the embedded valkey under the state directory."""
    from embedding_assets.dev.servers import EmbeddedServers
    from embedding_assets.stores.feature_store import FeatureStore

    # these commands read Redis only: no MongoDB is started for them
    with EmbeddedServers(
        state_dir(args), {"MONGO_URI": str(settings.get("MONGO_URI")) or "unused"}
    ) as servers:
        yield FeatureStore.from_url(servers.redis_url)  # type: ignore[arg-type]
