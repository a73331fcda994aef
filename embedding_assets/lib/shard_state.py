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

    def load(self, asset: str, partition_key: str) -> pl.DataFrame | None:
        path = self.path(asset, partition_key)
        return pl.read_parquet(str(path)) if path.exists() else None

    def save(self, asset: str, partition_key: str, frame: pl.DataFrame) -> int:
        """Atomic write (temporary file, then rename); returns the file's size."""
        path = self.path(asset, partition_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        frame.write_parquet(str(tmp), compression="zstd")
        tmp.rename(path)
        return int(path.stat().st_size)

    def scan(self, asset: str) -> pl.LazyFrame | None:
        """All shards of an asset, lazily (for lookups across shards)."""
        folder = self.base / asset
        if not folder.exists() or not any(folder.glob("*.parquet")):
            return None
        return pl.scan_parquet(str(folder / "*.parquet"))
