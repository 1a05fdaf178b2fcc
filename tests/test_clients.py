"""The examples in clients/ run unchanged against a real clara-serve (tiny model)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_server_harness import API_KEY, DOCS, ROOT, ServerProcess, add_documents


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path):
    from clara.checkpoint import load_clara

    tmp = tmp_path_factory.mktemp("clients")
    add_documents(tmp / "index", load_clara(tiny_llama_dir, None, dtype=None), DOCS)
    with ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp / "index"),
        "--api-key", API_KEY, "--max-tokens", "8",
        env={"CLARA_HOME": str(tmp / "home")}, log=tmp / "server.log",
    ) as proc:  # fmt: skip
        yield proc.wait_ready()  # (stopped on leaving, ready or not)


def run_client(server: ServerProcess, *args: str) -> str:
    env = {**os.environ, "CLARA_URL": f"{server.url}/v1", "CLARA_API_KEY": API_KEY}
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("script", ["chat.py", "stream.py", "async_chat.py", "httpx_chat.py"])
def test_python_clients(server: ServerProcess, script: str) -> None:
    river = DOCS[0][1]
    out = run_client(server, sys.executable, f"clients/{script}", river)
    assert out.strip()
    if script != "async_chat.py":  # the async example asks its own questions
        assert "river.txt" in out  # the identical text is retrieved and shown as a source


def test_file_search_guide_example(server: ServerProcess, tmp_path: Path) -> None:
    doc = tmp_path / "capitals.md"
    doc.write_text(DOCS[1][1])
    out = run_client(server, sys.executable, "clients/file_search.py", str(doc), DOCS[1][1])
    assert "cites capitals.md (file-" in out


def test_curl_script(server: ServerProcess) -> None:
    out = run_client(server, "bash", "clients/curl.sh", DOCS[1][1])
    assert '"sources"' in out and "data: [DONE]" in out


@pytest.mark.parametrize("mode", [[], ["--mode", "mixed"]], ids=["server-default", "mixed"])
def test_terminal_chat(server: ServerProcess, mode: list[str]) -> None:
    env = {**os.environ, "CLARA_URL": f"{server.url}/v1", "CLARA_API_KEY": API_KEY}
    out = subprocess.run(
        [sys.executable, "clients/terminal_chat.py", *mode],
        input=f"{DOCS[0][1]}\n/sources\n/quit\n",
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "clara>" in out.stdout and "river.txt" in out.stdout
