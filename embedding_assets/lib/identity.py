"""A document's identity: ``doc_id`` may be any BSON scalar; entries, shards and run configs key
it by its string form. One rule, used wherever an id crosses from MongoDB to text and back.
"""

from __future__ import annotations

import re
from typing import Any

from bson import ObjectId

_INTEGER = re.compile(r"-?[0-9]+")


def doc_key(value: Any) -> str:
    """The string form of a doc_id: what entries, shards and run configs carry."""
    return value if isinstance(value, str) else str(value)


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
