import polars as pl

from embedding_assets.lib.frames import lists_of, split_own


def test_a_delta_run_computes_its_own_rows_and_carries_the_others_as_stored():
    frame = pl.DataFrame({"doc_id": ["a", "b", "c", "new"], "x": [1, 2, 3, 4]})
    previous = pl.DataFrame({"doc_id": ["a", "b", "c", "gone"], "x": [10, 20, 30, 40]})
    own, carried = split_own(frame, previous, ["b"])
    assert own["doc_id"].to_list() == ["b"]
    # the others' rows as stored; a document another run added is that run's, one gone is dropped
    assert carried["doc_id"].to_list() == ["a", "c"] and carried["x"].to_list() == [10, 30]
    assert split_own(frame, previous, []) == (frame, None)  # a full run computes every row
    assert split_own(frame, None, ["b"]) == (frame, None)  # nothing stored: every row


def test_a_list_column_from_values_end_to_end_equals_one_from_python_lists():
    rows = [["a"], [], ["b", "c", None], [], ["d"]]
    flat = [v for row in rows for v in row]
    built = lists_of(flat, [len(r) for r in rows], pl.String)
    assert built.dtype == pl.List(pl.String) and built.to_list() == rows
    assert lists_of([], [0, 0], pl.Int32).to_list() == [[], []]  # empty lists, not nulls
    assert lists_of([], [], pl.Int32).len() == 0
