"""Redis ACL users with least privilege: what each part of the tool may send, and to which keys.

Three users, one per way the store is used:

- ``pipeline``: the Dagster runs and sensors (they write entries, the control keys, dead letters
  and, on an object store, shard locks).
- ``reader``: services through ``EmbeddingClient``, and the read-only CLI commands (``lookup``,
  ``search``, ``versions``, ``dead-letters``, ``audit``, ``metrics``): reads only, on the store's keys.
- ``admin``: an operator's ``activate`` and ``cleanup``, and anything the pipeline does (a repair
  run by hand).

The command lists are the commands the code sends: ``test_security`` records them on a real
server (MONITOR) while each user's work runs, and fails when the code sends a command a list
lacks, or a list names one the code no longer sends, so this file and ``deploy/redis/users.acl``
cannot drift from the code. None of them may flush, reconfigure the server, list every key
(KEYS) or change users (ACL).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

ENTRY_KEYS = "doc_emb:*"  # the entries: doc_emb:<tag>:b:<bucket> (cluster: doc_emb:{<tag>:<n>}:b:<bucket>)
CONTROL_KEYS = "doc_emb_meta:*"  # a version's registration, layout, calibration, dead letters...
LOCK_KEYS = "ea_lock:*"  # shard locks, when shard state is on an object store

# Sent on every connection by the client library, or to pick a database: every user needs them
# (the store's clients skip CLIENT SETINFO: Redis 7.0 has none).
CONNECTION = ("hello", "ping", "select")

# What readers send: entries by bucket (HGET, or a read script: EVALSHA_RO, SCRIPT LOAD when the
# server lost it), the control keys, SCAN for neighbours and audits, MEMORY USAGE for the audit's
# bytes per entry, INFO to tell a cluster, TIME.
READS = (
    "evalsha_ro",
    "get",
    "hget",
    "hgetall",
    "hkeys",
    "hlen",
    "info",
    "memory|usage",
    "scan",
    "script|load",
    "time",
)

# What the pipeline adds: entries and their TTL (write scripts: EVALSHA), tombstones (HMGET of
# deletions seen), the control keys (HSETNX, SET NX), dead letters, shard locks (SET NX PX).
WRITES = ("del", "evalsha", "expire", "hdel", "hmget", "hset", "hsetnx", "set")

# What only an operator sends: switching the active version, removing an old one.
OPERATIONS = ("getset", "unlink")

# Granted though the recorded work may not send them, and why (the test allows exactly these).
UNRECORDED = {
    "select": "a REDIS_URL naming a database other than 0",
    "ping": "readers: the /metrics probe and a service's health check",
    "script|load": "readers: the first read after a server restart, before the pipeline reloads it",
    "del": "admins: a shard lock released by hand",
    "memory|usage": "the audit's bytes per entry: only when its random buckets hold entries",
}

# Never granted, whoever asks: the test checks that no list names them.
FORBIDDEN = ("flushall", "flushdb", "config|set", "config|get", "keys", "acl", "shutdown", "debug", "monitor")


@dataclass(frozen=True)
class Role:
    name: str
    commands: tuple[str, ...]
    keys: tuple[str, ...]
    read_only: bool
    why: str

    def rules(self) -> str:
        """The ACL rules, after the user name and password (``ACL SETUSER name <rules>``)."""
        prefix = "%R~" if self.read_only else "~"
        keys = " ".join(f"{prefix}{k}" for k in self.keys)
        commands = " ".join(f"+{c}" for c in sorted(set(self.commands)))
        return f"resetkeys {keys} resetchannels -@all {commands}"


PIPELINE = Role(
    "pipeline",
    (*CONNECTION, *READS, *WRITES),
    (ENTRY_KEYS, CONTROL_KEYS, LOCK_KEYS),
    read_only=False,
    why="Dagster runs and sensors: write entries, control keys, dead letters, shard locks",
)
READER = Role(
    "reader",
    (*CONNECTION, *READS),
    (ENTRY_KEYS, CONTROL_KEYS),
    read_only=True,
    why="services (EmbeddingClient) and read-only CLI commands: reads only",
)
ADMIN = Role(
    "admin",
    (*CONNECTION, *READS, *WRITES, *OPERATIONS),
    (ENTRY_KEYS, CONTROL_KEYS, LOCK_KEYS),
    read_only=False,
    why="operators: activate, cleanup, and what the pipeline does (a repair by hand)",
)
ROLES: dict[str, Role] = {r.name: r for r in (PIPELINE, READER, ADMIN)}


def password_hash(password: str) -> str:
    """How an ACL file holds a password: its SHA-256, never the password."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def acl_file(passwords: Mapping[str, str] | None = None, *, default_off: bool = True) -> str:
    """The ACL file (``aclfile`` in redis.conf / valkey.conf). A user without a password in
    ``passwords`` is written ``off`` with none: it cannot log in until one is set
    (``ACL SETUSER <name> on >password``). ``default_off`` disables the passwordless default user."""
    passwords = passwords or {}
    lines = []  # an ACL file has no comments: every line is a user (docs/operations.md explains them)
    for role in ROLES.values():
        secret = passwords.get(role.name)
        auth = f"on {password_hash(secret)}" if secret else "off"
        lines.append(f"user {role.name} reset {auth} {role.rules()}")
    if default_off:  # no anonymous access
        lines.append("user default off resetpass resetkeys resetchannels -@all")
    return "\n".join(lines) + "\n"
