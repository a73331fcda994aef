"""The stored state of each shard of each intermediate asset: one Parquet file per shard.

The only owner of these files: each asset reads its upstream's shards and its own previous
state here (to merge a delta, to reuse chunks and vectors whose content hash is unchanged) and
writes its shards here. The layout is pinned to the shard count it was written with
(``_layout.json``): shard files of another count would silently hold the wrong documents.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import time
import uuid

import polars as pl
from upath import UPath

from embedding_assets.lib.frames import SNAPSHOT_SCHEMA, conform
from embedding_assets.lib.merge import TOMBSTONE_SCHEMA, follow_upstream, latest_reads
from embedding_assets.lib.sharding import shard_key, shard_of
from embedding_assets.stores.locks import FileLocks, ShardLocks

LAYOUT_FILE = "_layout.json"
ASSETS = ("document_snapshots", "chunked_text", "document_vectors")


class ShardLayoutError(RuntimeError):
    """The stored state was written with another shard count than the deployment's."""


# Derived assets: their upstream, and the columns a row must agree on with it (lib/merge.py).
UPSTREAM = {
    "chunked_text": ("document_snapshots", ["read_at", "modified_at"]),
    "document_vectors": ("chunked_text", ["content_hash", "read_at"]),
}


def is_local(base: UPath) -> bool:
    return base.protocol in ("", "file", "local")


