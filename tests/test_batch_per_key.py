"""--max-batch-per-key: one API key's chat requests take at most N places in the decode
batch; its others wait their turn while other keys' requests decode (a SaaS operator audit:
one key's 40 requests at once made another key's chats 12x slower). A real clara-serve,
real streams."""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import pytest

from clara_cli.http import KEY_FILE_CHECK_S
from tests.test_server_harness import ServerProcess


def stream(url: str, key: str, max_tokens: int, said: list[tuple[str, float]], name: str):
    """A streamed chat of `key`; notes (name-first, time) at its first token and (name-end,
    time) at its end."""
    body = {
        "model": "x", "stream": True, "max_tokens": max_tokens, "ignore_eos": True,
        "retrieval": False, "messages": [{"role": "user", "content": "Tell me a story."}],
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers,
                      timeout=120) as r:  # fmt: skip
        assert r.status_code == 200
        first = True
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if first and any(c["delta"].get("content") for c in choices):
                said.append((f"{name}-first", time.monotonic()))
                first = False
            if any(c.get("finish_reason") for c in choices):  # (it leaves the batch)
                said.append((f"{name}-end", time.monotonic()))


@pytest.mark.parametrize("cap", [1, None], ids=["capped", "uncapped"])
def test_one_keys_requests_wait_for_its_places_in_the_batch(tiny_llama_dir, tmp_path, cap):
    keys = tmp_path / "keys"
    keys.write_text("alice sk-alice\nbob sk-bob\n")
    keys.chmod(0o600)
    args = ["--model", str(tiny_llama_dir), "--index", str(tmp_path / "index"),
            "--api-key-file", str(keys), "--accept-any-model", "--max-tokens-limit", "4096"]  # fmt: skip
    if cap is not None:
        args += ["--max-batch-per-key", str(cap)]
    with ServerProcess(*args, env={"CLARA_HOME": str(tmp_path / "home")}) as server:
        server.wait_ready()
        said: list[tuple[str, float]] = []
        runs = [
            threading.Thread(target=stream, args=(server.url, "sk-alice", 1500, said, "a1")),
            threading.Thread(target=stream, args=(server.url, "sk-alice", 8, said, "a2")),
            threading.Thread(target=stream, args=(server.url, "sk-bob", 8, said, "b")),
        ]
        runs[0].start()  # (alice's two at once: admitted together at an idle server, but
        runs[1].start()  # for the cap)
        deadline = time.monotonic() + 60
        while not any(n == "a1-first" for n, _ in said) and time.monotonic() < deadline:
            time.sleep(0.01)
        runs[2].start()
        for t in runs:
            t.join(120)
        if cap is None:  # the key file is read again when it changes, by clara-serve too
            keys.with_suffix(".new").write_text("alice sk-alice\n")
            keys.with_suffix(".new").replace(keys)
            time.sleep(KEY_FILE_CHECK_S + 0.1)
            bob = httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer sk-bob"})
            assert bob.status_code == 401
    order = [n for n, _ in sorted(said, key=lambda x: x[1])]
    assert order.index("b-end") < order.index("a1-end"), order  # another key: not held back
    at = dict(said)
    together = at["a1-first"] < at["a2-end"] and at["a2-first"] < at["a1-end"]
    if cap == 1:  # one of alice's waits for the other to leave the batch
        assert not together, order
    else:  # (the test can fail: without the cap, they decode side by side)
        assert together, order


def test_limits_per_key_go_with_a_key_file(tmp_path) -> None:
    """A review: with one --api-key every client is the same key, and the cap was the whole
    server's; a re-audit: the limits on stores and uploads did nothing without keys. An
    upgrade audit: those two took one --api-key before 0.2.17 (a limit on the whole server),
    and a server started so stopped starting: they take it again."""
    import subprocess
    import sys

    env = {**os.environ, "CLARA_HOME": str(tmp_path)}
    env.pop("CLARA_API_KEY_FILE", None)
    env.pop("CLARA_API_KEY", None)
    for module, flag, key, says in [
        ("server.cli", "--max-batch-per-key", "k", "gives each API key of --api-key-file its"),
        ("server.cli", "--max-stores-per-key", None, "limits each API key: start with"),
        (("indexing.cli", "serve"), "--max-upload-mb-per-key", None, "limits each API key:"),
    ]:
        argv = [sys.executable, "-m", *([module] if isinstance(module, str) else module)]
        argv += [flag, "2", *(["--api-key", key] if key else [])]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode != 0 and f"{flag} {says}" in done.stderr, done.stderr
    from indexing.cli import build_parser
    from indexing.service.cli import upload_limits

    args = build_parser().parse_args(["serve", "--api-key", "k", "--max-stores-per-key", "1"])
    assert upload_limits(args)["max_stores_per_key"] == 1  # (one key: the server's limit)
