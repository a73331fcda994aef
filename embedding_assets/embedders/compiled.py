"""A sentence-transformers model run through OpenVINO or ONNX Runtime, without torch.

What sentence-transformers does around the transformer (the prompt, the tokenizer, mean or CLS
pooling, unit length) is done here with ``tokenizers`` and numpy, so a run that finds its export in
the model cache loads in a fraction of a second. Models whose modules are not a Transformer, a
Pooling and a Normalize (a Dense head, say) are refused: they run through torch.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from embedding_assets.embedders.exported import (
    RuntimeRefused,
    decline_telemetry,
    ensure_exported,
    quantize_onnx_dynamic,
    quantize_openvino_static,
    verified,
)
from embedding_assets.embedders.model_files import (
    ModelShape,
    ShapedByModelFiles,
    load_tokenizer,
    sentence_transformer_shape,
    shared_tokenizer,
    tokenizer_json,
)
from embedding_assets.lib.processes import cores
from embedding_assets.lib.runtimes import RuntimePrecision
from embedding_assets.lib.versioning import model_fingerprint

# Windows a static int8 model is calibrated on, and how many per calibration batch.
CALIBRATION_WINDOWS = 300
_CALIBRATION_BATCH = 16
# Queries are padded to a multiple of this many tokens: at most 64 shapes up to 512 tokens.
QUERY_PAD = 8


def pooling_of(folder: Path) -> tuple[str, bool]:
    """``(mean|cls, normalize)`` from the folder's modules; ``RuntimeRefused`` for anything else."""
    modules = json.loads((folder / "modules.json").read_text())
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or set(kinds[2:]) - {"Normalize"}:
        raise RuntimeRefused(f"modules {kinds}: only Transformer, Pooling and Normalize run outside torch")
    pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text())
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
    if modes == ["pooling_mode_mean_tokens"]:
        return "mean", "Normalize" in kinds
    if modes == ["pooling_mode_cls_token"]:
        return "cls", "Normalize" in kinds
    raise RuntimeRefused(f"pooling {modes}: only mean or CLS pooling run outside torch")


def calibration_digest(texts: list[str]) -> str:
    return hashlib.blake2b("\x00".join(texts).encode(), digest_size=6).hexdigest()