class ShardStateStore:
    """Shard files, each written by merging with what is stored (lib/merge.py) under a short
    per-shard lock: racing runs lose nothing whatever the instance's configuration.

    ``locks``: file locks for a local folder (the default); an object store shared by several
    machines needs locks they all see (``locks.RedisLocks``).
    """

    def __init__(self, base_dir: str | UPath, num_shards: int, locks: ShardLocks | None = None) -> None:
        self.base = UPath(base_dir)
        self.num_shards = num_shards
        if locks is None:
            if not is_local(self.base):
                raise ValueError(f"shard state at {self.base} is shared storage: it needs RedisLocks")
            locks = FileLocks(self.base / "_locks")
        self.locks = locks
        self._seen: dict[tuple[str, str], tuple | None] = {}  # file versions this store loaded
        self._pin_layout()

    def _pin_layout(self) -> None:
        path = self.base / LAYOUT_FILE
        if path.exists():
            stored = int(json.loads(path.read_text())["num_shards"])
        else:  # state written before the pin: its keys tell the count, at least roughly
            keys = [f.stem for a in ASSETS for f in (self.base / a).glob("shard-*.parquet")]
            widest = max((len(k) for k in keys), default=0)
            highest = max((int(k.split("-")[1]) for k in keys), default=-1)
            mismatch = keys and (widest != len(shard_key(0, self.num_shards)) or highest >= self.num_shards)
            stored = -1 if mismatch else self.num_shards
            if not mismatch:
                self.base.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"num_shards": self.num_shards}))
        if stored != self.num_shards:
            was = f"EA_NUM_SHARDS={stored}" if stored > 0 else "another shard count"
            raise ShardLayoutError(
                f"the shard state in {self.base} was written with {was}, but EA_NUM_SHARDS is "
                f"{self.num_shards}. Either set EA_NUM_SHARDS back, or migrate the state with "
                f"`embedding-assets reshard --shards {self.num_shards}` (nothing is re-embedded), "
                "or point EA_PARQUET_DIR at an empty directory and backfill every shard."
            )

    def path(self, asset: str, partition_key: str) -> UPath:
        return self.base / asset / f"{partition_key}.parquet"

    def load(self, asset: str, partition_key: str, columns: list[str] | None = None) -> pl.DataFrame | None:
        """A stored shard (only ``columns`` of it, those the file has: an older release may not
        have written them all), or None."""
        path = self.path(asset, partition_key)
        if columns is None:
            self._seen[(asset, partition_key)] = _version(path)
        if not path.exists():
            return None
        return read_parquet(path, columns)

    def save(self, asset: str, partition_key: str, frame: pl.DataFrame) -> int:
        """Atomic write (temporary file, then rename); returns the file's size.

        Replaces the shard whole: only for writers that own the state (reshard, tests). Steps
        write through ``save_snapshot`` and ``save_derived``, which merge.
        """
        return _write(self.path(asset, partition_key), frame)

    def _deleted_path(self, asset: str, partition_key: str) -> UPath:
        return self.base / asset / "_deleted" / f"{partition_key}.parquet"

    def load_deleted(self, asset: str, partition_key: str) -> pl.DataFrame | None:
        """The shard's tombstones: doc_ids seen deleted, and when (lib/merge.py)."""
        path = self._deleted_path(asset, partition_key)
        return read_parquet(path) if path.exists() else None

    def save_snapshot(
        self,
        partition_key: str,
        frame: pl.DataFrame,
        deleted: pl.DataFrame | None = None,
        *,
        scanned_at: dt.datetime | None = None,
        now: dt.datetime | None = None,
    ) -> int:
        """Merge read documents (and ``deleted`` ones) into the stored snapshot, latest read
        winning per document; ``scanned_at``: ``frame`` is a full scan started then."""
        asset = "document_snapshots"
        frame = conform(frame, SNAPSHOT_SCHEMA)
        with self.locks.hold(f"{asset}-{partition_key}"):
            current = self.load(asset, partition_key, ["doc_id", "read_at"])
            if current is not None:  # state an earlier release wrote has no read times: oldest
                current = conform_columns(current, frame.select("doc_id", "read_at").schema)
            if scanned_at is None or (current is not None and (current["read_at"] > scanned_at).any()):
                current = self.load(asset, partition_key)  # rows a later read may have written
            live, tombs = latest_reads(
                current,
                self.load_deleted(asset, partition_key),
                frame,
                deleted,
                scanned_at=scanned_at,
                now=now,
            )
            _write(self._deleted_path(asset, partition_key), tombs.select(TOMBSTONE_SCHEMA.names()))
            size = _write(self.path(asset, partition_key), live)
            if scanned_at is not None:
                marker = self._scanned_path(partition_key)
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(scanned_at.isoformat())
            return size

    def _scanned_path(self, partition_key: str) -> UPath:
        return self.base / "document_snapshots" / "_scanned" / partition_key

    def unscanned(self, partition_keys: list[str]) -> list[str]:
        """Shards no full scan has written since this state began: their snapshots may not know
        every document (the state folder was lost, or only deltas ran), so a hard delete's
        ``_id`` may not lead to its doc_id there."""
        return [k for k in partition_keys if not self._scanned_path(k).exists()]

    def save_derived(self, asset: str, partition_key: str, frame: pl.DataFrame) -> int:
        """Write a derived shard; if another run wrote it since this store loaded it, merge the
        two, each document's row agreeing with the upstream as stored now winning."""
        upstream, match = UPSTREAM[asset]
        path = self.path(asset, partition_key)
        with self.locks.hold(f"{asset}-{partition_key}"):
            seen = self._seen.get((asset, partition_key), "unknown")
            if seen != _version(path):
                current = self.load(asset, partition_key)
                stored_upstream = self.load(upstream, partition_key, ["doc_id", *match])
                if stored_upstream is not None:
                    columns = frame.select("doc_id", *match).schema
                    frame = follow_upstream(current, frame, conform_columns(stored_upstream, columns), match)
            size = _write(path, frame)
            self._seen[(asset, partition_key)] = _version(path)
            return size

    # -- checkpoints: batches finished inside a step that has not completed yet ------------------
    def _checkpoint_dir(self, asset: str, partition_key: str) -> UPath:
        return self.base / asset / "_checkpoints" / partition_key

    def save_checkpoint(self, asset: str, partition_key: str, frame: pl.DataFrame) -> None:
        folder = self._checkpoint_dir(asset, partition_key)
        folder.mkdir(parents=True, exist_ok=True)
        n = sum(1 for _ in folder.glob("*.parquet"))
        tmp = folder / f".{n:06d}.{os.getpid()}.tmp"
        frame.write_parquet(str(tmp), compression=_compression(frame))
        tmp.rename(folder / f"{n:06d}-{os.getpid()}.parquet")

    def load_checkpoints(self, asset: str, partition_key: str) -> pl.DataFrame | None:
        folder = self._checkpoint_dir(asset, partition_key)
        files = sorted(folder.glob("*.parquet")) if folder.exists() else []
        return pl.concat([read_parquet(f) for f in files]) if files else None

    def clear_checkpoints(self, asset: str, partition_key: str) -> None:
        """Remove the shard's checkpoints; another run's, written meanwhile, may stay."""
        folder = self._checkpoint_dir(asset, partition_key)
        for f in list(folder.glob("*")) if folder.exists() else []:
            f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # gone, or another run checkpointed into it meanwhile
            folder.rmdir()

    def load_with_checkpoints(self, asset: str, partition_key: str) -> pl.DataFrame | None:
        """The stored state plus batches a killed run finished: what need not be redone."""
        parts = [
            f
            for f in (self.load(asset, partition_key), self.load_checkpoints(asset, partition_key))
            if f is not None
        ]
        if not parts:
            return None
        return pl.concat(parts, how="diagonal_relaxed").unique(["doc_id", "content_hash"], keep="last")

    # -- copies of the feature store's control keys, per version (control_plane.VersionCopy) ------
    def _version_path(self, tag: str) -> UPath:
        return version_copy_path(self.base, tag)

    def load_version_copy(self, tag: str) -> str | None:
        path = self._version_path(tag)
        return path.read_text() if path.exists() else None

    def save_version_copy(self, tag: str, raw: str) -> None:
        path = self._version_path(tag)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(raw)
        tmp.rename(path)

    def load_canary(self, tag: str) -> bytes | None:
        """The copy of a version's canary vectors (control_plane.encode_canary)."""
        path = self._version_path(tag).with_suffix(".canary")
        return path.read_bytes() if path.exists() else None

    def save_canary(self, tag: str, raw: bytes) -> None:
        path = self._version_path(tag).with_suffix(".canary")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(raw)
        tmp.rename(path)

    def load_blob(self, tag: str, kind: str) -> bytes | None:
        """A copy of something a version keeps in Redis (its int8 calibration windows, say)."""
        path = self._version_path(tag).with_suffix(f".{kind}")
        return path.read_bytes() if path.exists() else None

    def save_blob(self, tag: str, kind: str, raw: bytes) -> None:
        path = self._version_path(tag).with_suffix(f".{kind}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(raw)
        tmp.rename(path)

    def version_copies(self) -> dict[str, str]:
        """Every version's copy, by tag."""
        folder = version_copy_path(self.base, "x").parent
        files = sorted(folder.glob("*.json")) if folder.exists() else []
        return {f.stem: f.read_text() for f in files}

    def find(self, asset: str, column: str, values: list[str], columns: list[str]) -> pl.DataFrame:
        """``columns`` of the rows of every shard whose ``column`` is one of ``values``."""
        folder = self.base / asset
        parts = []
        for f in sorted(folder.glob("shard-*.parquet")) if folder.exists() else []:
            frame = read_parquet(f, list(dict.fromkeys([column, *columns])))
            parts.append(frame.filter(pl.col(column).is_in(values)).select(columns))
        return pl.concat(parts) if parts else pl.DataFrame(schema=dict.fromkeys(columns, pl.String))


def read_parquet(path: UPath, columns: list[str] | None = None) -> pl.DataFrame:
    """The file as of one open handle (only ``columns``, those it has: an older release may not
    have written them all). Read by path, polars opens a file more than once; a write renamed
    into place in between gives it the old footer and the new pages (a sensor tick failed so
    in the soak)."""
    with path.open("rb") as handle:
        if columns is not None:
            present = pl.read_parquet_schema(handle)
            columns = [c for c in columns if c in present]
            handle.seek(0)
        return pl.read_parquet(handle, columns=columns)


def _version(path: UPath) -> tuple | None:
    """Which write of a file this is (every write renames a new file into place)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (getattr(info, "st_ino", None), info.st_size, getattr(info, "st_mtime_ns", info.st_mtime))


def _write(path: UPath, frame: pl.DataFrame) -> int:
    """Atomic write (temporary file, then rename); returns the file's size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    frame.write_parquet(str(tmp), compression=_compression(frame))
    tmp.rename(path)
    return int(path.stat().st_size)


def _compression(frame: pl.DataFrame) -> str:
    """zstd for text; lz4 where vectors are: they hardly compress (6,250 of 256 dimensions: 5.9 MB
    zstd, 6.5 MB lz4), and zstd took 2.7 times as long to write them and 1.4 times to read."""
    vectors = any(isinstance(t, pl.Array | pl.List) and t.inner.is_float() for t in frame.schema.values())
    return "lz4" if vectors else "zstd"


def conform_columns(frame: pl.DataFrame, columns: pl.Schema) -> pl.DataFrame:
    """``frame`` with ``columns`` (null where an older release did not write them)."""
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in columns.items() if c not in frame.columns]
    return frame.with_columns(missing)


