"""Which runtime and precision run the configured model here: asked for, or the fastest measured.

``EA_RUNTIME=auto`` times every candidate that passes its check against torch fp32 on the same
windows, once per machine and model, in a child process (so the process asking, a code server
computing a version's tag, imports neither torch nor a runtime), and caches the answer: the label
is part of the version tag, so it must not change from one process to the next.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from embedding_assets import settings
from embedding_assets.embedders.cpu_precision import cpu_identity
from embedding_assets.embedders.sentence_transformer import cpu_has_bf16
from embedding_assets.lib.protocols import Embedder
from embedding_assets.lib.runtimes import CHECK_TEXTS, RuntimePrecision, candidates, fastest, parse_label


def timing_windows(count: int = 64) -> list[str]:
    """Windows of about 120 tokens in a dozen languages: the pipeline's own shape of work."""
    texts = list(CHECK_TEXTS)
    return [" ".join(texts[(i + j) % len(texts)] for j in range(4)) for i in range(count)]


def build(
    model: str,
    choice: RuntimePrecision,
    *,
    batch_size: int = 16,
    threads: int = 0,
    calibration: list[str] | None = None,
) -> Embedder:
    """The embedder for ``choice`` (nothing loads yet)."""
    if choice.runtime == "torch":
        from embedding_assets.embedders.sentence_transformer import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(
            model, device="cpu", batch_size=batch_size, precision=choice.precision
        )
    from embedding_assets.embedders.compiled import CompiledEmbedder

    return CompiledEmbedder(
        model,
        choice,
        cache_dir=settings.model_cache_dir(),
        batch_size=batch_size,
        threads=threads,
        calibration=calibration,
    )


def measure(model: str, labels: list[str], threads: int = 0) -> dict[str, float | str]:
    """Seconds per candidate for the same windows (best of two passes, after a warm-up); a refused
    candidate's value is its reason."""
    from embedding_assets.embedders.exported import RuntimeRefused

    windows = timing_windows()
    found: dict[str, float | str] = {}
    for label in labels:
        choice = parse_label(label)
        # static int8 times a model calibrated on the timing windows (a version's own comes later)
        calibration = windows if choice == RuntimePrecision("openvino", "int8") else None
        embedder = build(model, choice, threads=threads, calibration=calibration)
        try:
            embedder.encode(windows[:16])
        except RuntimeRefused as refused:
            found[label] = str(refused)
            continue
        times = []
        for _ in range(2):
            started = time.perf_counter()
            embedder.encode(windows)
            times.append(time.perf_counter() - started)
        found[label] = min(times)
    return found


def measure_in_child(model: str, labels: list[str]) -> dict[str, float | str]:
    code = (
        "import json, sys; from embedding_assets.embedders.runtime_choice import measure; "
        "from embedding_assets.lib.processes import exit_without_teardown; "
        "print(json.dumps(measure(sys.argv[1], sys.argv[2:]))); exit_without_teardown(0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, model, *labels], capture_output=True, text=True, timeout=1800
    )
    if done.returncode:
        raise RuntimeError(f"timing the runtimes failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def quality_record(fingerprint: str) -> Path:
    """Where ``benchmarks.quality --record`` keeps R@10 per runtime for a model on this machine."""
    return settings.model_cache_dir() / f"runtime-quality-{fingerprint}.json"


def recorded_quality(fingerprint: str) -> dict[str, dict[str, float]] | None:
    try:
        return json.loads(quality_record(fingerprint).read_text())
    except (OSError, ValueError):
        return None


def choose(model: str, fingerprint: str, runtime: str, precision: str) -> RuntimePrecision:
    """The runtime and precision to run ``model`` with (a local folder), measured once if asked."""
    options = candidates(runtime, precision, cpu_bf16=cpu_has_bf16(), quality=recorded_quality(fingerprint))
    if not options:
        raise ValueError(f"no runtime offers EA_RUNTIME={runtime} with EA_PRECISION={precision} here")
    if len(options) == 1:
        return options[0]
    from embedding_assets.embedders.exported import build_lock

    labels = [o.label for o in options]
    key = hashlib.blake2b(f"{cpu_identity()}|{fingerprint}|{labels}".encode(), digest_size=8).hexdigest()
    cache = settings.model_cache_dir()
    path = cache / f"runtime-choice-{key}.json"
    with build_lock(cache / f"runtime-choice-{key}"):  # one process measures; the others read
        try:
            return parse_label(json.loads(path.read_text())["choice"])
        except (OSError, ValueError, KeyError):
            pass
        seconds = measure_in_child(model, labels)
        timed = {parse_label(k): v for k, v in seconds.items() if isinstance(v, float)}
        if not timed:
            raise RuntimeError(f"no runtime passed its check: {seconds}")
        choice = fastest(timed)
        record = {"choice": choice.label, "seconds": seconds, "cpu": cpu_identity(), "model": model}
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(partial, path)
    return choice


def transformer_embedder(
    model: str | None,
    *,
    device: str = "auto",
    batch_size: int = 16,
    runtime: str = "auto",
    precision: str = "auto",
    threads: int = 0,
) -> Embedder:
    """The transformer embedder the settings ask for: torch on a GPU, for ``EA_RUNTIME=torch``, for
    fp16 and for models only torch runs; otherwise the runtime ``choose`` names."""
    from embedding_assets.embedders.compiled import pooling_of
    from embedding_assets.embedders.exported import RuntimeRefused
    from embedding_assets.embedders.packaged import resolve
    from embedding_assets.embedders.sentence_transformer import SentenceTransformerEmbedder, resolve_device
    from embedding_assets.lib.runtimes import check_setting
    from embedding_assets.lib.versioning import model_fingerprint

    check_setting(runtime, precision)
    path = resolve(model)

    def on_torch() -> Embedder:
        return SentenceTransformerEmbedder(path, device=device, batch_size=batch_size, precision=precision)

    if runtime == "torch" or precision == "fp16" or resolve_device(device) != "cpu":
        if runtime not in ("torch", "auto"):
            raise ValueError(f"EA_RUNTIME={runtime} runs on the CPU; EA_DEVICE={device} asks for a GPU")
        return on_torch()
    try:
        pooling_of(Path(path))
    except (OSError, ValueError, KeyError, RuntimeRefused) as err:
        if runtime == "auto":
            return on_torch()  # a hub name not cached as a folder, or a head only torch runs
        raise RuntimeRefused(f"EA_RUNTIME={runtime} cannot run {path}: {err}") from err
    choice = choose(path, model_fingerprint(path), runtime, precision)
    return build(path, choice, batch_size=batch_size, threads=threads)
