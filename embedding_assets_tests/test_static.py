"""The static tier embeds the whole text, however long."""

from pathlib import Path

import numpy as np
import pytest

from embedding_assets.dev import corpus
from embedding_assets.embedders.static import StaticEmbedder

pytestmark = pytest.mark.slow


def test_a_long_document_is_embedded_whole_not_its_first_512_tokens(static_dir):
    embedder = StaticEmbedder(None, cache_dir=Path(static_dir))
    first = " ".join(corpus.TEXT["en"]["cooking"][1] * 400)  # ~ 4,000 tokens about bread
    second = " ".join(corpus.TEXT["en"]["football"][1] * 400)  # then as many about football
    whole, head, tail = embedder.encode([f"{first} {second}", first[:2000], second])
    assert len(first) + len(second) > 40_000
    assert float(whole @ tail) > 0.5  # the second half is in the vector (truncated: ~0.15)
    assert float(whole @ head) < 0.95  # and it is not just the first 512 tokens
    # the version says so: releases that truncated wrote another version
    assert embedder.fingerprint.endswith(":whole")
    assert np.isclose(np.linalg.norm(whole), 1.0)


def test_lead_pooling_weighs_each_block_of_tokens_as_the_transformer_tier_weighs_its_windows(static_dir):
    """Under ``lead`` the i-th block of 128 tokens counts 0.3**i: checked against the table by
    hand. The opening dominates; queries (one block) are embedded as before."""
    mean = StaticEmbedder(None, cache_dir=Path(static_dir))
    lead = StaticEmbedder(None, cache_dir=Path(static_dir), pooling="lead", window=128)
    first = " ".join(corpus.TEXT["en"]["cooking"][1] * 40)
    second = " ".join(corpus.TEXT["en"]["football"][1] * 40)
    text = f"{first} {second}"
    tokenizer, table = lead._lookup
    ids = np.array(tokenizer.encode(text, add_special_tokens=False).ids)
    assert len(ids) > 4 * 128
    by_hand = (0.3 ** (np.arange(len(ids)) // 128)) @ table[ids]
    [vector] = lead.encode([text])
    np.testing.assert_allclose(vector, by_hand / np.linalg.norm(by_hand), atol=1e-5)
    [bread], [football], [plain] = lead.encode([first]), lead.encode([second]), mean.encode([text])
    assert float(vector @ bread) - float(vector @ football) > float(plain @ bread) - float(plain @ football)
    query = ["how long should bread dough rise"]
    np.testing.assert_allclose(lead.encode_queries(query), mean.encode_queries(query), atol=1e-6)


def test_the_table_is_mapped_from_a_float32_copy_beside_the_model_and_follows_its_rebuilds(tmp_path):
    """A run that embeds a few documents maps the table instead of reading and converting it;
    the copy sits outside the model's folder, whose files make the version's fingerprint."""
    import os

    from safetensors.numpy import save_file

    from embedding_assets.embedders.static import table_copy, token_table
    from embedding_assets.lib.versioning import model_fingerprint

    folder = tmp_path / "static-model"
    folder.mkdir()
    table = np.arange(40, dtype=np.float16).reshape(10, 4) / 7
    save_file({"embeddings": table}, str(folder / "model.safetensors"))
    fingerprint = model_fingerprint(str(folder))

    mapped = token_table(folder)
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.float32
    assert np.array_equal(mapped, table.astype(np.float32))
    assert table_copy(folder).exists() and table_copy(folder).parent == folder.parent
    assert model_fingerprint(str(folder)) == fingerprint

    rebuilt = table * 2  # distilled again: the copy is written anew
    save_file({"embeddings": rebuilt}, str(folder / "model.safetensors"))
    later = table_copy(folder).stat().st_mtime + 5
    os.utime(folder / "model.safetensors", (later, later))
    assert np.array_equal(token_table(folder), rebuilt.astype(np.float32))


def _rss_file_mb() -> float:
    with open("/proc/self/status") as status:
        return int(next(x for x in status if x.startswith("RssFile:")).split()[1]) / 1024


def _mapped_mb(path: Path) -> float:
    """This process's resident MB of its mapping of ``path``; -1 where it maps none."""
    with open("/proc/self/smaps") as smaps:
        lines = smaps.read().splitlines()
    for at, line in enumerate(lines):
        if line.endswith(f" {path}"):
            rss = next(x for x in lines[at + 1 :] if x.startswith("Rss:"))
            return int(rss.split()[1]) / 1024
    return -1.0


def test_the_mapped_table_leaves_resident_memory_when_released_and_is_read_again_when_needed(static_dir):
    """A full run reads nearly every row of the table (256 MB, mapped from a file: no trim hands
    it back). Released, its pages leave the process's resident memory; the next encode maps
    what it reads again and embeds exactly as before."""
    embedder = StaticEmbedder(None, cache_dir=Path(static_dir))
    assert embedder.release_pages() is False  # nothing read yet: nothing to release
    texts = [" ".join(corpus.TEXT[lang]["cooking"][1]) for lang in corpus.TEXT]
    before = embedder.encode(texts)
    table = embedder._lookup[1]
    assert float(np.asarray(table).sum(dtype=np.float64)) != 0.0  # every page read, as 100k documents do
    held = _rss_file_mb()
    assert embedder.release_pages() is True
    assert held - _rss_file_mb() > 0.8 * table.nbytes / 2**20
    np.testing.assert_array_equal(embedder.encode(texts), before)


@pytest.mark.servers
@pytest.mark.slow
def test_versions_says_what_the_static_tier_is_for(pipeline_env, monkeypatch, static_dir, capsys):
    from embedding_assets.cli import main
    from embedding_assets.dev.harness import load_sample, materialize

    monkeypatch.setenv("EA_BACKEND", "static")
    monkeypatch.setenv("EA_STATIC_DIR", static_dir)
    load_sample(pipeline_env, 16)
    assert materialize().success
    assert main(["versions"]) == 0
    listing = capsys.readouterr().out
    assert "static-" in listing and "ranks below BM25" in listing and "0.483" in listing


@pytest.mark.servers
def test_a_run_never_distils_it_refuses_with_the_command_that_builds_the_model(
    pipeline_env, monkeypatch, tmp_path
):
    from embedding_assets.dev.harness import load_sample, materialize

    empty = tmp_path / "no-models"
    monkeypatch.setenv("EA_BACKEND", "static")
    monkeypatch.setenv("EA_STATIC_DIR", str(empty))
    load_sample(pipeline_env, 4)
    result = materialize(raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    message = failures[0].step_failure_data.error.message
    assert (
        "is not built" in message
        and "embedding-assets model" in message
        and "never done inside a run" in message
    )
    assert not any(p.name.startswith("static-") for p in empty.glob("*"))  # nothing distilled


def test_the_model_command_builds_the_static_model_outside_runs(static_dir, monkeypatch, capsys):
    from embedding_assets.cli import main

    monkeypatch.setenv("EA_BACKEND", "static")
    monkeypatch.setenv("EA_STATIC_DIR", static_dir)  # the machine's, built once (conftest)
    assert main(["model"]) == 0
    assert "static-multilingual-e5-small" in capsys.readouterr().out


def test_the_model_command_also_writes_the_float32_table_so_no_run_converts_it(
    static_dir, monkeypatch, capsys, tmp_path
):
    """Converting the float16 table takes seconds and ~0.6 GB at its peak: the build does it (and
    redoes it for a model distilled by an earlier release), never a run's step."""
    import shutil

    from embedding_assets.cli import main
    from embedding_assets.embedders.packaged import resolve
    from embedding_assets.embedders.static import distilled_path, table_copy

    machine = distilled_path(Path(static_dir), resolve(None), 256)
    cache = tmp_path / "static"
    folder = cache / machine.name
    shutil.copytree(machine, folder)  # as a model distilled before this release left it: no table
    monkeypatch.setenv("EA_BACKEND", "static")
    monkeypatch.setenv("EA_STATIC_DIR", str(cache))
    assert distilled_path(cache, resolve(None), 256) == folder and not table_copy(folder).exists()
    assert main(["model"]) == 0
    assert table_copy(folder).exists()


@pytest.mark.servers
def test_a_full_run_loads_the_model_beside_its_scan_and_frees_memory_after_it_others_neither(
    pipeline_env, monkeypatch, static_dir
):
    """The tokenizer and table (half a second at every run's start) are read in a thread of the
    snapshot step, while the server answers its scan; a run that does not embed reads nothing.
    The publish, the run's encodes done, drops the table's pages from the process; the store
    audit, a full run's last step, first hands back what the run freed. The audit alone (every
    ten minutes) has nothing to hand back and does not pay for it."""
    import threading

    import dagster as dg

    from embedding_assets.defs import audit
    from embedding_assets.defs.assets import document_snapshots
    from embedding_assets.defs.partitions import range_tags
    from embedding_assets.defs.resources import build_resources
    from embedding_assets.dev import harness
    from embedding_assets.embedders import static
    from embedding_assets.embedders.static import table_copy

    monkeypatch.setenv("EA_BACKEND", "static")
    monkeypatch.setenv("EA_STATIC_DIR", static_dir)
    preloads: list[str] = []
    preload = static.StaticEmbedder.preload

    def recorded(self: StaticEmbedder) -> None:
        preloads.append(threading.current_thread().name)
        preload(self)

    monkeypatch.setattr(static.StaticEmbedder, "preload", recorded)
    releases: list[str] = []
    monkeypatch.setattr(audit, "release_freed_memory", lambda: releases.append("audit") or True)
    harness.load_sample(pipeline_env, 16)
    snapshot_only = dg.materialize(
        harness.GRAPH, selection=[document_snapshots], resources=build_resources(), tags=range_tags()
    )
    assert snapshot_only.success and preloads == [] and releases == []
    assert harness.materialize().success
    assert preloads == ["ea-model-preload"] and releases == ["audit"]
    # the run read the table (its documents' tokens, then the labeled set's for the first
    # publish), and its pages left the process's resident memory once the last encode was done
    folder = StaticEmbedder(None, cache_dir=Path(static_dir)).path
    assert 0 <= _mapped_mb(table_copy(folder)) < 4
    harness.audit(run_config={"ops": {"store_audit": {"config": {"mode": "sampled"}}}})
    assert preloads == ["ea-model-preload"] and releases == ["audit"]


def test_each_tier_embeds_in_batches_of_its_own_unless_one_is_set(monkeypatch):
    """A static batch is one call of its tokenizer (a tenth of a second of work); a transformer's
    stays 512 documents, what a killed run redoes. EA_CHECKPOINT_DOCS, when set, is every tier's."""
    import dagster as dg

    from embedding_assets.defs.resources import DOCS_PER_BATCH, build_resources
    from embedding_assets.embedders.static import STATIC_BATCH_DOCS

    def batch(backend: str) -> int:
        monkeypatch.setenv("EA_BACKEND", backend)
        with dg.build_resources({"model": build_resources()["embedding_model"]}) as resources:
            return resources.model.docs_per_batch()

    monkeypatch.delenv("EA_CHECKPOINT_DOCS", raising=False)
    batches = {backend: batch(backend) for backend in ("static", "transformer", "remote")}
    assert batches == {"static": STATIC_BATCH_DOCS, "transformer": DOCS_PER_BATCH, "remote": DOCS_PER_BATCH}
    assert STATIC_BATCH_DOCS == StaticEmbedder(None, cache_dir=Path("unused")).batch_size > DOCS_PER_BATCH
    monkeypatch.setenv("EA_CHECKPOINT_DOCS", "64")
    assert batch("static") == batch("transformer") == 64
