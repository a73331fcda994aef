"""The check rules of lib/audit.py, without servers."""

import numpy as np
import polars as pl

from embedding_assets.lib import audit
from embedding_assets.lib.codec import RecordHeader


def _header(**kw) -> RecordHeader:
    base = dict(codec="int8", dimension=4, version_id=1, computed_at=1000, content_hash=7, source_ms=5)
    return RecordHeader(**{**base, **kw})


def test_check_rules():
    ok = np.eye(3, dtype=np.float32)
    frame = pl.DataFrame({"doc_id": ["a", "b", "c"], "vector": pl.Series(ok, dtype=pl.Array(pl.Float32, 3))})
    assert audit.vector_validity([frame], 3).passed
    assert not audit.vector_validity([frame], 4).passed
    bad = pl.DataFrame(
        {
            "doc_id": ["x", "y"],
            "vector": pl.Series(
                np.array([[2, 0, 0], [np.nan, 0, 0]], np.float32), dtype=pl.Array(pl.Float32, 3)
            ),
        }
    )
    outcome = audit.vector_validity([bad], 3)
    assert outcome.metadata["bad_norm"] == 1 and outcome.metadata["bad_non_finite"] == 1

    assert audit.error_rate(set(map(str, range(1000))), {"1"}, 0.001).passed
    assert not audit.error_rate(set(map(str, range(999))), {"1"}, 0.001).passed
    assert audit.error_rate(set(), set(), 0.001).passed

    cov = audit.coverage(
        {"a": 7, "b": 7, "c": 7}, {"a": _header(), "b": None, "c": _header(content_hash=8)}, 1
    )
    assert not cov.passed and cov.metadata["missing"] == 1 and cov.metadata["mismatched"] == 1

    now = 1000 + 24 * 3600
    headers = {str(i): _header() for i in range(200)}
    expected = {str(i): (7, 5) for i in range(200)}
    assert audit.staleness(expected, headers, now=now).passed
    expected["0"] = (7, 6)  # the document is newer than its entry
    stale = audit.staleness(expected, headers, now=now)
    assert stale.metadata["older_than_document"] == 1 and stale.passed  # 0.5% < 1%
    expected["1"] = (9, 5)
    assert not audit.staleness(expected, headers, now=now).passed
    assert not audit.staleness({"a": (7, 5)}, {"a": _header()}, now=now + 1).passed  # older than 24h

    assert audit.orphans([], "all").passed and not audit.orphans(["z"], "all").passed


def test_documents_changed_within_the_grace_window_are_not_judged_but_future_ones_are():
    now = 1_000_000  # seconds
    rows = pl.DataFrame(
        {
            "doc_id": ["old", "recent", "edge", "future", "undated", "this-second"],
            "modified_ms": [(now + s) * 1000 for s in (-3600, -30, -120, 600)] + [None, now * 1000 + 400],
        }
    )
    judged, left_out = audit.settled(rows, now, 120)
    assert left_out == 2 and sorted(judged["doc_id"]) == ["edge", "future", "old", "undated"]
    everything, none = audit.settled(rows, now, 0)  # no grace: everything judged
    assert everything.equals(rows) and none == 0
