"""The quality benchmark's pure parts: roff read as text, NAME lines, BM25 tokens, the metrics."""

from benchmarks.manpages import name_line, roff_to_text
from benchmarks.quality import POOL, Scores, candidate_pools, rank_of, tokenize, within

PAGE = r""".\" -*- coding: UTF-8 -*-
.TH LS 1 "September 2022" "GNU coreutils 9.1" "Dienstprogramme für Benutzer"
.SH BEZEICHNUNG
ls \- Verzeichnisinhalte auflisten
.SH ÜBERSICHT
\fBls\fP [\fI\,OPTION\/\fP]… [\fI\,DATEI\/\fP]…
.SH BESCHREIBUNG
.\" Add any additional description here
.PP
Auflistung von Informationen über die DATEIen \(em sortiert.
.TP
\fB\-a\fP, \fB\-\-all\fP
Einträge nicht ignorieren, die mit \(Bq.\(lq beginnen
.B \-\-color
"""


def test_a_page_reads_as_text_without_its_name_section():
    text, sections = roff_to_text(PAGE)
    assert name_line(sections) == ("ls", "Verzeichnisinhalte auflisten")
    assert "Verzeichnisinhalte" not in text  # the query's words are not in the document
    assert text.startswith("ÜBERSICHT\nls [OPTION]… [DATEI]…\nBESCHREIBUNG\n")
    assert "DATEIen — sortiert." in text and "-a, --all" in text and "--color" in text
    assert "\\f" not in text and ".PP" not in text and "Add any additional" not in text
    assert "die mit „.“ beginnen" in text  # named glyphs read as their characters


# as the shadow tools' translations are written: accents as composite glyphs, DocBook's strings
ESCAPED = r""".\" -*- coding: UTF-8 -*-
.ie \n(.g .ds Aq \(aq
.el       .ds Aq '
.ds We top
.ie n \{\
.    ds -- \(*W-
'br\}
.el\{\
.    ds -- \|\(em\|
.    ds We troff-only
'br\}
.TH GROUPADD 8
.SH NOM
groupadd \- Cr\('eer un nouveau groupe
.SH DESCRIPTION
Vous ne pouvez pas ajouter d\*(Aqutilisateur \(`a un groupe\&. Cela doit \(^etre effectu\('e.
\(:Andert die Gr\(:o\(sse, \(oAr, \(/l\[u00F3]d\(vz, \(,ca, \[u0065_0301] \*(We \*(-- \(*p \[xx]\(qq.
"""


def test_accented_letters_glyphs_and_strings_are_read_not_dropped():
    text, sections = roff_to_text(ESCAPED)
    assert name_line(sections) == ("groupadd", "Créer un nouveau groupe")
    assert "ajouter d'utilisateur à un groupe. Cela doit être effectué." in text
    # composites, Unicode escapes (composed), the page's own string as nroff defines it, a known
    # string, Greek;
    # unknown glyphs are dropped
    assert "Ändert die Größe, År, łódž, ça, é top — π ." in text


def test_bm25_tokens_are_words_and_cjk_bigrams():
    assert tokenize("List directory CONTENTS, twice") == ["list", "directory", "contents", "twice"]
    assert tokenize("列出目录内容") == ["列出", "出目", "目录", "录内", "内容"]
    assert tokenize("ls 命令") == ["ls", "命令"]


def test_recall_and_mrr_count_ranks_within_their_depths():
    scores = Scores()
    for rank in (1, 2, 10, 11, None):
        scores.add("same", "de", rank)
    r10, mrr, r100, n = scores.summary("same")
    assert n == 5 and r10 == 3 / 5 and r100 == 4 / 5
    assert abs(mrr - (1 + 1 / 2 + 1 / 10) / 5) < 1e-12
    assert rank_of(["a", "b", "c"], "c") == 3 and rank_of(["a"], "z") is None


def test_candidate_pools_hold_the_relevant_page_and_others_of_its_language_only():
    documents = [{"doc_id": f"p{i}.{lang}", "language": lang} for lang in ("de", "ja") for i in range(100)]
    queries = [{"doc": f"p{i}.de", "language": "de"} for i in range(30)] + [
        {"doc": "p5.ja", "language": "ja"}
    ]
    pools = candidate_pools(queries, documents)
    assert pools == candidate_pools(queries, documents)  # seeded: every run scores the same pools
    for query, pool in zip(queries, pools, strict=True):
        assert len(pool) == POOL and query["doc"] in pool
        assert all(i.endswith("." + query["language"]) for i in pool)
    assert len({frozenset(p) for p in pools}) == len(pools)  # drawn per query
    # a ranking restricted to the pool keeps its order
    ranking = [f"p{i}.de" for i in range(100)]
    assert within(ranking, pools[0]) == [i for i in ranking if i in pools[0]]
    assert rank_of(within(ranking, pools[0]), "p0.de") == 1


