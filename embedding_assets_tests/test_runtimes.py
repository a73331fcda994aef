"""Runtimes: labels and choice rules (pure), and the exported model checked against torch (real)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedding_assets import settings
from embedding_assets.embedders.compiled import CompiledEmbedder, pooling_of
from embedding_assets.embedders.exported import RuntimeRefused, export_root
from embedding_assets.embedders.sentence_transformer import default_model_path
from embedding_assets.lib.runtimes import (
    CHECK_TEXTS,
    RuntimePrecision,
    candidates,
    check_setting,
    fastest,
    parse_label,
)


def test_labels_round_trip_and_torch_keeps_its_bare_labels():
    for choice in [
        RuntimePrecision("torch", "fp32"),
        RuntimePrecision("torch", "bf16"),
        RuntimePrecision("openvino", "bf16"),
        RuntimePrecision("openvino", "int8"),
        RuntimePrecision("onnx", "fp32"),
    ]:
        assert parse_label(choice.label) == choice
    assert RuntimePrecision("torch", "bf16").label == "bf16"  # tags written before runtimes stay
    assert RuntimePrecision("openvino", "bf16").label == "openvino-bf16"
    for bad in ["openvino-fp16", "onnx-bf16", "tensorrt-fp32", "", "int8"]:
        with pytest.raises(ValueError):
            parse_label(bad)


def test_settings_no_runtime_offers_are_refused():
    check_setting("auto", "auto")
    check_setting("openvino", "int8")
    for runtime, precision in [("torch", "int8"), ("onnx", "bf16"), ("tensorrt", "auto"), ("auto", "fp8")]:
        with pytest.raises(ValueError):
            check_setting(runtime, precision)


def test_auto_candidates_are_lossless_and_bf16_only_where_the_cpu_has_it():
    found = [c.label for c in candidates("auto", "auto", cpu_bf16=True)]
    assert found == ["fp32", "bf16", "openvino-bf16", "openvino-fp32", "onnx-fp32"]
    assert "openvino-bf16" not in [c.label for c in candidates("auto", "auto", cpu_bf16=False)]
    assert [c.label for c in candidates("auto", "int8", cpu_bf16=True)] == ["openvino-int8", "onnx-int8"]
    assert [c.label for c in candidates("onnx", "auto", cpu_bf16=True)] == ["onnx-fp32"]


def test_fastest_keeps_the_earlier_candidate_near_a_tie():
    a, b, c = (
        RuntimePrecision("torch", "fp32"),
        RuntimePrecision("openvino", "bf16"),
        RuntimePrecision("onnx", "fp32"),
    )
    assert fastest({a: 3.0, b: 1.0, c: 1.02}) == b
    assert fastest({a: 1.0, b: 0.97}) == a  # 3% is noise
    assert fastest({a: 1.0, b: 0.5, c: 0.49}) == b
    with pytest.raises(ValueError):
        fastest({})


def test_pooling_is_read_from_the_folder_and_heads_only_torch_runs_are_refused(tmp_path):
    assert pooling_of(Path(default_model_path())) == ("mean", True)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    modules = [
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert pooling_of(tmp_path) == ("cls", False)
    (tmp_path / "modules.json").write_text(
        json.dumps([*modules, {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}])
    )
    with pytest.raises(RuntimeRefused, match="Dense"):
        pooling_of(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("label", ["openvino-bf16", "openvino-fp32", "onnx-fp32", "onnx-int8"])
def test_each_runtime_agrees_with_torch_fp32_on_twelve_languages(embedder, label):
    """Lossless runtimes agree to 1e-4 on every machine. int8 sits near its floor (0.99), on one
    side or the other by machine: used when above it, else refused with its cosine, for good."""
    choice = parse_label(label)
    compiled = CompiledEmbedder(default_model_path(), choice, cache_dir=settings.model_cache_dir())
    texts = list(CHECK_TEXTS)
    if not choice.lossless:
        try:
            compiled.encode(["x"])
        except RuntimeRefused as refused:
            found = float(re.search(r"cosine ([0-9.]+)", str(refused)).group(1))  # type: ignore[union-attr]
            assert 0.95 <= found < choice.min_cosine  # quantized, not broken: just under the floor
            again = CompiledEmbedder(default_model_path(), choice, cache_dir=settings.model_cache_dir())
            with pytest.raises(RuntimeRefused, match=f"cosine {found}"):  # the kept verdict
                again.encode(["x"])
            return
    mine = np.concatenate([compiled.encode_queries(texts), compiled.encode(texts)])
    torch_fp32 = type(embedder)(default_model_path(), device="cpu", precision="fp32")
    theirs = np.concatenate([torch_fp32.encode_queries(texts), torch_fp32.encode(texts)])
    cosines = (mine * theirs).sum(axis=1)
    assert cosines.min() >= choice.min_cosine
    if choice.lossless:
        assert cosines.min() >= 0.9999
    # the version's identity is the model's files, whatever runs them; the label names the runtime
    assert compiled.fingerprint == embedder.fingerprint
    assert compiled.precision == label
    assert np.allclose(np.linalg.norm(mine, axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_a_runtime_whose_vectors_disagree_is_refused(embedder, tmp_path, monkeypatch):
    """An export that does not give torch's vectors (here: the reference it is checked against
    belongs to other texts, as if the export had gone wrong) is refused before any use."""
    cache = tmp_path / "cache"
    real = export_root(settings.model_cache_dir(), embedder.fingerprint)
    CompiledEmbedder(
        default_model_path(), RuntimePrecision("onnx", "fp32"), cache_dir=settings.model_cache_dir()
    ).encode(["x"])
    mine = export_root(cache, embedder.fingerprint)
    mine.mkdir(parents=True)
    shutil.copytree(real / "onnx", mine / "onnx")
    reference = np.load(real / "reference.npy")
    np.save(mine / "reference.npy", np.roll(reference, 1, axis=0))  # each text gets another's vector
    refused = CompiledEmbedder(default_model_path(), RuntimePrecision("onnx", "fp32"), cache_dir=cache)
    with pytest.raises(RuntimeRefused, match="onnx-fp32 gives vectors at cosine"):
        refused.encode(["anything"])
    with pytest.raises(RuntimeRefused):  # and again: the verdict is kept, never forgotten
        CompiledEmbedder(default_model_path(), RuntimePrecision("onnx", "fp32"), cache_dir=cache).encode(
            ["x"]
        )
    assert json.loads((mine / "verified-onnx-fp32.json").read_text())["min_cosine"] < 0.999


@pytest.mark.slow
def test_an_int8_query_tokenizes_only_itself(embedder, tmp_path, monkeypatch):
    """The int8 model is found from its calibration sample once per embedder. Found per query, its
    300 windows were tokenized and hashed for every ``embed_query``: 46 ms p50 where the model
    itself answers in 5. (The lossless export stands in for the calibrated one here, in a cache of
    the test's own, so that no verdict about a model that is not int8 reaches the machine's.)"""
    from embedding_assets.embedders import compiled

    CompiledEmbedder(
        default_model_path(), RuntimePrecision("openvino", "bf16"), cache_dir=settings.model_cache_dir()
    ).encode(["x"])
    mine = export_root(tmp_path, embedder.fingerprint)
    mine.mkdir(parents=True)
    real = export_root(settings.model_cache_dir(), embedder.fingerprint)
    (mine / "openvino").symlink_to(real / "openvino")
    shutil.copy(real / "reference.npy", mine / "reference.npy")
    built: list[str] = []

    def pretend_int8(root: Path, _: object, digest: str) -> Path:
        built.append(digest)
        return root / "model.xml"

    monkeypatch.setattr(compiled, "quantize_openvino_static", pretend_int8)
    tokenized: list[int] = []
    original = CompiledEmbedder._tokenized

    def counting(self: CompiledEmbedder, texts: list[str], *args: object) -> object:
        tokenized.append(len(texts))
        return original(self, texts, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(CompiledEmbedder, "_tokenized", counting)
    calibration = [f"window {i} of the deployment's own text" for i in range(48)]
    int8 = CompiledEmbedder(
        default_model_path(),
        RuntimePrecision("openvino", "int8"),
        cache_dir=tmp_path,
        calibration=calibration,
    )
    first = int8.encode_queries(["how do I list files"])
    assert len(built) == 1 and sum(tokenized) > len(calibration)  # built: the sample tokenized once
    tokenized.clear()
    again = [int8.encode_queries([q]) for q in ("how do I list files", "wie liste ich Dateien auf")]
    assert tokenized == [1, 1] and len(built) == 1
    np.testing.assert_allclose(again[0], first, atol=1e-6)
    int8.calibration = calibration[:24]  # another version's sample: another model
    int8.encode_queries(["how do I list files"])
    assert len(built) == 2 and built[0] != built[1]


def test_the_encoder_cuts_as_the_tokenizer_would_on_the_chunkers_own_load():
    """The chunking step and the encoder share one loaded tokenizer (about a second each for the
    multilingual model's): the encoder's own cut must give the ids ``enable_truncation`` gives."""
    from tokenizers import Tokenizer

    from embedding_assets.embedders.model_files import load_tokenizer, tokenizer_json

    folder = default_model_path()
    encoder = CompiledEmbedder(
        folder, RuntimePrecision("openvino", "bf16"), cache_dir=settings.model_cache_dir()
    )
    limit = encoder._shape.max_seq_length
    reference = Tokenizer.from_file(str(tokenizer_json(Path(folder))))
    reference.no_padding()
    reference.enable_truncation(limit)
    texts = [encoder.document_prompt + t for t in CHECK_TEXTS]
    texts += ["", " ".join(CHECK_TEXTS) * 8, "Zeile " * 2000, "末" * 3000]
    got = encoder._encodings(texts)
    assert [e.ids for e in got] == [e.ids for e in reference.encode_batch(texts)]
    assert sum(len(e.ids) == limit for e in got) == 3  # the long ones were cut, ends included
    chunker = load_tokenizer(folder)
    assert chunker._tokenizer is encoder._encoder  # one load in the process
    assert encoder._encoder.truncation is None  # and the chunker's cuts nothing
    assert chunker("Zeile " * 2000, add_special_tokens=False)["input_ids"].__len__() > limit


LOAD_AND_QUERY = """
import json, sys, time
started = time.perf_counter()
from embedding_assets.embedders.runtime_choice import transformer_embedder
embedder = transformer_embedder(None, device="cpu")
vector = embedder.encode_queries(["how do I list files"])
print(json.dumps({"label": embedder.precision, "seconds": time.perf_counter() - started,
                  "torch": "torch" in sys.modules, "dimension": int(vector.shape[1])}))
from embedding_assets.lib.processes import exit_without_teardown  # OpenVINO can abort teardown
exit_without_teardown(0)
"""


@pytest.mark.slow
def test_auto_picks_a_runtime_once_records_it_and_runs_it_without_torch(embedder):
    """Once chosen and exported on this machine, a process loads the model without importing torch."""
    env = {
        "EA_MODEL_CACHE": str(settings.model_cache_dir()),
        "HF_HUB_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
    }
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", LOAD_AND_QUERY],
                capture_output=True,
                text=True,
                timeout=900,
                check=True,
                env=env,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        for _ in range(2)
    ]
    assert runs[0]["label"] == runs[1]["label"]
    records = [json.loads(p.read_text()) for p in settings.model_cache_dir().glob("runtime-choice-*.json")]
    chosen = [r for r in records if r["model"] == default_model_path() and runs[0]["label"] == r["choice"]]
    assert chosen, records
    # the record of auto's whole candidate set (other settings, EA_PRECISION=bf16 say, time fewer)
    record = max(chosen, key=lambda r: len(r["seconds"]))
    timed = {k: v for k, v in record["seconds"].items() if isinstance(v, float)}
    assert {"fp32", "openvino-fp32", "onnx-fp32"} <= set(timed)  # every runtime was timed
    if parse_label(runs[1]["label"]).runtime != "torch":
        assert runs[1]["torch"] is False
    assert runs[1]["dimension"] == 384


@pytest.mark.slow
def test_the_runtimes_timing_child_exits_cleanly_after_compiling_openvino_models(embedder):
    """The child that times the runtimes compiles several OpenVINO models; its exit then aborted
    ("terminate called without an active exception") 6 times in 6 with two, after printing its
    figures, and so failed the first run on a fresh machine with EA_RUNTIME=openvino."""
    from embedding_assets.embedders.runtime_choice import measure_in_child
    from embedding_assets.embedders.sentence_transformer import cpu_has_bf16

    labels = [c.label for c in candidates("openvino", "auto", cpu_bf16=cpu_has_bf16())]
    for _ in range(2):
        found = measure_in_child(default_model_path(), labels)
        assert sorted(found) == sorted(labels)
        assert all(isinstance(seconds, float) and seconds > 0 for seconds in found.values()), found


# -- through the pipeline, on real servers --------------------------------------------------------


def _stored_vectors(env: dict[str, str]) -> dict[str, np.ndarray]:
    from benchmarks.quality import float_vectors_of

    return float_vectors_of(Path(env["EA_PARQUET_DIR"]))


@pytest.mark.servers
@pytest.mark.slow
def test_a_versions_documents_and_queries_use_one_runtime(pipeline_env, monkeypatch, embedder):
    from embedding_assets.client import EmbeddingClient
    from embedding_assets.dev.harness import load_sample, materialize, metadata
    from embedding_assets.stores.feature_store import FeatureStore

    monkeypatch.setenv("EA_RUNTIME", "openvino")
    load_sample(pipeline_env, 24)
    result = materialize()
    assert result.success
    version = str(metadata(result, "feature_store_entries")["version"])
    spec = FeatureStore.from_url(pipeline_env["REDIS_URL"]).control.versions()[version]
    assert spec.precision.startswith("openvino-")
    # a client on a machine configured for torch still embeds this version's queries through openvino
    monkeypatch.setenv("EA_RUNTIME", "torch")
    monkeypatch.setenv("EA_PRECISION", "fp32")
    client = EmbeddingClient.from_url(pipeline_env["REDIS_URL"], version)
    assert client.query_embedder().precision == spec.precision
    query = client.embed_query("football")
    torch_query = embedder.encode_queries(["football"])[0]
    assert float(query.vector @ torch_query) > 0.999  # the same model, another runtime
    # the stored vectors are the runtime's: a document embedded again through it gives its vector
    stored = _stored_vectors(pipeline_env)
    assert len(stored) == 24


@pytest.mark.servers
@pytest.mark.slow
def test_torch_reproduces_todays_vectors_and_tags(pipeline_env, monkeypatch, embedder):
    """``EA_RUNTIME=torch`` writes the version an earlier release wrote: torch's bare precision label,
    and vectors that are torch's own for the same windows."""
    from embedding_assets.dev.harness import load_sample, materialize, metadata
    from embedding_assets.stores.feature_store import FeatureStore

    monkeypatch.setenv("EA_RUNTIME", "torch")
    monkeypatch.setenv("EA_PRECISION", "fp32")
    monkeypatch.setenv("EA_POOLING", "mean")
    docs = load_sample(pipeline_env, 8)
    result = materialize()
    version = str(metadata(result, "feature_store_entries")["version"])
    spec = FeatureStore.from_url(pipeline_env["REDIS_URL"]).control.versions()[version]
    assert spec.precision == "fp32"
    assert json.loads(spec.canonical())["precision"] == "fp32"
    stored = _stored_vectors(pipeline_env)
    from embedding_assets.lib.text import document_text

    fp32 = type(embedder)(device="cpu", precision="fp32")
    short = [
        d
        for d in docs
        if len(fp32.tokenizer(document_text(d["title"], d["body"], spec).text)["input_ids"]) < 100
    ]
    assert short, "the sample has documents of one window"
    for doc in short:
        text = document_text(doc["title"], doc["body"], spec).text
        assert float(stored[doc["doc_id"]] @ fp32.encode([text])[0]) > 0.99999


@pytest.mark.servers
@pytest.mark.slow
def test_int8_is_calibrated_on_the_deployments_own_windows(pipeline_env, monkeypatch):
    """The first run records a sample of the deployment's own windows; the model is built from it
    and checked against torch: used when it agrees (>= 0.99), else the run fails once, saying so
    (int8 sits near that floor: on one side or the other by machine)."""
    from embedding_assets.client import EmbeddingClient
    from embedding_assets.dev.harness import load_sample, materialize
    from embedding_assets.lib.text import document_text
    from embedding_assets.stores.feature_store import FeatureStore

    monkeypatch.setenv("EA_RUNTIME", "openvino")
    monkeypatch.setenv("EA_PRECISION", "int8")
    docs = load_sample(pipeline_env, 24)
    result = materialize(raise_on_error=False)
    control = FeatureStore.from_url(pipeline_env["REDIS_URL"]).control
    [version] = [v for v, spec in control.versions().items() if spec.precision == "openvino-int8"]
    sample = control.model_calibration(version)
    assert sample
    spec = control.versions()[version]
    texts = " ".join(document_text(d["title"], d["body"], spec).text for d in docs)
    assert all(window[:40] in texts for window in sample)  # every window is of these documents
    # a later run (a change) keeps the recorded sample, and so the same model
    load_sample(
        pipeline_env, 0, extra=[{**docs[0], "doc_id": "later", "modified_at": docs[0]["modified_at"]}]
    )
    again = materialize(raise_on_error=False)
    assert again.success == result.success
    assert control.model_calibration(version) == sample
    if not result.success:  # refused on this machine: once, with the cosine, no retry
        events = [e.event_type_value for e in result.all_events]
        assert "STEP_UP_FOR_RETRY" not in events
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert re.search(
            r"openvino-int8 gives vectors at cosine 0\.9\d+ .* \(floor 0\.99\)",
            failure.step_failure_data.error.message,
        )
        return
    # a client embeds queries through the model calibrated on that sample
    client = EmbeddingClient.from_url(pipeline_env["REDIS_URL"], version)
    embedder = client.query_embedder()
    assert embedder.precision == "openvino-int8" and embedder.calibration == sample
    ranking = client.rerank("football", [d["doc_id"] for d in docs])
    assert len(ranking.ids()) == len(docs) and not ranking.missing


FIRST_TELEMETRY = """
import json
from embedding_assets import settings
from embedding_assets.embedders.compiled import CompiledEmbedder
from embedding_assets.embedders.sentence_transformer import default_model_path
from embedding_assets.lib.runtimes import RuntimePrecision
from openvino_telemetry import Telemetry

CompiledEmbedder(
    default_model_path(), RuntimePrecision("openvino", "bf16"), cache_dir=settings.model_cache_dir()
).encode_queries(["x"])
# a singleton: this is whichever instance the process made first
print(json.dumps(Telemetry(tid="G-TEST", app_name="ea-test", app_version="0", backend="ga4",
                           enable_opt_in_dialog=False, disable_in_ci=False).consent))
"""


@pytest.mark.slow
def test_openvino_and_nncf_telemetry_is_declined(tmp_path):
    """Both treat a missing consent file as consent, and ``import openvino`` alone starts the
    converter's: a run that only loads an exported model declines before that import too. In a
    fresh process with a home holding no consent file, and CI unset."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env |= {"HOME": str(tmp_path), "EA_MODEL_CACHE": str(settings.model_cache_dir()), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", FIRST_TELEMETRY], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) is False


@pytest.mark.slow
def test_the_model_command_prepares_and_says_what_a_first_run_will_use(embedder, capsys, monkeypatch):
    from embedding_assets.cli import main

    monkeypatch.setenv("EA_DEVICE", "cpu")
    assert main(["model"]) == 0
    out = capsys.readouterr().out
    label = out.split(" through ", 1)[1].split(" ", 1)[0]
    assert parse_label(label)  # a runtime and precision this project knows
    assert "loaded in" in out and "multilingual-e5-small" in out


def test_auto_takes_int8_only_where_a_quality_record_shows_it_ranks_as_torch_does():
    from embedding_assets.lib.runtimes import admitted

    quality = {
        "fp32": {"same": 0.900, "cross": 0.848},
        "openvino-int8": {"same": 0.897, "cross": 0.844},  # within 0.005 on both
        "onnx-int8": {"same": 0.899, "cross": 0.840},  # 0.008 lower on cross-lingual queries
        "openvino-bf16": {"same": 0.898, "cross": 0.848},
    }
    assert admitted(quality, parse_label("openvino-int8"))
    assert not admitted(quality, parse_label("onnx-int8"))
    assert not admitted(
        {**quality, "openvino-bf16": {"same": 0.897, "cross": 0.848}}, parse_label("openvino-bf16")
    )
    assert not admitted(
        {"openvino-int8": quality["openvino-int8"]}, parse_label("openvino-int8")
    )  # no baseline
    labels = [c.label for c in candidates("auto", "auto", cpu_bf16=True, quality=quality)]
    assert "openvino-int8" in labels and "onnx-int8" not in labels
    assert "openvino-int8" not in [c.label for c in candidates("auto", "auto", cpu_bf16=True)]


def test_builders_racing_on_one_cache_build_once_and_nobody_sees_half_a_file(tmp_path):
    import threading
    import time

    from embedding_assets.embedders.exported import derived

    root = tmp_path / "exported" / "abc-v1" / "onnx"
    root.mkdir(parents=True)
    calls: list[int] = []

    def make(out: Path) -> None:
        calls.append(1)
        out.write_text("half")
        time.sleep(0.3)
        out.write_text("whole")

    seen: list[str] = []
    threads = [
        threading.Thread(target=lambda: seen.append(derived(root, "m.onnx", make).read_text()))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1] and seen == ["whole"] * 4
