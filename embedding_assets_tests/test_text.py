from embedding_assets.lib.text import (
    coerce_text_field,
    content_hash,
    embeddable_text,
    normalize_text,
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
