import polars as pl

from embedding_assets.lib.frames import split_own


def test_a_delta_run_computes_its_own_rows_and_carries_the_others_as_stored():
    frame = pl.DataFrame({"doc_id": ["a", "b", "c", "new"], "x": [1, 2, 3, 4]})
    previous = pl.DataFrame({"doc_id": ["a", "b", "c", "gone"], "x": [10, 20, 30, 40]})
    own, carried = split_own(frame, previous, ["b"])
    assert own["doc_id"].to_list() == ["b"]
    # the others' rows as stored; a document another run added is that run's, one gone is dropped
    assert carried["doc_id"].to_list() == ["a", "c"] and carried["x"].to_list() == [10, 30]
    assert split_own(frame, previous, []) == (frame, None)  # a full run computes every row
    assert split_own(frame, None, ["b"]) == (frame, None)  # nothing stored: every row
