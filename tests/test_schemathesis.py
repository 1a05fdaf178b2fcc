"""Schemathesis fuzzes both services from their own OpenAPI schemas (real uvicorn processes,
tiny model): every check (no server errors, responses match the schema, schema-valid requests
accepted, schema-violating ones refused, correct `Allow` headers on 405s, ...) must pass.

Bounded for CI: a few deterministic examples per operation. The indexing service's routes are
the ones clara-serve mounts (one implementation), so its run skips the slow boundary-value
("coverage") phase that clara-serve's run already makes of them. One check is left out:
`ensure_resource_availability` reads the 404 of `POST /v1/vector_stores/{id}/files` with a
made-up `file_id` as "the vector store just created is missing", while the 404 names the
body's `file_id` (as OpenAI's does); the store itself is there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_index_service import ServiceProcess
from tests.test_server_harness import DOCS, ServerProcess, add_documents

EXAMPLES = "3"  # per operation and phase; `SCHEMATHESIS_EXAMPLES=50` locally for a deeper run

pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra")


def fuzz(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/openapi.json",
        "--checks", "all", "--exclude-checks", "ensure_resource_availability",
        "--max-examples", os.environ.get("SCHEMATHESIS_EXAMPLES", EXAMPLES),
        "--generation-deterministic", "--request-timeout", "60", "--no-color",
        # boundary values ask for max_tokens up to the whole context: the tiny model writes
        # that many tokens in ~10 s on a busy 2-core machine (speed is bench/'s business)
        "--max-response-time", "60", *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)


def summary(out: subprocess.CompletedProcess) -> str:
    return out.stdout[-6000:] + out.stderr[-2000:]


def test_clara_serve_schema(tmp_path: Path, tiny_llama_dir: Path) -> None:
    from clara.checkpoint import load_clara

    add_documents(tmp_path / "index", load_clara(tiny_llama_dir, None, dtype=None), DOCS)
    server = ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp_path / "index"), "--max-tokens", "1",
        env={"CLARA_HOME": str(tmp_path / "home")}, log=tmp_path / "server.log",
    ).wait_ready()  # fmt: skip
    try:
        out = fuzz(server.url, tmp_path)
    finally:
        server.stop()
    assert out.returncode == 0, summary(out)


def test_index_service_schema(tmp_path: Path, tiny_llama_dir: Path) -> None:
    service = ServiceProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp_path / "index"),
        log=tmp_path / "service.log", env={"CLARA_HOME": str(tmp_path / "home")},
    ).wait_ready()  # fmt: skip
    try:
        out = fuzz(service.url, tmp_path, "--phases", "fuzzing,stateful")
    finally:
        service.stop()
    assert out.returncode == 0, summary(out)
