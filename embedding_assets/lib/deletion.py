"""Whether a source document is deleted: a rule of its own, without polars, so that the audit's
sample process (audit/sample_process.py), which applies it to every document it reads, stays a
small process beside the run (25 MB less without polars)."""

from __future__ import annotations


def is_tombstone(doc: dict) -> bool:
    """A document marked deleted in place counts as deleted."""
    return doc.get("is_deleted") is True or doc.get("deleted_at") is not None