def version_copy_path(base_dir: str | UPath, tag: str) -> UPath:
    """Where the copy of a version's control keys is kept (control_plane.VersionCopy)."""
    return UPath(base_dir) / "_versions" / f"{tag}.json"


def stored_shard_count(base_dir: str | UPath) -> int | None:
    """The shard count the state under ``base_dir`` is pinned to (None: no pinned state)."""
    path = UPath(base_dir) / LAYOUT_FILE
    return int(json.loads(path.read_text())["num_shards"]) if path.exists() else None


def reshard(base_dir: str | UPath, new_count: int) -> dict[str, int]:
    """Rewrite every asset's shard files for ``new_count`` shards; returns rows per asset.

    One old shard in memory at a time: its rows are split into parts by new shard, then each new
    shard is put together from its parts. The new state is built beside the old and swapped in
    at the end, so a failure leaves the old state as it was.
    """
    old_count = stored_shard_count(base_dir)
    if old_count is None:
        raise ShardLayoutError(f"no pinned shard state in {base_dir}: nothing to reshard")
    source = ShardStateStore(base_dir, old_count)
    stamp = f"{os.getpid()}-{int(time.time())}"
    target_dir = source.base.with_name(f"{source.base.name}.reshard-{stamp}")
    target = ShardStateStore(target_dir, new_count)
    rows: dict[str, int] = {}
    for asset in ASSETS:
        rows[asset] = _reshard_folder(source.base / asset, target.base / asset, new_count)
        # the deletions seen (lib/merge.py) follow their documents
        _reshard_folder(source.base / asset / "_deleted", target.base / asset / "_deleted", new_count)
    versions = version_copy_path(source.base, "x").parent
    if versions.exists():  # the control keys' copies (control_plane.VersionCopy) stay
        shutil.copytree(str(versions), str(version_copy_path(target.base, "x").parent))
    retired = source.base.with_name(f"{source.base.name}.before-reshard-{stamp}")
    source.base.rename(retired)
    target.base.rename(source.base)
    shutil.rmtree(str(retired))
    return rows


