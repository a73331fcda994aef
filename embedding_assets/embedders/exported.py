"""A sentence-transformers folder exported for OpenVINO or ONNX Runtime, once per machine.

Exporting needs torch (a trace of the model); running the export does not, so a run that finds it
in the model cache starts in well under a second where torch takes several. Builders racing on one
cache wait on a lock and the first builds; a build goes into a folder of its own and is renamed into
place, so no reader sees half an export. Each runtime and precision is verified before first use
against torch fp32 on ``CHECK_TEXTS`` (queries and passages, 12 languages) and refused below
``min_cosine``; the verdict is kept beside the export, so it is paid once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from embedding_assets.lib.runtimes import CHECK_TEXTS, RuntimePrecision

FORMAT = 1  # bump when the export's layout or inputs change


class RuntimeRefused(RuntimeError):
    """The runtime's vectors disagree with torch's, or it cannot run this model."""


def export_root(cache_dir: Path, fingerprint: str) -> Path:
    return cache_dir / "exported" / f"{fingerprint}-v{FORMAT}"


@contextlib.contextmanager
def build_lock(root: Path) -> Iterator[None]:
    """One builder per model and machine; others wait, then find its work done."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.with_name(root.name + ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    os.replace(partial, path)


def decline_telemetry() -> None:
    """OpenVINO's converter and NNCF send usage events to Google Analytics unless a consent file in
    the user's home says no (or CI=true): they treat no file as consent. Nothing here may call out,
    so every consent check in this process answers "declined"."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # no telemetry package, no telemetry
        return

    def declined(self: object, *args: object, **kwargs: object) -> object:
        return ConsentCheckResult.DECLINED

    OptInChecker.check = declined  # type: ignore[method-assign]


def _torch_model(folder: Path) -> object:
    """The folder's Transformer module as a torch module of (input_ids, attention_mask) giving the
    last hidden state, which is what pooling reads."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(folder))
    model.eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return LastHiddenState(model)


def _example() -> dict[str, object]:
    import torch

    return {
        "input_ids": torch.ones(2, 16, dtype=torch.long),
        "attention_mask": torch.ones(2, 16, dtype=torch.long),
    }


def export_openvino(folder: Path, dest: Path) -> Path:
    decline_telemetry()
    import openvino as ov
    import torch

    with torch.inference_mode(False), torch.no_grad():
        model = ov.convert_model(
            _torch_model(folder),
            example_input=_example(),
            input=[("input_ids", [-1, -1], ov.Type.i64), ("attention_mask", [-1, -1], ov.Type.i64)],
        )
    ov.save_model(model, str(dest / "model.xml"), compress_to_fp16=False)
    return dest / "model.xml"


def export_onnx(folder: Path, dest: Path) -> Path:
    import warnings

    import torch

    axes = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        example = _example()
        torch.onnx.export(
            _torch_model(folder),
            (example["input_ids"], example["attention_mask"]),
            str(dest / "model.onnx"),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
            opset_version=17,
            dynamo=False,  # the dynamo exporter needs onnxscript and gains nothing for a BERT
        )
    return dest / "model.onnx"


def derived(root: Path, name: str, make: object) -> Path:
    """A file made from an export (a quantized model), built once under the lock."""
    path = root / name
    if path.exists():
        return path
    with build_lock(root.parent):
        if not path.exists():
            partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp{path.suffix}")
            make(partial)  # type: ignore[operator]
            bin_part = partial.with_suffix(".bin")  # an OpenVINO IR's weights: in place first
            if bin_part.exists():
                os.replace(bin_part, path.with_suffix(".bin"))
            os.replace(partial, path)
    return path


def quantize_onnx_dynamic(root: Path) -> Path:
    """ONNX Runtime's dynamic int8 (activation ranges per batch: no calibration)."""

    def make(out: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(root / "model.onnx"), str(out), weight_type=QuantType.QInt8, per_channel=True)

    return derived(root, "model-int8.onnx", make)


def quantize_openvino_static(root: Path, calibration: list[dict[str, np.ndarray]], digest: str) -> Path:
    """OpenVINO static int8 (NNCF), its activation ranges measured on ``calibration``: batches of
    the deployment's own windows, tokenized. Named by the sample's digest, so a deployment's
    calibration is rebuilt identically on any machine that has the sample."""

    def make(out: Path) -> None:
        import logging

        decline_telemetry()  # before nncf's import, which starts its telemetry
        import nncf
        import openvino as ov

        logging.getLogger("nncf").setLevel(logging.ERROR)
        model = ov.Core().read_model(str(root / "model.xml"))
        quantized = nncf.quantize(
            model,
            nncf.Dataset(calibration),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calibration),
        )
        ov.save_model(quantized, str(out), compress_to_fp16=False)

    # the lock is the export root's; IR pairs (xml, bin) are renamed together by ``derived``
    return derived(root, f"int8-{digest}.xml", make)


def reference_vectors(folder: Path) -> np.ndarray:
    """torch fp32's vectors of ``CHECK_TEXTS`` (as queries, then as passages): what exports match."""
    from embedding_assets.embedders.sentence_transformer import SentenceTransformerEmbedder

    torch_fp32 = SentenceTransformerEmbedder(str(folder), device="cpu", precision="fp32")
    texts = list(CHECK_TEXTS)
    return np.concatenate([torch_fp32.encode_queries(texts), torch_fp32.encode(texts)])


def ensure_exported(folder: Path, fingerprint: str, runtime: str, cache_dir: Path) -> Path:
    """The runtime's export of ``folder`` (built under the lock if missing), with torch fp32's
    reference vectors beside it."""
    root = export_root(cache_dir, fingerprint)
    done = root / runtime / "export.json"
    if done.exists():
        return done.parent
    with build_lock(root):
        if done.exists():  # another builder finished while this one waited
            return done.parent
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "reference.npy").exists():
            np.save(root / "reference.tmp.npy", reference_vectors(folder))
            os.replace(root / "reference.tmp.npy", root / "reference.npy")
        building = root / f"{runtime}.tmp{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        started = time.perf_counter()
        if runtime == "openvino":
            export_openvino(folder, building)
        elif runtime == "onnx":
            export_onnx(folder, building)
        else:
            raise ValueError(f"no export for runtime {runtime!r}")
        shutil.rmtree(root / runtime, ignore_errors=True)
        building.rename(root / runtime)
        record = {"model": str(folder), "seconds": round(time.perf_counter() - started, 1)}
        _write_atomic(done, json.dumps(record) + "\n")
    return done.parent


def verified(root: Path, choice: RuntimePrecision, encode: object, *, extra: str = "") -> dict[str, float]:
    """Cosines of the runtime's vectors to torch fp32's on the check texts, measured once and kept;
    ``RuntimeRefused`` when the lowest is under the precision's floor."""
    path = root / f"verified-{choice.label}{extra}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        reference = np.load(root / "reference.npy")
        texts = list(CHECK_TEXTS)
        mine = np.concatenate([encode.encode_queries(texts), encode.encode(texts)])  # type: ignore[attr-defined]
        cosines = (mine * reference).sum(axis=1)
        record = {"min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean())}
        _write_atomic(path, json.dumps(record) + "\n")
    if record["min_cosine"] < choice.min_cosine:
        raise RuntimeRefused(
            f"{choice.label} gives vectors at cosine {record['min_cosine']:.5f} to torch fp32 on the check "
            f"texts (floor {choice.min_cosine}): not used ({path})"
        )
    return record
