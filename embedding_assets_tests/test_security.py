"""Only those who should: Redis ACL users on a real server, TLS with certificates made here,
MongoDB with a user that may only read and watch its collection, secrets kept out of sight."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pymongo
import pytest
import redis

from embedding_assets.cli import main
from embedding_assets.client import EmbeddingClient
from embedding_assets.defs.audit import store_repair_sensor
from embedding_assets.defs.sensors import document_changes_sensor, document_deletions_sensor
from embedding_assets.dev.harness import (
    Daemon,
    audit,
    collection,
    differences,
    load_sample,
    materialize,
    sweep_request,
)
from embedding_assets.dev.servers import SecantusProcess
from embedding_assets.lib import acl
from embedding_assets.retrying import is_transient
from embedding_assets.sources.mongo import MongoDocumentSource
from embedding_assets.stores.feature_store import FeatureStore, TLSRefused
from embedding_assets.stores.locks import RedisLocks
from embedding_assets_tests.secure_servers import (
    WATCHER,
    CommandRecorder,
    RedisServer,
    make_certificates,
    redis_binary,
    valkey_binary,
    watcher_line,
)

pytestmark = pytest.mark.servers

PASSWORDS = {"pipeline": "pipe-Secret-1", "reader": "read-Secret-2", "admin": "admin-Secret-3"}
MONGO_PASSWORD = "mongo-Secret-4"


def acl_server(
    folder: Path, binary: str | None = None, config: tuple[str, ...] = (), **kwargs: object
) -> RedisServer:
    """A server loaded with the shipped rules (with this test's passwords) and the watcher."""
    folder.mkdir(parents=True, exist_ok=True)
    users = folder / "users.acl"
    users.write_text(acl.acl_file(PASSWORDS) + watcher_line() + "\n")
    return RedisServer(binary or valkey_binary(), folder, [f"aclfile {users}", *config], **kwargs)  # type: ignore[arg-type]


def as_user(server: RedisServer, user: str, db: int = 0, query: str | None = None) -> str:
    return server.url(user, PASSWORDS[user], db, query)


def denials(server: RedisServer) -> list[dict]:
    watcher = redis.Redis.from_url(server.url(*WATCHER))
    return [e for e in watcher.acl_log() if e.get("username") != WATCHER[0]]


def _pipeline_work(env: dict[str, str], owner_env: dict[str, str], url: str, watcher: redis.Redis) -> None:
    """What the Dagster runs and sensors do: a sweep, edits and deletes through the sensors, the
    store audit and its repair, shard locks. ``owner_env``: where the test writes documents;
    ``watcher``: the recorder's own client, for the test's own commands (a client made here and
    dropped at once could close before the recorder asks whose its connection was, and its
    commands would be counted as the pipeline's)."""
    # with one input the pipeline refuses: its dead letter is recorded, and read back by later runs
    docs = load_sample(owner_env, 16, [{"doc_id": "security-no-text", "title": "", "body": " "}])
    daemon = Daemon()
    daemon.run([sweep_request()])
    assert daemon.tick(document_deletions_sensor) == []  # starts the stream
    daemon.tick(document_changes_sensor)
    coll = collection(owner_env)
    coll.delete_one({"doc_id": docs[0]["doc_id"]})
    coll.update_one(
        {"doc_id": docs[1]["doc_id"]},
        {"$set": {"body": "Edited by the security test.", "modified_at": dt.datetime.now(dt.UTC)}},
    )
    assert daemon.sync(document_deletions_sensor, document_changes_sensor) >= 2
    store = FeatureStore.from_url(url)
    lost = store.entries.location(store.control.active_version(), docs[2]["doc_id"])
    watcher.hdel(*lost)  # evicted: the audit finds it, the repair puts it back
    audit(daemon.instance, run_config={"ops": {}})
    daemon.sync(store_repair_sensor)
    with RedisLocks(url, "security-test").hold("shard-00"):
        pass


def _reader_work(env: dict[str, str], url: str, capsys: pytest.CaptureFixture) -> None:
    ids = [d["doc_id"] for d in collection(env).find({}, {"doc_id": 1}).limit(5)]
    client = EmbeddingClient.from_url(url, refresh_seconds=0)
    assert client.get(ids[0]) is not None
    assert all(e is not None for e in client.get_many(ids))
    assert len(client.rerank("security", ids)) == len(ids)
    assert len(client.similar(ids[0], ids)) == len(ids)
    for argv in (["lookup", str(ids[0]), "--neighbours", "2"], ["search", "edited"], ["versions"],
                 ["dead-letters"], ["audit"]):  # fmt: skip
        assert main(argv) == 0, capsys.readouterr()
    capsys.readouterr()


def _admin_work(
    env: dict[str, str], url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    store = FeatureStore.from_url(url)
    old = store.control.active_version()
    monkeypatch.setenv("EA_TITLE_REPEAT", "1")  # a chunking change: a new version, built by the admin
    assert materialize().success
    new = next(v for v in store.control.versions() if v != old)
    assert main(["activate", new]) == 0, capsys.readouterr()
    monkeypatch.setenv("EA_CLEANUP_GRACE_SECONDS", "0")
    assert main(["cleanup", old]) == 0, capsys.readouterr()
    capsys.readouterr()


def test_each_user_does_its_work_with_the_shipped_rules_and_they_name_exactly_the_commands_sent(
    pipeline_env, tmp_path, monkeypatch, capsys
):
    """The rules in lib/acl.py (and deploy/redis/users.acl) are the commands the code sends:
    each user's work runs on a real server loaded with them, no command is refused, and every
    command a rule grants was sent by that user's work."""
    with acl_server(tmp_path / "valkey") as server:
        recorder = CommandRecorder(server.url(*WATCHER))
        try:
            for user, work in (
                (
                    "pipeline",
                    lambda url: _pipeline_work(pipeline_env, pipeline_env, url, recorder.marker),
                ),
                ("reader", lambda url: _reader_work(pipeline_env, url, capsys)),
                ("admin", lambda url: _admin_work(pipeline_env, url, monkeypatch, capsys)),
            ):
                url = as_user(server, user)
                monkeypatch.setenv("REDIS_URL", url)
                monkeypatch.setenv(
                    "EA_REDIS_TUNE", "0"
                )  # with users, the server's config sets listpack limits
                with recorder.recording(user):
                    work(url)
                assert denials(server) == [], user
        finally:
            recorder.close()
    for user, role in acl.ROLES.items():
        sent, granted = recorder.commands[user], set(role.commands)
        assert sent <= granted, f"{user} sent {sorted(sent - granted)}, which its rules lack"
        unsent = granted - sent
        assert unsent <= set(acl.UNRECORDED), (
            f"{user}'s rules grant {sorted(unsent - set(acl.UNRECORDED))}, never sent"
        )


@pytest.mark.parametrize("refused", ["evalsha", "hset"])
def test_a_refused_command_fails_the_run_in_one_line_naming_the_user_and_the_command_and_loses_nothing(
    pipeline_env, tmp_path, monkeypatch, refused
):
    """The pipeline's user loses a command it needs (EVALSHA, or HSET inside the write script):
    the run fails with one line naming the user and the command; once the rule is back, the next
    run writes every document."""
    with acl_server(tmp_path / "valkey") as server:
        monkeypatch.setenv("REDIS_URL", as_user(server, "pipeline"))
        monkeypatch.setenv("EA_REDIS_TUNE", "0")
        load_sample(pipeline_env, 12)
        watcher = redis.Redis.from_url(server.url(*WATCHER))
        watcher.execute_command("ACL", "SETUSER", "pipeline", f"-{refused}")
        result = materialize(raise_on_error=False)
        assert not result.success
        failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        message = failures[0].step_failure_data.error.message.strip()
        assert f"Redis user 'pipeline' may not run {refused.upper()}" in message, message
        assert len(message.splitlines()) == 1
        watcher.execute_command("ACL", "SETUSER", "pipeline", f"+{refused}")
        assert materialize().success
        store = FeatureStore.from_url(as_user(server, "admin"))
        found = differences(collection(pipeline_env), store, store.control.active_version())
        assert found.lost == found.stale == found.extra == ()


def test_the_reader_cannot_write_or_delete_and_the_pipeline_cannot_flush_reconfigure_or_list(
    pipeline_env, tmp_path, monkeypatch, capsys
):
    with acl_server(tmp_path / "valkey") as server:
        monkeypatch.setenv("REDIS_URL", as_user(server, "pipeline"))
        monkeypatch.setenv("EA_REDIS_TUNE", "0")
        load_sample(pipeline_env, 8)
        assert materialize().success
        reader = FeatureStore.from_url(as_user(server, "reader"))
        version = reader.control.active_version()
        key, field = reader.entries.location(version, "doc-000001")
        writes = [
            ("HSET", lambda: reader.client.hset(key, field, b"x")),
            ("HDEL", lambda: reader.client.hdel(key, field)),
            ("DEL", lambda: reader.client.delete(key)),
            ("UNLINK", lambda: reader.client.unlink(key)),
            ("SET", lambda: reader.client.set("doc_emb_meta:active", "forged")),
            ("EXPIRE", lambda: reader.client.expire(key, 1)),
            ("EVALSHA", lambda: reader.entries.write_if_not_older(version, ["doc-000001"], [b"x" * 40])),
            ("FLUSHALL", lambda: reader.client.flushall()),
        ]
        for command, write in writes:
            with pytest.raises(
                redis.exceptions.NoPermissionError, match=f"user 'reader' may not run {command}"
            ):
                write()
        assert reader.entries.read_one(version, "doc-000001") is not None  # still there, unchanged
        monkeypatch.setenv("REDIS_URL", as_user(server, "reader"))
        capsys.readouterr()
        assert main(["activate", version, "--force"]) == 2  # an operator's command with the reader's user
        said = capsys.readouterr().err.strip().splitlines()
        assert len(said) == 1 and "Redis user 'reader' may not run" in said[0], said

        pipeline = FeatureStore.from_url(as_user(server, "pipeline")).client
        for command, call in [
            ("FLUSHALL", pipeline.flushall),
            ("FLUSHDB", pipeline.flushdb),
            ("CONFIG SET", lambda: pipeline.config_set("maxmemory-policy", "allkeys-lru")),
            ("CONFIG GET", lambda: pipeline.config_get("requirepass")),
            ("KEYS", lambda: pipeline.keys("*")),
            ("ACL SETUSER", lambda: pipeline.acl_setuser("pipeline", enabled=True, commands=["+@all"])),
            ("SHUTDOWN", lambda: pipeline.shutdown(nosave=True)),
        ]:
            with pytest.raises(
                redis.exceptions.NoPermissionError, match=f"user 'pipeline' may not run {command}"
            ):
                call()
        for other in ("other:key", "session:1"):  # keys that are not the store's
            with pytest.raises(redis.exceptions.NoPermissionError, match="on one of its keys"):
                pipeline.set(other, "x")
        assert FeatureStore.from_url(as_user(server, "reader")).entries.read_one(version, "doc-000001")


def test_a_password_rotates_without_losing_a_write(pipeline_env, tmp_path, monkeypatch):
    """Redis keeps several passwords per user: add the new one, move the deployment to it, then
    remove the old one (docs/operations.md, Security). Writes go on throughout; the old password
    is then refused in one line that shows no password."""
    with acl_server(tmp_path / "valkey") as server:
        monkeypatch.setenv("EA_REDIS_TUNE", "0")
        old_url, new_url = as_user(server, "pipeline"), server.url("pipeline", "rotated-Secret-5")
        docs = load_sample(pipeline_env, 10)
        monkeypatch.setenv("REDIS_URL", old_url)
        assert materialize().success
        running = FeatureStore.from_url(old_url)  # a process that started before the rotation
        watcher = redis.Redis.from_url(server.url(*WATCHER))
        watcher.execute_command("ACL", "SETUSER", "pipeline", ">rotated-Secret-5")
        coll = collection(pipeline_env)
        coll.update_one({"doc_id": docs[0]["doc_id"]}, {"$set": {"body": "Written during the rotation."}})
        assert materialize().success  # still on the old password: both are valid now
        monkeypatch.setenv("REDIS_URL", new_url)
        coll.update_one({"doc_id": docs[1]["doc_id"]}, {"$set": {"body": "Written after the switch."}})
        assert materialize().success
        watcher.execute_command("ACL", "SETUSER", "pipeline", f"<{PASSWORDS['pipeline']}")
        assert running.control.active_version()  # an open connection stays authenticated
        monkeypatch.setenv("REDIS_URL", old_url)
        result = materialize(raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        message = failure.step_failure_data.error.message
        assert "refused the credentials" in message and PASSWORDS["pipeline"] not in message
        assert "pipeline:***@" in message
        store = FeatureStore.from_url(new_url)
        found = differences(coll, store, store.control.active_version())
        assert found.lost == found.stale == found.extra == ()


def _mongo_with_users(
    folder: Path, certs: dict[str, Path], database: str
) -> tuple[SecantusProcess, dict[str, str]]:
    """SecantusDB over TLS (client certificates required) with authentication on: ``owner`` may
    write the collection (it loads the documents), ``pipeline`` holds the one role the pipeline
    needs: find and changeStream on it (docs/operations.md, Security)."""
    client_pem = folder / "client.pem"
    folder.mkdir(parents=True, exist_ok=True)
    client_pem.write_text(certs["client"].read_text() + certs["client.key"].read_text())
    tls = ["--tls-cert-file", str(certs["server"]), "--tls-key-file", str(certs["server.key"])]
    tls += ["--tls-ca-file", str(certs["ca"]), "--tls-require-client-cert"]
    tls_uri = f"tls=true&tlsCAFile={certs['ca']}&tlsCertificateKeyFile={client_pem}"
    server = SecantusProcess(folder / "data", options=tls, uri_options=tls_uri)
    server.start()
    setup = pymongo.MongoClient(server.uri)
    db = setup[database]
    db.command("createRole", "embeddingPipeline", roles=[],
               privileges=[{"resource": {"db": database, "collection": "documents"},
                            "actions": ["find", "changeStream"]}])  # fmt: skip
    db.command("createUser", "pipeline", pwd=MONGO_PASSWORD, roles=["embeddingPipeline"])
    db.command("createUser", "owner", pwd="owner-Secret", roles=["readWrite"])
    setup.close()
    server.stop()
    server.options = [*tls, "--auth"]
    server.uri_options = f"{tls_uri}&authSource={database}"
    server.start()
    base = f"127.0.0.1:{server.port}/{database}?directConnection=true&{server.uri_options}"
    return server, {
        "pipeline": f"mongodb://pipeline:{MONGO_PASSWORD}@{base}",
        "owner": f"mongodb://owner:owner-Secret@{base}",
    }


@pytest.mark.skipif(
    redis_binary() is None, reason="the machine's redis-server (built with TLS) is not installed"
)
def test_the_pipeline_and_readers_work_over_tls_with_client_certificates_and_a_read_only_mongodb_user(
    pipeline_env, tmp_path, monkeypatch, capsys
):
    """Redis 7 with TLS only, client certificates required, the shipped ACL users; SecantusDB
    with TLS, client certificates and SCRAM users; the pipeline's MongoDB user may only find and
    watch: the sweep, the change and delete sensors, the audit and its repair all run, readers
    read, and the pipeline's user cannot write to MongoDB."""
    certs = make_certificates(tmp_path / "certs")
    database = pipeline_env["MONGO_DB"]
    mongo, users = _mongo_with_users(tmp_path / "mongo", certs, database)
    query = (
        f"ssl_cert_reqs=required&ssl_ca_certs={certs['ca']}"
        f"&ssl_certfile={certs['client']}&ssl_keyfile={certs['client.key']}"
    )
    tls = [f"tls-cert-file {certs['server']}", f"tls-key-file {certs['server.key']}"]
    tls += [f"tls-ca-cert-file {certs['ca']}", "tls-auth-clients yes"]
    try:
        with acl_server(tmp_path / "redis", redis_binary(), tuple(tls), tls=True, query=query) as server:
            env = {**pipeline_env, "MONGO_URI": users["pipeline"], "REDIS_URL": as_user(server, "pipeline"),
                   "EA_REDIS_TUNE": "0"}  # fmt: skip
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            owner_env = {**env, "MONGO_URI": users["owner"]}  # the test's own edits, as the owner
            _pipeline_work(env, owner_env, env["REDIS_URL"], redis.Redis.from_url(server.url(*WATCHER)))
            monkeypatch.setenv("REDIS_URL", as_user(server, "reader"))
            _reader_work(owner_env, as_user(server, "reader"), capsys)
            assert denials(server) == []

            pipeline_user = pymongo.MongoClient(users["pipeline"])[database]["documents"]
            with pytest.raises(pymongo.errors.OperationFailure, match="not authorized"):
                pipeline_user.insert_one({"doc_id": "written by the pipeline's user"})

            # a certificate that does not verify: refused at once, in one line, never retried
            forged = as_user(server, "reader").replace(str(certs["ca"]), str(certs["other-ca"]))
            with pytest.raises(TLSRefused, match=r"does not verify against .*other-ca.crt"):
                FeatureStore.from_url(forged)
            monkeypatch.setenv("REDIS_URL", forged)
            assert main(["versions"]) == 2
            said = capsys.readouterr().err.strip().splitlines()
            assert len(said) == 1 and "TLS: the certificate of Redis" in said[0]
            # no client certificate where the server requires one
            bare = as_user(server, "reader", query=f"ssl_cert_reqs=required&ssl_ca_certs={certs['ca']}")
            with pytest.raises(redis.ConnectionError):
                FeatureStore.from_url(bare).client.ping()
            wrong_mongo = users["pipeline"].replace(str(certs["ca"]), str(certs["other-ca"]))
            source = MongoDocumentSource(wrong_mongo, database, "documents", timeout_ms=1500)
            with pytest.raises(
                pymongo.errors.ServerSelectionTimeoutError, match="certificate verify failed"
            ) as err:
                source.count()
            assert not is_transient(err.value)
    finally:
        mongo.stop()


def test_nothing_in_the_pipeline_writes_to_mongodb():
    """Its MongoDB user needs find and changeStream only: no write, index or admin call in the
    package outside the dev tools (which load the demo's documents)."""
    import re

    import embedding_assets

    writes = re.compile(
        r"\.(insert_one|insert_many|update_one|update_many|replace_one|delete_one|delete_many|bulk_write|"
        r"create_index|create_indexes|drop_index|drop_collection|drop_database|find_one_and_\w+|"
        r"create_collection)\("
    )
    root = Path(embedding_assets.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        if "dev" in path.relative_to(root).parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if writes.search(line) and "redis" not in line and ".client.rename(" not in line:
                found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert found == []


def test_the_shipped_acl_file_is_the_rules_and_no_user_may_flush_reconfigure_or_list_keys():
    root = Path(__file__).parents[1]
    assert (root / "deploy" / "redis" / "users.acl").read_text() == acl.acl_file()
    for role in acl.ROLES.values():
        assert not set(role.commands) & set(acl.FORBIDDEN), role.name
        assert "@" not in " ".join(role.commands)  # commands by name, never a whole category
    reader = acl.READER.rules()
    assert "%R~" in reader and " ~" not in reader  # read-only keys
    # passwords are stored hashed, never as given
    text = acl.acl_file({"pipeline": "s3cret"})
    assert "s3cret" not in text and acl.password_hash("s3cret") in text
    assert "user reader reset off" in text and "user default off" in text


def test_compose_publishes_nothing_on_every_interface_and_connects_as_its_users():
    import yaml

    root = Path(__file__).parents[1]
    compose = yaml.safe_load((root / "deploy" / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    published = [(name, port) for name, s in services.items() for port in s.get("ports", [])]
    assert published and all(str(port).startswith("127.0.0.1:") for _, port in published), published
    assert "--aclfile /acl/users.acl" in services["valkey"]["command"]
    assert services["code"]["environment"]["REDIS_URL"].startswith(
        "redis://pipeline:${EA_REDIS_PASSWORD_PIPELINE"
    )
    assert services["metrics"]["environment"]["REDIS_URL"].startswith(
        "redis://reader:${EA_REDIS_PASSWORD_READER"
    )
    text = (root / "deploy" / "compose" / "compose.yaml").read_text()
    assert "change-me" not in text  # no password in the file: each comes from .env
    values = yaml.safe_load((root / "deploy" / "helm" / "values.yaml").read_text())
    assert values["dagsterWebserver"]["service"]["type"] == "ClusterIP"
    redis_values = yaml.safe_load((root / "deploy" / "helm" / "redis-values.yaml").read_text())
    assert redis_values["master"]["extraFlags"][0] == "--aclfile" and redis_values["tls"]["enabled"]


# -- secrets nowhere: what the UI shows, read through GraphQL from a real webserver --------------
UI_RUNS = """
{ runsOrError { ... on Runs { results { runId status jobName runConfigYaml tags { key value } } } } }
"""
UI_RUN_LOGS = """
query($runId: ID!) { logsForRun(runId: $runId, limit: 5000) {
  ... on EventConnection { events {
    __typename
    ... on MessageEvent { message }
    ... on ExecutionStepFailureEvent { error { message stack causes { message stack } } }
    ... on RunFailureEvent { error { message stack } }
    ... on MaterializationEvent { metadataEntries { label description
        ... on TextMetadataEntry { text } ... on JsonMetadataEntry { jsonString }
        ... on UrlMetadataEntry { url } ... on PathMetadataEntry { path }
        ... on MarkdownMetadataEntry { mdStr } } }
    ... on AssetCheckEvaluationEvent { evaluation { description metadataEntries { label
        ... on TextMetadataEntry { text } ... on JsonMetadataEntry { jsonString } } } }
  } } } }
"""
UI_RESOURCES = """
{ allTopLevelResourceDetailsOrError(repositorySelector:
    {repositoryLocationName: "embedding_assets", repositoryName: "__repository__"}) {
  ... on ResourceDetailsList { results { name configuredValues { key value type } } } } }
"""
UI_SENSORS = """
{ sensorsOrError(repositorySelector:
    {repositoryLocationName: "embedding_assets", repositoryName: "__repository__"}) {
  ... on Sensors { results { name sensorState { ticks(limit: 50) {
      status skipReason error { message stack causes { message stack } } logKey } } } } } }
"""
UI_LOCATIONS = """
{ workspaceOrError { ... on Workspace { locationEntries { name
    locationOrLoadError { ... on PythonError { message stack } } } } } }
"""


class _Webhook:
    """An HTTP server standing in for a chat webhook; it refuses every alert (500), so that the
    failure path, which quotes errors, is the one shown."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.bodies: list[bytes] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(500)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.slow
def test_no_secret_reaches_the_ui_logs_run_config_metadata_dead_letters_or_metrics(
    pipeline_env, tmp_path, monkeypatch, static_dir, capsys
):
    """Passwords in REDIS_URL and MONGO_URI, an API key, a credential in an endpoint URL and a
    webhook URL, all set for a real code server, daemon and webserver: after a backfill, a run
    that fails on a refused Redis command, the failure alert the webhook refuses, sensor ticks,
    dead letters and a /metrics scrape, none of them appears in anything the UI reads (GraphQL),
    in Dagster's storage (event logs, compute logs), in the CLI's output or in /metrics."""
    import json
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from embedding_assets.deployment import LOCAL_INSTANCE_YAML
    from embedding_assets.dev.servers import free_port, stop_groups
    from embedding_assets_tests.test_deploy import ASSETS, BACKFILL, _graphql, _tails, start_deployment

    certs = make_certificates(tmp_path / "certs")
    mongo, users = _mongo_with_users(tmp_path / "mongo", certs, pipeline_env["MONGO_DB"])
    webhook = _Webhook()
    secrets = {
        "redis password": PASSWORDS["pipeline"],
        "mongo password": MONGO_PASSWORD,
        "api key": "sk-ea-7f1c9b2d4e",
        "endpoint credential": "ep-token-5a8e3c",
        "webhook path": "T00-B00-hook-9d2f7a",
    }
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(LOCAL_INSTANCE_YAML)
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)):  # its storage made once, before three processes open it
        pass
    processes: dict[str, subprocess.Popen] = {}
    logs = tmp_path / "logs"
    try:
        with acl_server(tmp_path / "valkey") as server:
            owner_env = {**pipeline_env, "MONGO_URI": users["owner"]}
            load_sample(owner_env, 40)
            env = {
                **os.environ,
                **pipeline_env,
                "HF_HUB_OFFLINE": "1",
                "DAGSTER_HOME": str(home),
                "MONGO_URI": users["pipeline"],
                "REDIS_URL": as_user(server, "pipeline"),
                "EA_BACKEND": "static",
                "EA_REDIS_TUNE": "0",
                "EA_STATIC_DIR": static_dir,
                "EA_EMBED_API_KEY": secrets["api key"],
                "EA_EMBED_URLS": f"http://svc:{secrets['endpoint credential']}@127.0.0.1:9/v1",
                "EA_ALERT_WEBHOOK": f"http://127.0.0.1:{webhook.port}/services/{secrets['webhook path']}",
            }
            web_port = start_deployment(tmp_path, env, logs, processes)

            def backfill(title: str) -> None:
                params = {"assetSelection": [{"path": [a]} for a in ASSETS], "allPartitions": True,
                          "fromFailure": False, "title": title}  # fmt: skip
                launched = _graphql(web_port, BACKFILL, {"params": params})["data"]["launchPartitionBackfill"]
                assert launched["__typename"] == "LaunchBackfillSuccess", launched

            def finished_runs() -> list[dict]:
                runs = _graphql(web_port, UI_RUNS)["data"]["runsOrError"]["results"]
                return [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]

            def wait_for(condition: object, what: str, timeout: float = 300) -> None:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    if condition():  # type: ignore[operator]
                        return
                    time.sleep(2)
                raise AssertionError(f"{what}: {_tails(logs)}")

            backfill("first fill")
            wait_for(lambda: any(r["status"] == "SUCCESS" for r in finished_runs()), "the first fill")
            # the pipeline's user loses HSET: the next fill fails on a refused command, the failure
            # alert goes to the webhook, which refuses it
            watcher = redis.Redis.from_url(server.url(*WATCHER))
            watcher.execute_command("ACL", "SETUSER", "pipeline", "-hset")
            collection(owner_env).update_many({}, {"$set": {"body": "Changed for the failing run."}})
            backfill("refused")
            wait_for(lambda: any(r["status"] == "FAILURE" for r in finished_runs()), "the refused fill")
            wait_for(lambda: webhook.bodies, "the failure alert")
            time.sleep(12)  # the alert sensor's retries end, and its tick is recorded with the error

            shown = [_graphql(web_port, q) for q in (UI_RUNS, UI_RESOURCES, UI_SENSORS, UI_LOCATIONS)]
            runs = finished_runs()
            shown += [_graphql(web_port, UI_RUN_LOGS, {"runId": r["runId"]}) for r in runs]
            text = json.dumps(shown)
            # what was read is what the UI shows: the runs, their failure, the resources
            assert "may not run HSET" in text and "Redis user 'pipeline'" in text
            assert "REDIS_URL" in text  # resources show the variable's name, not its value

            monkeypatch.setenv("REDIS_URL", as_user(server, "reader"))
            monkeypatch.setenv("MONGO_URI", users["pipeline"])
            assert main(["dead-letters"]) in (0, 2)
            assert main(["versions"]) == 0
            cli_out = capsys.readouterr()
            metrics_port = free_port()
            scrape_env = {**env, "REDIS_URL": as_user(server, "reader")}
            command = [
                str(Path(sys.executable).parent / "embedding-assets"),
                "metrics",
                "--port",
                str(metrics_port),
            ]
            metrics = subprocess.Popen(
                command,
                env=scrape_env,
                stdout=open(logs / "metrics.log", "w"),  # noqa: SIM115 - closed with the process
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            processes["metrics"] = metrics
            scraped = ""
            deadline = time.monotonic() + 60
            while not scraped and time.monotonic() < deadline:
                try:
                    scraped = (
                        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
                        .read()
                        .decode()
                    )
                except OSError:
                    time.sleep(0.5)
            assert "embedding_assets_up" in scraped
            stored = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
            for what, secret in secrets.items():
                assert secret not in text, f"the UI shows the {what}"
                assert secret.encode() not in stored, f"Dagster's storage holds the {what}"
                assert secret not in cli_out.out + cli_out.err, f"the CLI prints the {what}"
                assert secret not in scraped, f"/metrics shows the {what}"
                for body in webhook.bodies:
                    assert secret.encode() not in body, f"an alert carries the {what}"
    finally:
        stop_groups(*processes.values())
        webhook.close()
        mongo.stop()