def _reshard_folder(old_dir: UPath, new_dir: UPath, new_count: int) -> int:
    """Split the ``shard-*.parquet`` files of ``old_dir`` into ``new_count`` files in ``new_dir``
    (one old file in memory at a time); returns the rows."""
    parts = new_dir / "_parts"
    for old in sorted(old_dir.glob("shard-*.parquet")) if old_dir.exists() else []:
        frame = pl.read_parquet(str(old))
        owner = [0 if d is None else shard_of(d, new_count) for d in frame["doc_id"].to_list()]
        split = frame.with_columns(pl.Series("_shard", owner, dtype=pl.Int64))
        for (shard,), part in split.partition_by("_shard", as_dict=True).items():
            folder = parts / shard_key(int(shard), new_count)  # type: ignore[arg-type]
            folder.mkdir(parents=True, exist_ok=True)
            part.drop("_shard").write_parquet(str(folder / f"{old.stem}.parquet"))
    rows = 0
    for shard in range(new_count):
        key = shard_key(shard, new_count)
        files = sorted((parts / key).glob("*.parquet")) if (parts / key).exists() else []
        if files:
            frame = pl.concat([pl.read_parquet(str(f)) for f in files], how="diagonal_relaxed")
            _write(new_dir / f"{key}.parquet", frame.sort("doc_id", nulls_last=True))
            rows += frame.height
    if parts.exists():
        shutil.rmtree(str(parts))
    return rows


class ShardSpool:
    """Rows of a scan waiting per shard on disk (``<asset>/_spool/<scan>/<shard>/``), see
    snapshot.Spool. Each scan has its own folder: two scans at once never see each other's."""

    STALE_SECONDS = 24 * 3600  # a folder untouched this long is a killed scan's

    def __init__(self, store: ShardStateStore, asset: str) -> None:
        root = store.base / asset / "_spool"
        for left in list(root.glob("*")) if root.exists() else []:
            if time.time() - left.stat().st_mtime > self.STALE_SECONDS:
                shutil.rmtree(str(left), ignore_errors=True)
        self.folder = root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def _dir(self, shard: int) -> UPath:
        return self.folder / f"{shard:04d}"

    def add(self, shard: int, frame: pl.DataFrame) -> None:
        folder = self._dir(shard)
        folder.mkdir(parents=True, exist_ok=True)
        n = sum(1 for _ in folder.glob("*.parquet"))
        frame.write_parquet(str(folder / f"{n:06d}.parquet"), compression="lz4")

    def take(self, shard: int) -> list[pl.DataFrame]:
        folder = self._dir(shard)
        if not folder.exists():
            return []
        files = sorted(folder.glob("*.parquet"))
        frames = [pl.read_parquet(str(f)) for f in files]
        for f in files:
            f.unlink()
        folder.rmdir()
        return frames

    def clear(self) -> None:
        if self.folder.exists():
            shutil.rmtree(str(self.folder), ignore_errors=True)
