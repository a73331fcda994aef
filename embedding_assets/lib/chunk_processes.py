"""Whole-document chunking of a large full run on every core.

``chunk_frame`` for a whole-document (static) version is Python over every row: repair, hash,
reuse. A full run of 100k documents spent 4 s in it on one core while the other was idle; its
shards are independent, so a large full run chunks them in worker processes (spawned, so that
no thread of the step's process is forked), one shard per worker at a time. Small runs and
sensor deltas stay in the step's process: starting workers costs about half a second.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol

import polars as pl

from embedding_assets.lib.chunk import ChunkPlan, chunk_frame

MIN_DOCUMENTS = 20_000  # below this, worker start-up costs more than it saves
MAX_PROCESSES = 8


class Chunk(Protocol):
    def __call__(
        self, own: pl.DataFrame, previous: pl.DataFrame | None
    ) -> tuple[pl.DataFrame, list[str]]: ...


def processes_for(plan: ChunkPlan, *, shards: int, documents: int, delta: bool, cores: int) -> int:
    """Worker processes for a run: 0 (chunk in the step's process) unless the run is a large full
    run of a whole-document version over several shards."""
    if delta or not plan.single_chunk or shards < 2 or documents < MIN_DOCUMENTS or cores < 2:
        return 0
    return min(cores, shards, MAX_PROCESSES)


@contextmanager
def chunker(plan: ChunkPlan, tokenizer: Any, processes: int) -> Iterator[Chunk]:
    """``chunk_frame`` bound to ``plan``: in this process, or on ``processes`` workers."""
    if processes <= 0:
        yield lambda own, previous: chunk_frame(own, tokenizer, plan, previous=previous)
        return
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield lambda own, previous: pool.submit(chunk_frame, own, None, plan, previous).result()
