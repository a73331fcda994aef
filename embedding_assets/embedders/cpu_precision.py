"""Whether bf16 pays on this CPU, measured once per machine.

A CPU that reports bf16 instructions does not always run bf16 faster: measured on two machines of
this project's kind, autocast to bf16 gave 1.5x fp32 throughput on an AMD EPYC with avx512_bf16
and 0.6x on an Intel Xeon with avx512_bf16 (no AMX). So ``auto`` times the matmuls of one
encoder layer both ways (torch alone, no model weights, under a second) and keeps bf16 unless it
is clearly slower. It measures in a child process, so the process asking (a code server computing
a version's tag) never imports torch. The answer is cached per CPU and torch version: the resolved
precision is part of the version tag, so it must not change from one process to the next. Near a
tie the answer is bf16, as it was before measuring, so that noise does not split identical machines
between tags.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# bf16 is kept unless it runs under this fraction of fp32's speed.
SLOWER = 0.85


def choose(fp32_seconds: float, bf16_seconds: float) -> str:
    """The precision to run, from the time each took on the same work."""
    if fp32_seconds <= 0 or bf16_seconds <= 0:
        raise ValueError("timings must be positive")
    return "fp32" if fp32_seconds / bf16_seconds < SLOWER else "bf16"


def cpu_identity() -> str:
    """What the answer depends on: the CPU model and flags, the cores, torch's version (read from
    its metadata: a cached answer costs no torch import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = ""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = platform.processor()
    model = next((line for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    flags_digest = hashlib.blake2b(flags.encode(), digest_size=8).hexdigest()
    return f"{model}|{flags_digest}|{os.cpu_count()}|{torch_version}"


def measure() -> tuple[float, float]:
    """Seconds for the feed-forward matmuls of a 384-wide encoder layer over 16 windows of 128
    tokens, fp32 and under bf16 autocast (the way the embedder runs it); the best of three."""
    import contextlib

    import torch

    generator = torch.Generator().manual_seed(0)
    up, down = torch.nn.Linear(384, 1536), torch.nn.Linear(1536, 384)
    x = torch.randn(16 * 128, 384, generator=generator)

    def best(context: contextlib.AbstractContextManager | None) -> float:
        times = []
        for _ in range(4):  # the first is a warm-up
            started = time.perf_counter()
            with torch.inference_mode(), context or contextlib.nullcontext():
                for _ in range(4):
                    down(torch.nn.functional.gelu(up(x)))
            times.append(time.perf_counter() - started)
        return min(times[1:])

    fp32 = best(None)
    bf16 = best(torch.autocast("cpu", dtype=torch.bfloat16))
    return fp32, bf16


def measure_in_child() -> tuple[float, float]:
    """``measure()`` in a child process: torch stays out of this one."""
    done = subprocess.run(
        [sys.executable, "-c", f"import json; from {__name__} import measure; print(json.dumps(measure()))"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    fp32, bf16 = json.loads(done.stdout.strip().splitlines()[-1])
    return float(fp32), float(bf16)


def cpu_precision(cache_dir: Path) -> str:
    """``bf16`` or ``fp32`` for this CPU (which reports bf16 instructions), measured once and cached."""
    identity = cpu_identity()
    path = cache_dir / f"cpu-precision-{hashlib.blake2b(identity.encode(), digest_size=8).hexdigest()}.json"
    try:
        return str(json.loads(path.read_text())["precision"])
    except (OSError, ValueError, KeyError):
        pass
    fp32, bf16 = measure_in_child()
    precision = choose(fp32, bf16)
    record = {"precision": precision, "fp32_s": fp32, "bf16_s": bf16, "cpu": identity}
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(record) + "\n")
        os.replace(partial, path)  # atomic: a process reading it sees a whole answer or none
    except OSError:  # a read-only cache: the answer holds for this process
        partial.unlink(missing_ok=True)
    return precision
