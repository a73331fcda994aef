"""Bad input, failing models, checks and alerts."""

import datetime as dt
from pathlib import Path

import bson
import pymongo.errors
import pytest
from bson.raw_bson import RawBSONDocument

from embedding_assets.client import EmbeddingClient
from embedding_assets.defs.resources import EmbeddingModelResource
from embedding_assets.dev.harness import check_results, collection, load_sample, materialize, metadata
from embedding_assets.embedders.sentence_transformer import SentenceTransformerEmbedder
from embedding_assets.embedders.static import StaticEmbedder
from embedding_assets.stores.dead_letters import FAILED, REJECTED, WARNING
from embedding_assets.stores.feature_store import FeatureStore

POISON_MARK = "☠poison☠"


class PoisonAwareEmbedder(SentenceTransformerEmbedder):
    """The real model, which raises on chunks carrying the mark: a model error for one input."""

    def encode(self, texts, n_tokens=None):
        if any(POISON_MARK in t for t in texts):
            raise RuntimeError("model blew up on this input")
        return super().encode(texts, n_tokens)


class PoisonAwareStaticEmbedder(StaticEmbedder):
    """The fast tier, raising as ``PoisonAwareEmbedder`` does: a thousand documents in seconds."""

    def encode(self, texts, n_tokens=None):
        if any(POISON_MARK in t for t in texts):
            raise RuntimeError("model blew up on this input")
        return super().encode(texts, n_tokens)


class PoisonAwareModel(EmbeddingModelResource):
    def embedder(self):
        if self._embedder is None:
            if self.backend == "static":
                self._embedder = PoisonAwareStaticEmbedder(None, cache_dir=Path(self.static_dir))
            else:
                self._embedder = PoisonAwareEmbedder(device="cpu", batch_size=self.batch_size)
        return self._embedder


def _raw_with_bad_bytes(doc_id: str, bad: bytes) -> RawBSONDocument:
    """A document whose body holds bytes that are not UTF-8 (as a careless writer can store)."""
    placeholder = "X" * len(bad)
    raw = bson.encode(
        {
            "doc_id": doc_id,
            "title": "Encoding",
            "body": f"text {placeholder} text",
            "language": "en",
            "modified_at": dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
        }
    )
    return RawBSONDocument(raw.replace(placeholder.encode(), bad))


