"""The Dagster UI and daemon of `embedding-assets dev`, run as a deployment runs them.

One code server (``dagster code-server start``) that the webserver and the daemon reach through a
workspace file, each in its own process group, all stopped on the way out (not ``dagster dev``,
which warns about its own successor and outlives a SIGTERM). Left to start code servers of their
own, the webserver and the daemon each replaced theirs at every reload, and each old one logged
"No heartbeat received" as it went (22 times in 25 minutes on a loaded machine).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from embedding_assets.dev.servers import free_port, stop_groups


def run_ui(state: Path, env: dict[str, str], host: str, port: int) -> int:
    """Runs the code server, webserver and daemon with ``env`` until SIGINT or SIGTERM."""
    bin_dir = Path(sys.executable).parent
    logs = state / "dev-logs"
    logs.mkdir(parents=True, exist_ok=True)
    code_port = free_port()
    workspace = state / "dev-workspace.yaml"
    workspace.write_text(
        "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
        f"      port: {code_port}\n      location_name: embedding_assets\n"
    )
    commands = {
        "code-server": [
            str(bin_dir / "dagster"), "code-server", "start", "-m", "embedding_assets.definitions",
            "-h", "127.0.0.1", "-p", str(code_port),
        ],
        "webserver": [
            str(bin_dir / "dagster-webserver"), "-w", str(workspace),
            "-h", host, "-p", str(port),
        ],
        "daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)],
    }  # fmt: skip
    children = []
    stopping = {"signal": 0}

    def stop(signum: int, _frame: object) -> None:
        stopping["signal"] = signum

    # the instance's storage made once, before two processes race to create its tables
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        start_run_retry_cursors(instance)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for name, command in commands.items():
            with (logs / f"{name}.log").open("ab") as log:
                children.append(
                    subprocess.Popen(
                        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
            if name == "code-server" and not code_server_answers(code_port, children[0]):
                print(f"the code server did not start; see {logs / 'code-server.log'}")
                return 1
        print(f"UI: http://{host}:{port}  (logs in {logs}; Ctrl-C stops everything)")
        sys.stdout.flush()
        while not stopping["signal"]:
            ended = [c for c in children if c.poll() is not None]
            if ended:
                print(f"{ended[0].args[0]} exited with {ended[0].returncode}; see {logs}")
                return 1
            time.sleep(0.5)
        return 0
    finally:
        stop_groups(*(c for c in children if c.poll() is None))
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def code_server_answers(port: int, process: subprocess.Popen, timeout: float = 180.0) -> bool:
    """Waits until the code server on ``port`` answers (it loads the definitions first)."""
    from dagster._grpc.client import DagsterGrpcClient

    client = DagsterGrpcClient(port=port, host="127.0.0.1")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            client.ping("dev")
            return True
        except Exception:
            time.sleep(0.5)
    return False


def start_run_retry_cursors(instance: object) -> None:
    """Where the daemon's run-retry consumer starts on a new instance: now, which is what it does
    by itself, but with a warning in the log of every fresh `dev`. The key is the daemon's
    (dagster/_daemon/auto_run_reexecution/event_log_consumer.py)."""
    import dagster as dg

    storage = instance.daemon_cursor_storage  # type: ignore[attr-defined]
    kinds = (dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_SUCCESS)
    keys = [f"EVENT_LOG_CONSUMER_CURSOR-{kind.value}" for kind in kinds]
    present = storage.get_cursor_values(set(keys))
    latest = instance.event_log_storage.get_maximum_record_id() or 0  # type: ignore[attr-defined]
    missing = {k: str(latest) for k in keys if k not in present}
    if missing:
        storage.set_cursor_values(missing)
