"""The stored state of each shard of each intermediate asset: one Parquet file per shard.

The IO manager writes these files; assets read their own previous state here to merge a
delta into it and to reuse work (chunks, vectors) whose content hash has not changed.
"""

from __future__ import annotations

import os

import polars as pl
from upath import UPath


class ShardStateStore:
    def __init__(self, base_dir: str | UPath) -> None:
        self.base = UPath(base_dir)

    def path(self, asset: str, partition_key: str) -> UPath:
        return self.base / asset / f"{partition_key}.parquet"

    def load(self, asset: str, partition_key: str, columns: list[str] | None = None) -> pl.DataFrame | None:
        path = self.path(asset, partition_key)
        return pl.read_parquet(str(path), columns=columns) if path.exists() else None

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

    def scan(self, asset: str) -> pl.LazyFrame | None:
        """All shards of an asset, lazily (for lookups across shards)."""
        folder = self.base / asset
        if not folder.exists() or not any(folder.glob("*.parquet")):
            return None
        return pl.scan_parquet(str(folder / "*.parquet"))


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
