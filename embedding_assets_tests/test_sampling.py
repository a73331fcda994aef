from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from embedding_assets.lib.sampling import bottom_k, salted_hash


def _by_definition(items: list[tuple[str, int]], size: int, salt: int) -> list[tuple[str, int]]:
    keys = sorted({k for k, _ in items}, key=lambda k: salted_hash(k, salt))[:size]
    return [item for item in items if item[0] in set(keys)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.text(max_size=6), st.integers(0, 3)), max_size=120),
    st.integers(0, 40),
    st.integers(0, 2**63 - 1),
)
def test_bottom_k_keeps_the_smallest_hashes_with_every_copy_in_read_order(items, size, salt):
    kept, read = bottom_k(iter(items), size, key=lambda item: item[0], salt=salt)
    assert read == len(items)
    assert kept == _by_definition(items, size, salt)


def test_bottom_k_draws_each_key_about_equally_often():
    keys = [f"doc-{i}" for i in range(200)]
    drawn: Counter[str] = Counter()
    for salt in range(500):
        kept, _ = bottom_k(keys, 20, key=str, salt=salt)
        assert len(kept) == 20
        drawn.update(kept)
    # each key: 500 draws at 10% -> 50 expected; a biased hash or order would skew the extremes
    assert min(drawn.values()) > 20 and max(drawn.values()) < 85
    first_half = sum(drawn[k] for k in keys[:100])
    assert abs(first_half - 5000) < 400  # early and late items alike


def test_bottom_k_of_nothing_or_zero():
    assert bottom_k([], 5, key=str, salt=1) == ([], 0)
    assert bottom_k(["a", "b"], 0, key=str, salt=1) == ([], 2)


def test_seen_keys_answers_for_what_was_added_and_only_that():
    from embedding_assets.lib.sampling import SeenKeys

    seen = SeenKeys()
    assert seen.seen(["a"]) == set()
    for i in range(0, 10_000, 2):
        seen.add(f"doc-{i}")
    asked = [f"doc-{i}" for i in range(10_000)] + ["", "é", "\udcff"]
    assert seen.seen(asked) == {f"doc-{i}" for i in range(0, 10_000, 2)}
    seen.add("é")  # added after a question: answered from then on
    assert seen.seen(["é", "e"]) == {"é"}
    assert len(seen) == 5001
