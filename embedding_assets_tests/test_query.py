"""The query side on real servers: queries embedded by the version's own model, candidates
re-ranked, and every query that is not the version's refused before it is scored."""

import numpy as np
import pytest

from embedding_assets.cli import main
from embedding_assets.client import EmbeddingClient, QueryVector, VersionMismatch
from embedding_assets.dev.harness import load_sample, materialize, metadata
from embedding_assets.embedders.for_version import QueryModelMismatch
from embedding_assets.stores.control_plane import query_model_key
from embedding_assets.stores.feature_store import FeatureStore

pytestmark = [pytest.mark.servers, pytest.mark.slow]


@pytest.fixture
def stored(pipeline_env):
    """56 sample documents (4 topics in 14 languages) embedded by the default model."""
    docs = load_sample(pipeline_env, 56)
    result = materialize()
    assert result.success
    return docs, str(metadata(result, "feature_store_entries")["version"])


def _topics(docs, ranking):
    by_id = {d["doc_id"]: d["topic"] for d in docs}
    return [by_id[doc_id] for doc_id in ranking.ids()]


def test_queries_in_any_language_rank_the_topic_first(pipeline_env, stored):
    docs, version = stored
    client = EmbeddingClient.from_url(pipeline_env["REDIS_URL"])
    ids = [d["doc_id"] for d in docs]
    language = {d["doc_id"]: d["language"] for d in docs}
    queries = {
        "de": "Fußballspiel und Tore im Stadion",
        "en": "the football match ended with a late goal",
        "zh": "足球比赛",
    }
    for lang, text in queries.items():
        query = client.embed_query(text)
        assert isinstance(query, QueryVector) and query.version == version
        assert query.vector.shape == (384,) and abs(float(np.linalg.norm(query.vector)) - 1) < 1e-4
        ranking = client.rerank(query, ids)
        assert len(ranking) == len(ids) and ranking.missing == []
        # first the topic in the query's own language, then the topic in the others (14 of each)
        assert _topics(docs, ranking)[0] == "football" and language[ranking.ids()[0]] == lang, text
        assert _topics(docs, ranking)[:14].count("football") >= 12, text
    # the query prompt is the model's: a query embedded without it is another vector
    embedder = client.query_embedder()
    bare = embedder.encode(["Fußballspiel"])[0]  # as a document, with "passage: "
    assert float(client.embed_query("Fußballspiel").vector @ bare) < 0.999


def test_rerank_reports_candidates_without_an_entry_and_fuses_first_stage_scores(pipeline_env, stored):
    docs, _ = stored
    client = EmbeddingClient.from_url(pipeline_env["REDIS_URL"])
    cooking = [d["doc_id"] for d in docs if d["topic"] == "cooking"][:3]
    football = [d["doc_id"] for d in docs if d["topic"] == "football"][:3]
    candidates = [*cooking, "never-indexed", *football]
    first_stage = [5.0, 4.0, 3.0, 9.0, 2.0, 1.0, 0.5]  # a lexical stage that prefers cooking
    query = client.embed_query("a recipe: flour, butter and an oven")
    cosine = client.rerank(query, candidates)
    assert cosine.missing == ["never-indexed"] and "never-indexed" not in cosine.ids()
    assert set(cosine.ids()[:3]) == set(cooking)
    rrf = client.rerank(query, candidates, first_stage_scores=first_stage, fusion="rrf")
    linear = client.rerank(query, candidates, first_stage_scores=first_stage, fusion="linear", weight=0.9)
    assert set(rrf.ids()[:3]) == set(cooking) and linear.ids()[:3] == cooking
    # rrf without scores takes the candidates' order as the first stage's
    assert client.rerank(query, candidates, fusion="rrf").ids()[0] == cooking[0]
    with pytest.raises(ValueError, match="first-stage scores for"):
        client.rerank(query, candidates, first_stage_scores=[1.0])
    # similar: the documents nearest one stored document
    similar = client.similar(football[0], [*cooking, *football[1:]])
    assert set(similar.ids()[:2]) == set(football[1:])
    with pytest.raises(LookupError, match="has no entry"):
        client.similar("never-indexed", football)


def test_a_query_vector_not_of_the_version_read_is_refused(pipeline_env, stored, monkeypatch):
    docs, version = stored
    ids = [d["doc_id"] for d in docs][:5]
    client = EmbeddingClient.from_url(pipeline_env["REDIS_URL"])
    query = client.embed_query("football")
    with pytest.raises(TypeError, match="never scored"):
        client.rerank(query.vector, ids)  # a bare vector: its model is unknown
    other = QueryVector(query.vector, "all-minilm-l6-v2-0badc0de")
    with pytest.raises(VersionMismatch, match="embed the query again"):
        client.rerank(other, ids)
    with pytest.raises(VersionMismatch, match="shape"):
        client.rerank(QueryVector(query.vector[:100], version), ids)

    # the version's model cannot be found: a client given another model, nothing recorded, EA_MODEL
    # another model: no query vector is made at all
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    store.client.delete(query_model_key(version))
    monkeypatch.setenv("EA_MODEL", "all-MiniLM-L6-v2")
    wrong = EmbeddingClient.from_url(pipeline_env["REDIS_URL"], model="all-MiniLM-L6-v2")
    with pytest.raises(QueryModelMismatch, match=f"no model at hand embeds queries for version {version}"):
        wrong.embed_query("football")
    # a client pointed at the right folder finds it again
    right = EmbeddingClient.from_url(pipeline_env["REDIS_URL"], model=client.query_embedder().model_name)
    assert np.allclose(right.embed_query("football").vector, query.vector, atol=1e-5)


def test_search_command_ranks_every_entry_or_a_candidate_file(pipeline_env, stored, tmp_path, capsys):
    docs, version = stored
    assert main(["search", "Kochrezept mit Mehl und Butter", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert f"56 candidates in {version}" in out
    top = [line.split()[1] for line in out.splitlines()[1:4]]
    assert {d["topic"] for d in docs if d["doc_id"] in top} == {"cooking"}
    football = [d["doc_id"] for d in docs if d["topic"] == "football"][:2]
    candidates = tmp_path / "candidates.tsv"
    candidates.write_text(f"{football[0]}\t3.5\nmissing-doc\t2.0\n{football[1]}\t1.0\n")
    assert main(["search", "football", "--candidates", str(candidates), "--fusion", "rrf"]) == 0
    out = capsys.readouterr().out
    assert "3 candidates" in out and "1 candidates have no entry, e.g. ['missing-doc']" in out