def test_the_pooling_sweep_splits_by_page_and_pools_by_each_rule():
    import numpy as np

    from benchmarks.pooling import half, pooled

    # every language of a page falls on the same side; both sides are used
    assert {half(f"ls.1.{lang}") for lang in ("en", "de", "ja", "zh_CN")} == {half("ls.1.en")}
    assert {half(f"page{i}.1.en") for i in range(40)} == {"dev", "test"}
    # two documents: three windows, then one
    vectors = np.array([[1, 0], [0, 1], [0, 1], [1, 1]], dtype=np.float32)
    tokens, counts = np.array([128.0, 128.0, 128.0, 50.0]), np.array([3, 1])
    first = pooled(vectors, tokens, counts, "first")
    np.testing.assert_allclose(first[0], [1, 0])  # the first window alone
    np.testing.assert_allclose(first[1], np.array([1, 1]) / np.sqrt(2))
    mean, lead = pooled(vectors, tokens, counts, "mean"), pooled(vectors, tokens, counts, "lead:0.3")
    assert mean[0] @ [1, 0] < mean[0] @ [0, 1] and lead[0] @ [1, 0] > lead[0] @ [0, 1]


def test_the_multi_vector_rules_score_a_page_by_its_best_window():
    import numpy as np

    from benchmarks.pooling import max_window_scorer, pooled, recall_scored

    # page a: an off-topic first window, then the query's window; page b: one window near both
    vectors = np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    tokens, counts = np.array([128.0, 128.0, 128.0]), np.array([2, 1])
    query = np.array([0.0, 1.0], dtype=np.float32)
    np.testing.assert_allclose(max_window_scorer(vectors, counts)(query), [1.0, 0.8])
    lead = pooled(vectors, tokens, counts, "lead:0.3")
    mixed = max_window_scorer(vectors, counts, lead)(query)
    np.testing.assert_allclose(mixed, (np.array([1.0, 0.8]) + lead @ query) / 2, rtol=1e-6)
    assert (lead @ query)[0] < (lead @ query)[1]  # pooled, the lead window buries page a ...
    # with eleven such neighbours, pooling ranks page a twelfth (a miss at 10); its best window first
    many = np.vstack([vectors[:2], np.tile(vectors[2], (11, 1))])
    many_counts = np.array([2] + [1] * 11)
    documents = [{"doc_id": f"p{i}.1.en", "language": "en"} for i in range(12)]
    queries = [{"kind": "same", "language": "en", "doc": "p0.1.en"}]
    pooled_many = pooled(many, np.full(13, 128.0), many_counts, "lead:0.3")
    missed = recall_scored(documents, queries, query[None, :], lambda v: pooled_many @ v)
    found = recall_scored(documents, queries, query[None, :], max_window_scorer(many, many_counts))
    assert (missed[("same", "all")], found[("same", "all")]) == (0.0, 1.0)


class _Words:
    """A whitespace tokenizer and an encoder that counts what it embeds: the sweep's cache alone."""

    fingerprint = "words"

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def tokenizer(self, texts, **_):
        import re

        return {"offset_mapping": [[m.span() for m in re.finditer(r"\S+", t)] for t in texts]}

    def encode(self, texts, n_tokens):
        import numpy as np

        self.embedded += texts
        return np.ones((len(texts), 2), dtype=np.float32)


def test_the_pooling_sweep_embeds_again_when_the_texts_change(tmp_path):
    from benchmarks.pooling import chunk_vectors

    words = _Words()
    first = chunk_vectors(words, ["a b c", "d e"], 2, 0, 8, tmp_path)
    assert words.embedded == ["a b", "c", "d e"] and first[2].tolist() == [2, 1]
    again = chunk_vectors(words, ["a b c", "d e"], 2, 0, 8, tmp_path)
    assert len(words.embedded) == 3 and all((x == y).all() for x, y in zip(first, again, strict=True))
    chunk_vectors(words, ["a b c", "d f"], 2, 0, 8, tmp_path)  # same count, one text repaired
    assert words.embedded[3:] == ["a b", "c", "d f"]
