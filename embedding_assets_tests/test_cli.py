"""The commands as a person runs them."""

import os
import subprocess
import sys

import pytest

from embedding_assets.cli import main
from embedding_assets.dev.harness import load_sample, materialize

pytestmark = [pytest.mark.servers, pytest.mark.slow]


def test_demo_command_embeds_the_sample_and_prints_a_summary(pipeline_env, tmp_path):
    env = {**os.environ, **pipeline_env}
    env.pop("EA_PARQUET_DIR")
    env.pop("DAGSTER_HOME", None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedding_assets.cli",
            "--state-dir",
            str(tmp_path / "state"),
            "demo",
            "--docs",
            "42",
            "--neighbours",
            "3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "loaded 44 documents in 14 languages" in text
    assert "documents embedded     42" in text
    assert "skipped / failed       2" in text
    assert "odd-number-title" in text and "no text" in text
    assert "Redis bytes / document" in text
    assert "3 nearest neighbours" in text
    assert (tmp_path / "state" / "parquet" / "feature_store_entries").exists() is False
    assert (tmp_path / "state" / "parquet" / "document_vectors" / "shard-00.parquet").exists()
    assert (tmp_path / "state" / "dagster_home" / "dagster.yaml").exists()  # runs kept for `dev`


def test_lookup_prints_the_entry_and_neighbours(pipeline_env, capsys):
    docs = load_sample(pipeline_env, 30)
    assert materialize().success
    assert main(["lookup", docs[0]["doc_id"], "--neighbours", "2"]) == 0
    out = capsys.readouterr().out
    assert f"== lookup {docs[0]['doc_id']}" in out
    assert "dim 384" in out and "content_hash" in out
    assert "2 nearest neighbours" in out
    assert main(["lookup", "no-such-doc"]) == 0
    assert "no entry" in capsys.readouterr().out
