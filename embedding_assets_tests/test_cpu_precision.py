"""``EA_PRECISION=auto`` on a CPU that reports bf16: measured once, then the same answer."""

import json
import subprocess
import sys

import pytest

from embedding_assets.embedders import cpu_precision as cp


def test_bf16_is_kept_unless_clearly_slower():
    assert cp.choose(fp32_seconds=1.5, bf16_seconds=1.0) == "bf16"  # the EPYC: 1.5x faster
    assert cp.choose(fp32_seconds=0.6, bf16_seconds=1.0) == "fp32"  # the Xeon: 0.6x
    assert cp.choose(fp32_seconds=0.95, bf16_seconds=1.0) == "bf16"  # a tie stays bf16, as before
    with pytest.raises(ValueError):
        cp.choose(0.0, 1.0)


def test_the_answer_is_measured_once_and_cached_per_cpu(tmp_path, monkeypatch):
    calls = []

    def slow_bf16():
        calls.append(1)
        return 0.5, 1.0

    monkeypatch.setattr(cp, "measure_in_child", slow_bf16)
    assert cp.cpu_precision(tmp_path) == "fp32"
    [saved] = tmp_path.glob("cpu-precision-*.json")
    record = json.loads(saved.read_text())
    assert record["precision"] == "fp32" and record["cpu"] == cp.cpu_identity()

    def must_not_measure():
        raise AssertionError("measured again")

    monkeypatch.setattr(cp, "measure_in_child", must_not_measure)
    assert cp.cpu_precision(tmp_path) == "fp32" and len(calls) == 1
    # another CPU (or torch) is another answer
    monkeypatch.setattr(cp, "cpu_identity", lambda: "another cpu")
    monkeypatch.setattr(cp, "measure_in_child", lambda: (1.5, 1.0))
    assert cp.cpu_precision(tmp_path) == "bf16" and len(list(tmp_path.glob("cpu-precision-*.json"))) == 2


def test_a_damaged_answer_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(cp, "measure_in_child", lambda: (1.5, 1.0))
    assert cp.cpu_precision(tmp_path) == "bf16"
    [saved] = tmp_path.glob("cpu-precision-*.json")
    saved.write_text("{")
    monkeypatch.setattr(cp, "measure_in_child", lambda: (0.5, 1.0))
    assert cp.cpu_precision(tmp_path) == "fp32"
    assert not list(tmp_path.glob("*.tmp"))


def test_the_measurement_times_both_precisions_in_a_child_without_torch_here(tmp_path):
    """The first answer on a machine is measured in a child process: the asking process (a code
    server computing a version's tag) does not import torch."""
    script = (
        "import json, sys; from pathlib import Path; "
        "from embedding_assets.embedders.cpu_precision import cpu_precision; "
        f"answer = cpu_precision(Path({str(tmp_path)!r})); "
        "print(json.dumps([answer, 'torch' in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    answer, torch_here = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer in ("bf16", "fp32") and torch_here is False
    [saved] = tmp_path.glob("cpu-precision-*.json")
    record = json.loads(saved.read_text())
    assert record["precision"] == answer and record["fp32_s"] > 0 and record["bf16_s"] > 0
