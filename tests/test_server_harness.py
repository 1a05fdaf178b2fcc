"""Helpers for the clara-serve tests: a real uvicorn subprocess and small indexes (no tests here)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from clara_cli import process
from clara_cli.process import free_port

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


@contextmanager
def lock_held_elsewhere(folder: Path) -> Iterator[None]:
    """`folder`'s writer lock held by another process (a writer, a training run) meanwhile."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
         "from indexing.durable import WriterLock; from pathlib import Path;"
         "lock = WriterLock(Path(sys.argv[2]), 'x'); print('held', flush=True); time.sleep(60)",
         str(ROOT), str(folder)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


def add_documents(
    root: Path, cm, docs: Sequence[tuple[str, str]], collection: str = "default", context: str = ""
) -> list[str]:
    """Compress each text with `cm` and commit it as a one-chunk document (`context`: its
    chunk's title and section line); returns doc ids."""
    from indexing.store import ChunkRecord, Collection

    memories = np.array(cm.compress([text for _, text in docs]))  # (N, n_mem, d)
    ids = []
    with Collection.open(root, collection, cm.manifest(), create=True) as coll:
        for (name, text), mem in zip(docs, memories):
            page = 3 if name.endswith(".pdf") else None
            chunk = ChunkRecord(text, page, page, len(cm.tokenize([text])[0]), context)
            sha = hashlib.sha256(text.encode()).hexdigest()
            ids.append(
                coll.add_document(f"/docs/{name}", name, sha, [chunk], mem[None], size=len(text))
            )
    return ids


class ServerProcess(process.ServerProcess):
    """`python -m server.cli ...` on a free localhost port, its output in `log` (or dropped);
    `wait_ready()` waits until /health is 200."""

    MODULE: tuple[str, ...] = ("server.cli",)
    NAME = "clara-serve"

    def __init__(self, *args: str, env: dict[str, str] | None = None, log: Path | None = None):
        port = free_port()
        super().__init__(
            [sys.executable, "-m", *self.MODULE, "--port", str(port), *args],
            port=port,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
            cwd=ROOT,
            log=log or subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 180.0, interval: float = 0.2) -> ServerProcess:
        try:
            super().wait_ready(timeout, interval)
        except process.ServerExitedError as e:
            raise RuntimeError(f"{self.NAME} exited with {e.returncode}:\n{self.log()}") from None
        except process.ServerTimeoutError:
            self.stop()
            raise RuntimeError(
                f"{self.NAME} did not become ready in {timeout}s:\n{self.log()}"
            ) from None
        return self


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    key = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0
