from hypothesis import given
from hypothesis import strategies as st

from embedding_assets.lib.text import (
    coerce_text_field,
    content_hash,
    embeddable_text,
    normalize_text,
    repair_text,
)


def test_normalize_folds_whitespace_and_drops_controls():
    assert normalize_text("  a\tb\n\nc \x00d\x1f e\x85 ") == "a b c d e"


def test_normalize_composes_unicode():
    decomposed = "Cafe\u0301"
    assert normalize_text(decomposed) == "Caf\u00e9"


def test_normalize_replaces_lone_surrogates():
    out = normalize_text("bad \ud800 text")
    assert out == "bad \ufffd text"
    out.encode("utf-8")  # encodable now


def test_title_is_repeated_before_body():
    e = embeddable_text("Title", "Body text.", title_repeat=2)
    assert e.text == "Title\nTitle\nBody text."
    assert e.skip_reason is None


def test_title_only_and_body_only_documents_embed():
    assert embeddable_text("Only title", None).text == "Only title\nOnly title"
    assert embeddable_text(None, "Only body").text == "Only body"


def test_empty_documents_are_skipped_with_reason():
    for title, body in [(None, None), ("", "   "), ("\x00", "\n\t")]:
        e = embeddable_text(title, body)
        assert e.text == ""
        assert "no text" in e.skip_reason


def test_long_text_is_truncated_with_note():
    e = embeddable_text(None, "word " * 1000, max_chars=100)
    assert len(e.text) == 100
    assert "truncated" in e.note


def test_non_text_fields_become_notes():
    assert coerce_text_field(42, "title") == (None, "title is int, not text; ignored")
    assert coerce_text_field(b"caf\xc3\xa9", "body")[0] == "café"
    assert coerce_text_field("x", "body") == ("x", None)
    assert coerce_text_field(None, "body") == (None, None)


def test_content_hash_depends_on_text_and_version_only():
    a = embeddable_text("T", "Body  text").text
    b = embeddable_text("T", "Body text\n").text  # same after normalization
    assert content_hash(a, "v1") == content_hash(b, "v1")
    assert content_hash(a, "v1") != content_hash(a + "!", "v1")
    assert content_hash(a, "v1") != content_hash(a, "v2")
    assert 0 <= content_hash(a, "v1") < 2**64


def _repaired_one_rule_at_a_time(value: str) -> tuple[str, list[str]]:
    """The rules applied in order, each by itself: what repair_text's one-scan shortcut must equal."""
    import re
    import unicodedata

    notes = []
    if re.search("[\ud800-\udfff]", value):
        value = re.sub("[\ud800-\udfff]", "\ufffd", value)
        notes.append("lone surrogates replaced")
    elif "\ufffd" in value:
        notes.append("invalid UTF-8 replaced")
    value = unicodedata.normalize("NFC", value)
    if re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", value):
        value = re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", " ", value)
        notes.append("control characters removed")
    return " ".join(value.split()), notes


# whitespace of every kind, controls, combining marks, Hangul jamo, surrogates, U+FFFD, CJK, ASCII
_TRICKY = (
    "aZ09 .,\t\n\r\x0b\x0c\x1c\x1f\x00\x7f\x85\x9f\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f"
    "\u3000\u200b\u0301\u0308\u0327\u1100\u1161\u11a8\uac00\u212b\u2126\ufb01\ud800\udfff\ufffd"
    "\u00e9\u0435\u4e2d\u00c5"
)


@given(st.text(alphabet=st.sampled_from(_TRICKY), max_size=40))
def test_repair_text_equals_its_rules_applied_one_at_a_time(value):
    assert repair_text(value) == _repaired_one_rule_at_a_time(value)


def _spec(max_chars: int = 200_000, title_repeat: int = 2):
    from embedding_assets.lib.versioning import EmbeddingSpec

    return EmbeddingSpec(
        model="m",
        model_fingerprint="f",
        dimension=8,
        window_tokens=512,
        overlap_tokens=0,
        title_repeat=title_repeat,
        max_chars=max_chars,
        text_rules="t1",
        precision="fp32",
        quantization="int8",
    )


def _frame_rule_equals_row_rule(titles, bodies, notes, spec) -> None:
    """document_texts row by row against document_text and content_hash, the reference."""
    import polars as pl

    from embedding_assets.lib.text import document_text, document_texts

    snapshot = pl.DataFrame(
        {"title": titles, "body": bodies, "notes": notes},
        schema={n: pl.String for n in ("title", "body", "notes")},
    )
    got = document_texts(snapshot, spec).rows()
    for row, (title, body, note) in enumerate(zip(titles, bodies, notes, strict=True)):
        want = document_text(title, body, spec, notes=note)
        expected = (
            want.text,
            want.skip_reason,
            want.note,
            None if want.skip_reason else content_hash(want.text, spec.tag),
        )
        assert got[row] == expected, (row, title, body, note)


def test_the_frame_rule_equals_the_row_rule_on_every_character():
    """Every code point a polars string can hold, inside, around and alone, through the frame
    path: whitespace (Rust's \\s against str.isspace), controls, marks NFC moves or composes."""
    import sys

    from embedding_assets.lib.text import FRAME_RULE_ROWS

    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    groups = [chars[i : i + 8] for i in range(0, len(chars), 8)]  # neighbours share a row
    assert len(groups) >= FRAME_RULE_ROWS
    titles = ["".join(f"a{c}b" for c in group) for group in groups]
    bodies = ["".join(f"{c}x \u0301{c}e" for c in group) for group in groups]
    _frame_rule_equals_row_rule(titles, bodies, [None] * len(groups), _spec())


_TRICKY = [
    *" \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2000\u2009\u2028\u2029\u202f\u3000",  # whitespace
    *"\x00\x07\x7f\x9f\ufffd",  # what repairs change
    *"e\u0301\u0316\u0327\u093c\u094d\u0e48\u05b0",  # marks: compose, reorder (ccc 220/230), viramas
    *"\u00e9\u212b\u2126\uf900\u1100\u1161\u11a8\uac00\u0b47\u0b3e",  # composed, singletons, jamo
    *"aZ09.-\u00df\u0416\u6771\u0627\U0001f600\U000105c9",  # plain text of several scripts
]


@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.text(alphabet=st.sampled_from(_TRICKY), max_size=12)),
            st.one_of(st.none(), st.text(alphabet=st.sampled_from(_TRICKY), max_size=40)),
            st.sampled_from([None, "", "doc_id was int"]),
        ),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from([5, 30, 200_000]),
    st.sampled_from([0, 1, 3]),
)
def test_the_frame_rule_equals_the_row_rule_on_tricky_documents(docs, max_chars, repeat):
    """Mixed rows through both paths (padded past FRAME_RULE_ROWS with plain ones, and alone):
    repairs, NFC in context, caps, empty and missing fields, notes."""
    from embedding_assets.lib.text import FRAME_RULE_ROWS

    spec = _spec(max_chars=max_chars, title_repeat=repeat)
    padded = docs * (FRAME_RULE_ROWS // len(docs) + 1)
    for rows in (docs, padded):
        titles, bodies, notes = (list(column) for column in zip(*rows, strict=True))
        _frame_rule_equals_row_rule(titles, bodies, notes, spec)
