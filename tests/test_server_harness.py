"""Helpers for the clara-serve tests: a real uvicorn subprocess and small indexes (no tests here)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "test-key"

# Short documents from the tiny tokenizer's corpus: (file name, text).
DOCS = [
    ("river.txt", "The river runs past the old mill and under the stone bridge."),
    ("capitals.txt", "The capital of France is Paris. The capital of Japan is Tokyo."),
    ("water.txt", "Water boils at one hundred degrees Celsius at sea level."),
    ("cat.txt", "The cat sat on the mat while the dog slept by the fire."),
    ("train.pdf", "The train leaves the station at seven o'clock and arrives two hours later."),
    ("museum.md", "Background: the museum opened in 1902 and holds paintings and coins."),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_documents(
    root: Path, cm, docs: Sequence[tuple[str, str]], collection: str = "default"
) -> list[str]:
    """Compress each text with `cm` and commit it as a one-chunk document; returns doc ids."""
    from indexing.store import ChunkRecord, Collection

    memories = np.array(cm.compress([text for _, text in docs]))  # (N, n_mem, d)
    ids = []
    with Collection.open(root, collection, cm.manifest(), create=True) as coll:
        for (name, text), mem in zip(docs, memories):
            page = 3 if name.endswith(".pdf") else None
            chunk = ChunkRecord(text, page, page, len(cm.tokenize([text])[0]))
            sha = hashlib.sha256(text.encode()).hexdigest()
            ids.append(
                coll.add_document(f"/docs/{name}", name, sha, [chunk], mem[None], size=len(text))
            )
    return ids


class ServerProcess:
    """`python -m server.cli ...` on a free localhost port, waited on until /health is 200."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        cmd = [sys.executable, "-m", "server.cli", "--port", str(self.port), *args]
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=out)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def wait_ready(self, timeout: float = 180.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clara-serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"clara-serve did not become ready in {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float = 120.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    key = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0
