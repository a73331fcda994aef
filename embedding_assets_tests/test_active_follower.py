"""The active version's configuration, rebuilt from its spec and recorded model while the
deployment's own settings make another version (defs/active_follower.py)."""

from embedding_assets.defs.active_follower import FROM_DEPLOYMENT, FROM_SPEC, active_model
from embedding_assets.defs.resources import EmbeddingModelResource
from embedding_assets.embedders.for_version import source_of


def test_every_setting_comes_from_the_spec_or_the_deployment_and_none_from_both():
    explicit = {"model", "backend", "embed_model", "runtime", "precision"}
    fields = set(EmbeddingModelResource.model_fields)
    assert set(FROM_SPEC) | set(FROM_DEPLOYMENT) | explicit == fields
    assert not set(FROM_SPEC) & set(FROM_DEPLOYMENT)


def test_the_rebuilt_configuration_makes_exactly_the_active_tag():
    active = EmbeddingModelResource(device="cpu")  # the settings the active version was built with
    spec = active.spec()
    source = source_of(active.embedder())
    now = EmbeddingModelResource(device="cpu", title_repeat=1, max_chars=1000, pooling="mean", batch_size=4)
    assert now.spec().tag != spec.tag  # the deployment's settings changed
    rebuilt = active_model(now, spec, source)
    assert rebuilt.spec().tag == spec.tag
    assert rebuilt.batch_size == 4 and rebuilt.device == "cpu"  # how it runs: this deployment's
    # a model that is not the version's makes another tag, which the follower refuses
    other = active_model(now, spec, {"backend": "transformer", "model": "all-MiniLM-L6-v2"})
    assert other.spec().tag != spec.tag