class _Session:
    """One compiled model: ``run(input_ids, attention_mask)`` gives the last hidden state.

    ``streams`` > 1 (OpenVINO, for documents): that many requests in flight, one thread each, fed by
    ``run_many``. On 2 cores two single-thread streams embed 16% more windows a second than one
    request on two threads (docs/benchmarks.md); a single query is fastest on one request with
    every thread, so queries get a session of their own."""

    def __init__(
        self, runtime: str, model: Path, precision: str, threads: int, cache: Path, streams: int = 1
    ) -> None:
        self.runtime = runtime
        self.streams = streams if runtime == "openvino" else 1
        if runtime == "openvino":
            decline_telemetry()  # its import starts the converter's telemetry, consenting by default
            import openvino as ov

            config: dict[str, Any] = {
                "CACHE_DIR": str(cache)
            }  # the compiled blob: later loads skip compiling
            if self.streams > 1:
                config |= {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": self.streams}
                config |= {"INFERENCE_NUM_THREADS": threads}
            else:
                config |= {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
            if precision in ("bf16", "fp32"):
                config["INFERENCE_PRECISION_HINT"] = "bf16" if precision == "bf16" else "f32"
            self._ov = ov
            self._compiled = ov.Core().compile_model(str(model), "CPU", config)
            self._output = self._compiled.output(0)
            self._local = threading.local()
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            self._ort = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self.runtime == "openvino":
            request = getattr(self._local, "request", None)
            if request is None:  # an infer request is not shared between threads
                request = self._local.request = self._compiled.create_infer_request()
            return request.infer({"input_ids": input_ids, "attention_mask": attention_mask})[self._output]
        return self._ort.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]

    def run_many(
        self,
        batches: Iterable[tuple[np.ndarray, np.ndarray, Any]],
        done: Callable[[Any, np.ndarray, np.ndarray], None],
    ) -> None:
        """``done(key, last_hidden_state, attention_mask)`` for each batch, in any order."""
        if self.streams == 1:
            for ids, mask, key in batches:
                done(key, self.run(ids, mask), mask)
            return
        queue = self._ov.AsyncInferQueue(self._compiled, self.streams)
        errors: list[BaseException] = []

        def finished(request: Any, userdata: Any) -> None:
            try:
                key, mask = userdata
                done(key, request.get_output_tensor(0).data, mask)
            except BaseException as err:  # raised again below: a callback's error would be lost
                errors.append(err)

        queue.set_callback(finished)
        for ids, mask, key in batches:
            queue.start_async({"input_ids": ids, "attention_mask": mask}, userdata=(key, mask))
        queue.wait_all()
        if errors:
            raise errors[0]


_SESSIONS: dict[tuple[str, str, int, int], _Session] = {}
_SESSIONS_LOCK = threading.Lock()


def session(
    runtime: str, model: Path, precision: str, threads: int, cache: Path, streams: int = 1
) -> _Session:
    """Once per process: every run of a process builds its resources anew."""
    key = (str(model), precision, threads, streams)
    with _SESSIONS_LOCK:
        if key not in _SESSIONS:
            _SESSIONS[key] = _Session(runtime, model, precision, threads, cache, streams)
        return _SESSIONS[key]


class CompiledEmbedder(ShapedByModelFiles):
    """``protocols.Embedder`` through OpenVINO or ONNX Runtime. The model's files make the version
    tag as for torch; ``precision`` names the runtime too (``openvino-bf16``)."""

    needs_chunking = True
    device = "cpu"

    def __init__(
        self,
        model_name: str,
        choice: RuntimePrecision,
        *,
        cache_dir: Path,
        batch_size: int = 16,
        threads: int = 0,
        calibration: list[str] | None = None,
    ) -> None:
        folder = Path(model_name)
        if not (folder / "modules.json").is_file():
            raise RuntimeRefused(f"{model_name} is not a local sentence-transformers folder")
        self.model_name = model_name
        self.choice = choice
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.threads = min(threads or cores(), cores())  # never more threads than cores
        self.pooling, self.normalize = pooling_of(folder)
        self.calibration = calibration
        self._verified = False

    @property
    def precision(self) -> str:
        return self.choice.label

    @property
    def calibration(self) -> list[str] | None:
        return self._calibration

    @calibration.setter
    def calibration(self, windows: list[str] | None) -> None:
        """Another sample is another model: found and verified anew (a run sets its version's)."""
        if windows != getattr(self, "_calibration", None):
            self.__dict__.pop("_model_file", None)
            self._verified = False
        self._calibration = windows

    @property
    def needs_calibration(self) -> bool:
        """Static int8 measures activation ranges on sample windows before it runs."""
        return self.choice == RuntimePrecision("openvino", "int8")

    @cached_property
    def fingerprint(self) -> str:
        return model_fingerprint(self.model_name)

    @cached_property
    def _shape(self) -> ModelShape:
        shape = sentence_transformer_shape(Path(self.model_name))
        if shape is None:
            raise RuntimeRefused(f"{self.model_name}: its configs do not describe its output")
        return shape

    @cached_property
    def tokenizer(self) -> Any:
        return load_tokenizer(self.model_name)

    def is_transient(self, error: BaseException) -> bool:
        return False

    @cached_property
    def _encoder(self) -> Any:
        """The tokenizer the model is fed with: the folder's own, the very object the chunking step
        uses (one load per process); ``_encodings`` cuts at the model's limit."""
        found = tokenizer_json(Path(self.model_name))
        if found is None:
            raise RuntimeRefused(f"{self.model_name} has no tokenizer.json")
        return shared_tokenizer(found)

    def _encodings(self, texts: list[str]) -> list[Any]:
        """What ``enable_truncation(max_seq_length)`` gives, on the shared tokenizer whose settings
        stay untouched: the text's tokens cut to the limit less the special tokens, which are then
        added (tokenizers' own order: truncate, then post-process)."""
        tokenizer = self._encoder
        limit = self._shape.max_seq_length - tokenizer.num_special_tokens_to_add(False)
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        for encoding in encodings:
            if len(encoding.ids) > limit:
                encoding.truncate(limit)
        return [tokenizer.post_process(encoding) for encoding in encodings]

    @cached_property
    def _lowercase(self) -> bool:
        config = json.loads((Path(self.model_name) / "sentence_bert_config.json").read_text())
        return bool(config.get("do_lower_case"))

    @cached_property
    def export_dir(self) -> Path:
        return ensure_exported(Path(self.model_name), self.fingerprint, self.choice.runtime, self.cache_dir)

    @cached_property
    def _model_file(self) -> Path:
        """Once per embedder: for int8 this tokenizes the calibration sample and hashes it, which
        took 40 ms of every ``embed_query`` when it was asked per call."""
        root, precision = self.export_dir, self.choice.precision
        if self.choice.runtime == "onnx":
            return quantize_onnx_dynamic(root) if precision == "int8" else root / "model.onnx"
        if precision != "int8":
            return root / "model.xml"
        if not self.calibration:
            raise RuntimeRefused(
                "openvino-int8 is calibrated on the deployment's own windows, and none were given "
                "(the pipeline records them with the version on its first batch)"
            )
        batches = [
            self._tokenized(self.calibration[i : i + _CALIBRATION_BATCH], self.document_prompt)
            for i in range(0, len(self.calibration), _CALIBRATION_BATCH)
        ]
        inputs = [{"input_ids": ids, "attention_mask": mask} for ids, mask in batches]
        return quantize_openvino_static(root, inputs, calibration_digest(self.calibration))

    def _session(self, streams: int) -> _Session:
        """Loaded, and verified against torch fp32 the first time on this machine."""
        model = self._model_file
        compiled = self.export_dir / "compiled"
        loaded = session(self.choice.runtime, model, self.choice.precision, self.threads, compiled, streams)
        if not self._verified:
            self._verified = True  # verification below encodes through these sessions
            extra = f"-{calibration_digest(self.calibration)}" if self.calibration else ""
            try:
                verified(self.export_dir.parent, self.choice, self, extra=extra)
            except RuntimeRefused:
                self._verified = False
                raise
        return loaded

    @property
    def session(self) -> _Session:
        """The documents' session: as many streams as threads."""
        return self._session(self.threads)

    @property
    def query_session(self) -> _Session:
        """The queries' session: one request on every thread, the lowest latency for one text."""
        return self._session(1)

    def _tokenized(self, texts: list[str], prompt: str, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Ids and mask, padded to the longest text (rounded up to ``multiple``: queries come in every
        length, and each new shape costs the runtime a kernel selection; masked padding changes
        nothing the pooling reads)."""
        if self._lowercase:
            texts = [t.lower() for t in texts]
        encodings = self._encodings([prompt + t for t in texts])
        width = max(len(e.ids) for e in encodings)
        width = -(-width // multiple) * multiple
        ids = np.ones((len(texts), width), dtype=np.int64)  # padding is masked out: any id does
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        return ids, mask

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        hidden = hidden.astype(np.float32, copy=False)
        if self.pooling == "cls":
            vectors = hidden[:, 0]
        else:
            weights = mask[..., None].astype(np.float32)
            vectors = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if self.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def encode(self, texts: list[str], n_tokens: list[int] | None = None) -> np.ndarray:
        """Unit vectors of documents, float32, in input order; batches formed by token count."""
        return self._encode(texts, n_tokens, self.document_prompt, self.session)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, None, self.query_prompt, self.query_session, multiple=QUERY_PAD)

    def _encode(
        self, texts: list[str], n_tokens: list[int] | None, prompt: str, on: _Session, multiple: int = 1
    ) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        keys = n_tokens if n_tokens is not None else [len(t) for t in texts]
        order = np.argsort(np.asarray(keys), kind="stable")

        def batches() -> Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                ids, mask = self._tokenized([texts[i] for i in idx], prompt, multiple)
                yield ids, mask, idx

        def pooled(idx: np.ndarray, hidden: np.ndarray, mask: np.ndarray) -> None:
            out[idx] = self._pool(hidden, mask)

        on.run_many(batches(), pooled)
        return out
