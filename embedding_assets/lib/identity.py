"""A document's identity: ``doc_id`` may be any BSON scalar; entries, shards and run configs key
it by its string form. One rule, used wherever an id crosses from MongoDB to text and back.

A doc_id whose string form does not lead back to it (an array, an embedded document, a date,
binary data) is refused everywhere: a backfill would key its entry by a text that no later run
can look the document up by, so the first edit would delete it. So is a string starting with a
NUL byte, the store's prefix for deletion markers.
"""

from __future__ import annotations

import re
from typing import Any

from bson import Decimal128, ObjectId

_INTEGER = re.compile(r"-?[0-9]+")


def doc_key(value: Any) -> str:
    """The string form of a doc_id: what entries, shards and run configs carry."""
    return value if isinstance(value, str) else str(value)


def refusal(value: Any) -> str | None:
    """Why ``value`` cannot be a doc_id, or None when it can. Applied where documents are read,
    so that backfills, sensor runs and audits refuse the same documents."""
    if value is None:
        return None  # missing: reported as such where it is read
    if isinstance(value, str):
        if value.startswith("\x00"):
            return "doc_id starts with a NUL byte, the prefix reserved for the store's deletion markers"
        return None
    if isinstance(value, list | tuple | dict):
        kind = "an array" if isinstance(value, list | tuple) else "an embedded document"
        return f"doc_id is {kind}; only a scalar (string, number, ObjectId, boolean) can key an entry"
    if not any(_same(c, value) for c in id_candidates(doc_key(value))):
        return (
            f"doc_id {doc_key(value)[:60]!r} of type {type(value).__name__} cannot key an entry: its "
            "text form does not lead back to it (use a string, a number, an ObjectId or a boolean)"
        )
    return None


def _same(candidate: Any, value: Any) -> bool:
    """MongoDB's equality: numbers of any type by value, booleans apart from numbers."""
    if isinstance(value, Decimal128):
        value = float(value.to_decimal())
    return isinstance(candidate, bool) == isinstance(value, bool) and candidate == value


def id_candidates(key: str) -> list[Any]:
    """The BSON values whose string form is ``key``: a run config's text id becomes a query that
    matches the document whatever type its doc_id has (str, int, double, ObjectId, bool)."""
    out: list[Any] = [key]
    if _INTEGER.fullmatch(key) and -(2**63) <= int(key) < 2**63:
        out.append(int(key))
    else:
        try:
            number = float(key)
        except ValueError:
            number = None
        if number is not None and str(number) == key:
            out.append(number)
    if len(key) == 24 and ObjectId.is_valid(key):
        out.append(ObjectId(key))
    if key in ("True", "False"):
        out.append(key == "True")
    return out
