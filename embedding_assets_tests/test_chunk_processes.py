from embedding_assets.dev import corpus
from embedding_assets.lib.chunk import ChunkPlan, chunk_frame
from embedding_assets.lib.chunk_processes import MIN_DOCUMENTS, chunker, processes_for
from embedding_assets.lib.snapshot import snapshot_frame
from embedding_assets.lib.versioning import EmbeddingSpec

WHOLE = ChunkPlan(EmbeddingSpec("m", "f", 16, 8192, 0, 2, 1000, "t1", "fp32", "int8"), single_chunk=True)


def test_only_large_full_runs_of_whole_document_versions_get_workers():
    big = dict(shards=16, documents=MIN_DOCUMENTS, delta=False, cores=2)
    assert processes_for(WHOLE, **big) == 2
    assert processes_for(WHOLE, **{**big, "cores": 64}) == 8  # at most MAX_PROCESSES, at most one per shard
    assert processes_for(WHOLE, **{**big, "shards": 3, "cores": 64}) == 3
    assert processes_for(WHOLE, **{**big, "documents": MIN_DOCUMENTS - 1}) == 0
    assert processes_for(WHOLE, **{**big, "delta": True}) == 0  # a sensor's delta stays in the step
    assert processes_for(WHOLE, **{**big, "shards": 1}) == 0
    assert processes_for(WHOLE, **{**big, "cores": 1}) == 0
    windows = ChunkPlan(WHOLE.spec, single_chunk=False)  # token windows need the tokenizer here
    assert processes_for(windows, **big) == 0


def test_worker_processes_chunk_exactly_as_the_step_does():
    docs = list(corpus.generate_documents(300, mean_sentences=3))
    docs[5]["body"] = "bad\x00text\u200b with controls"  # repaired, with a note
    docs[7]["title"] = docs[7]["body"] = ""  # skipped, with a reason
    snapshot = snapshot_frame(docs)
    first, second = snapshot.slice(0, 150), snapshot.slice(150)
    stored = chunk_frame(first, None, WHOLE)[0]
    here = [
        chunk_frame(first, None, WHOLE),
        chunk_frame(first, None, WHOLE, stored),
        chunk_frame(second, None, WHOLE),
    ]
    with chunker(WHOLE, None, processes=2) as chunk:
        there = [chunk(first, None), chunk(first, stored), chunk(second, None)]
    for (a, a_reused), (b, b_reused) in zip(here, there, strict=True):
        assert a.equals(b)
        assert a_reused == b_reused
    assert len(there[1][1]) > 140  # unchanged rows reused, not chunked again
    assert there[0][0]["note"].drop_nulls().len() >= 1  # the repaired document
    assert there[0][0]["skip_reason"].drop_nulls().len() >= 1  # the empty one