@pytest.mark.servers
@pytest.mark.slow
def test_poison_documents_among_a_thousand_good_ones(pipeline_env, static_dir):
    good = load_sample(pipeline_env, 1000)
    coll = collection(pipeline_env)
    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # modified after the read began
    coll.insert_many(
        [
            {"title": "no id at all", "body": "lost"},
            {"doc_id": "p-null", "title": None, "body": None, "modified_at": when},
            {"doc_id": "p-types", "title": 42, "body": ["not", "text"], "modified_at": when},
            {"doc_id": "p-blank", "title": " ", "body": "\n\t  ", "modified_at": when},
            {"doc_id": "p-over", "title": "Long", "body": "word " * 20_000, "modified_at": when},
            {"doc_id": "p-10mb", "title": "Huge", "body": "x" * 10_000_000, "modified_at": when},
            {
                "doc_id": "p-control",
                "title": "Bell\x07",
                "body": "tab\x00null\x1bescape",
                "modified_at": when,
            },
            {
                "doc_id": "p-language",
                "title": "Klingon",
                "body": "Qapla' batlh",
                "language": "tlh-XX",
                "modified_at": when,
            },
            {"doc_id": "p-dup", "title": "First copy", "body": "one", "modified_at": when},
            {
                "doc_id": "p-dup",
                "title": "Second copy",
                "body": "two",
                "modified_at": when + dt.timedelta(seconds=1),
            },
            {
                "doc_id": "p-racing",
                "title": "Moving",
                "body": "edited during the read",
                "modified_at": future,
            },
            {
                "doc_id": "p-model",
                "title": "Model",
                "body": f"this one breaks the model {POISON_MARK}",
                "modified_at": when,
            },
        ]
    )
    for doc_id, bad in (("p-utf8", b"\xff\xfe"), ("p-surrogate", b"\xed\xa0\x80")):  # CESU lone surrogate
        try:  # MongoDB stores strings with invalid UTF-8; SecantusDB refuses them
            coll.insert_one(_raw_with_bad_bytes(doc_id, bad))
        except pymongo.errors.OperationFailure:  # then the same bytes as a binary body
            coll.insert_one(
                {
                    "doc_id": doc_id,
                    "title": "Encoding",
                    "body": bson.Binary(b"text " + bad + b" text"),
                    "modified_at": when,
                }
            )

    model = PoisonAwareModel(backend="static", static_dir=static_dir, oversize="reject", max_chars=50_000)
    result = materialize(resources={"embedding_model": model})
    assert result.success
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    client = EmbeddingClient(store)
    entries = client.get_many([d["doc_id"] for d in good])
    assert all(e is not None for e in entries), "every good document is embedded"

    letters = {d.doc_id: d for d in store.control.dead_letters(client.version).all()}
    expected = {
        "p-null": (REJECTED, "no text"),
        "p-types": (REJECTED, "title is int, not text"),
        "p-blank": (REJECTED, "no text"),
        "p-over": (REJECTED, "over the cap of 50000"),
        "p-10mb": (REJECTED, "text of 10000010 characters is over the cap"),
        "p-control": (WARNING, "control characters removed"),
        "p-language": (WARNING, "unknown language code 'tlh-XX'"),
        "p-dup": (WARNING, "duplicate doc_id: 2 copies"),
        "p-racing": (WARNING, "modified while its shard was being read"),
        "p-utf8": (WARNING, "invalid UTF-8 replaced"),
        "p-surrogate": (WARNING, "invalid UTF-8 replaced"),
        "p-model": (FAILED, "embedding failed: RuntimeError: model blew up"),
    }
    for doc_id, (kind, reason) in expected.items():
        assert doc_id in letters, doc_id
        assert letters[doc_id].kind == kind, (doc_id, letters[doc_id])
        assert reason in letters[doc_id].reason, (doc_id, letters[doc_id].reason)
    missing_id = [d for d in letters.values() if d.doc_id.startswith("_id:")]
    assert len(missing_id) == 1 and "missing doc_id" in missing_id[0].reason
    assert len(letters) == len(expected) + 1
    # warnings are written, rejected and failed are not
    for doc_id, (kind, _) in expected.items():
        assert (client.get(doc_id) is not None) == (kind == WARNING), doc_id
    assert client.get("p-dup").content_hash != 0
    # the error rate counts model failures over documents with text, and matches the check
    attempted = len(good) + sum(1 for k, _ in expected.values() if k != REJECTED)
    rate = metadata(result, "document_vectors")
    assert rate["failures"] == 1 and rate["attempted"] == attempted
    evaluation = check_results(result)["error_rate"]
    assert evaluation.metadata["failed"].value == 1
    assert evaluation.metadata["attempted"].value == attempted
    assert evaluation.metadata["error_rate"].value == pytest.approx(1 / attempted)
    assert evaluation.passed  # 1 / 1009 < 0.1%


@pytest.mark.servers
@pytest.mark.slow
def test_error_rate_above_limit_blocks_publishing_and_a_fix_clears_the_letter(pipeline_env):
    docs = load_sample(pipeline_env, 40)
    coll = collection(pipeline_env)
    coll.update_one({"doc_id": docs[0]["doc_id"]}, {"$set": {"body": f"bad {POISON_MARK}"}})
    model = {"embedding_model": PoisonAwareModel(device="cpu")}
    result = materialize(resources=model, raise_on_error=False)
    assert not result.success  # a blocking check failed: the run says so
    evaluations = check_results(result)
    assert not evaluations["error_rate"].passed  # 1 of 40 is 2.5%
    assert evaluations["vector_validity"].passed
    published = [
        e.materialization.asset_key.to_user_string() for e in result.get_asset_materialization_events()
    ]
    assert "feature_store_entries" not in published  # blocked: nothing was published
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    assert store.control.active_version() is None
    version = metadata(result, "document_vectors")["version"]
    [letter] = store.control.dead_letters(version).all()
    assert letter.kind == FAILED and letter.attempts == 1

    result = materialize(resources=model, raise_on_error=False)  # a later run retries it
    [letter] = store.control.dead_letters(version).all()
    assert letter.attempts == 2
    assert metadata(result, "document_vectors")["embedded"] == 0  # the 39 good ones were kept

    coll.update_one({"doc_id": docs[0]["doc_id"]}, {"$set": {"body": "fixed text"}})
    result = materialize(resources=model)
    assert all(e.passed for e in check_results(result).values())
    assert store.control.dead_letters(version).all() == []
    assert len(list(store.entries.scan_ids(version))) == 40
