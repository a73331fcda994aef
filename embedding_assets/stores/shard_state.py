"""The stored state of each shard of each intermediate asset: one Parquet file per shard.

The only owner of these files: each asset reads its upstream's shards and its own previous
state here (to merge a delta, to reuse chunks and vectors whose content hash is unchanged) and
writes its shards here. The layout is pinned to the shard count it was written with
(``_layout.json``): shard files of another count would silently hold the wrong documents.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import polars as pl
from upath import UPath

from embedding_assets.lib.sharding import shard_key, shard_of

LAYOUT_FILE = "_layout.json"
ASSETS = ("document_snapshots", "chunked_text", "document_vectors")


class ShardLayoutError(RuntimeError):
    """The stored state was written with another shard count than the deployment's."""


class ShardStateStore:
    def __init__(self, base_dir: str | UPath, num_shards: int) -> None:
        self.base = UPath(base_dir)
        self.num_shards = num_shards
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
        if not path.exists():
            return None
        if columns is not None:
            present = pl.read_parquet_schema(str(path))
            columns = [c for c in columns if c in present]
        return pl.read_parquet(str(path), columns=columns)

    def save(self, asset: str, partition_key: str, frame: pl.DataFrame) -> int:
        """Atomic write (temporary file, then rename); returns the file's size."""
        path = self.path(asset, partition_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        frame.write_parquet(str(tmp), compression="zstd")
        tmp.rename(path)
        return int(path.stat().st_size)

    # -- checkpoints: batches finished inside a step that has not completed yet ------------------
    def _checkpoint_dir(self, asset: str, partition_key: str) -> UPath:
        return self.base / asset / "_checkpoints" / partition_key

    def save_checkpoint(self, asset: str, partition_key: str, frame: pl.DataFrame) -> None:
        folder = self._checkpoint_dir(asset, partition_key)
        folder.mkdir(parents=True, exist_ok=True)
        n = sum(1 for _ in folder.glob("*.parquet"))
        tmp = folder / f".{n:06d}.{os.getpid()}.tmp"
        frame.write_parquet(str(tmp))
        tmp.rename(folder / f"{n:06d}-{os.getpid()}.parquet")

    def load_checkpoints(self, asset: str, partition_key: str) -> pl.DataFrame | None:
        folder = self._checkpoint_dir(asset, partition_key)
        files = sorted(folder.glob("*.parquet")) if folder.exists() else []
        return pl.concat([pl.read_parquet(str(f)) for f in files]) if files else None

    def clear_checkpoints(self, asset: str, partition_key: str) -> None:
        folder = self._checkpoint_dir(asset, partition_key)
        if folder.exists():
            for f in folder.glob("*"):
                f.unlink()
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

    def find(self, asset: str, column: str, values: list[str], columns: list[str]) -> pl.DataFrame:
        """``columns`` of the rows of every shard whose ``column`` is one of ``values``."""
        folder = self.base / asset
        parts = [
            pl.scan_parquet(str(f)).filter(pl.col(column).is_in(values)).select(columns).collect()
            for f in (sorted(folder.glob("shard-*.parquet")) if folder.exists() else [])
        ]
        return pl.concat(parts) if parts else pl.DataFrame(schema=dict.fromkeys(columns, pl.String))


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
        parts = target.base / asset / "_parts"
        for old in sorted((source.base / asset).glob("shard-*.parquet")):
            frame = pl.read_parquet(str(old))
            owner = [0 if d is None else shard_of(d, new_count) for d in frame["doc_id"].to_list()]
            split = frame.with_columns(pl.Series("_shard", owner, dtype=pl.Int64))
            for (shard,), part in split.partition_by("_shard", as_dict=True).items():
                folder = parts / shard_key(int(shard), new_count)  # type: ignore[arg-type]
                folder.mkdir(parents=True, exist_ok=True)
                part.drop("_shard").write_parquet(str(folder / f"{old.stem}.parquet"))
        rows[asset] = 0
        for shard in range(new_count):
            key = shard_key(shard, new_count)
            files = sorted((parts / key).glob("*.parquet")) if (parts / key).exists() else []
            if files:
                frame = pl.concat([pl.read_parquet(str(f)) for f in files], how="diagonal_relaxed")
                target.save(asset, key, frame.sort("doc_id", nulls_last=True))
                rows[asset] += frame.height
        if parts.exists():
            shutil.rmtree(str(parts))
    retired = source.base.with_name(f"{source.base.name}.before-reshard-{stamp}")
    source.base.rename(retired)
    target.base.rename(source.base)
    shutil.rmtree(str(retired))
    return rows


class ShardSpool:
    """Rows of a scan waiting per shard on disk (``<asset>/_spool/<shard>/``), see pipeline.Spool."""

    def __init__(self, store: ShardStateStore, asset: str) -> None:
        self.folder = store.base / asset / "_spool"
        self.clear()  # what a killed run left is from an older scan

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
            for f in self.folder.glob("*/*"):
                f.unlink()
            for d in self.folder.glob("*"):
                d.rmdir()
