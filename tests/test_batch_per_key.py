"""--max-batch-per-key: one API key's chat requests take at most N places in the decode
batch; its others wait their turn while other keys' requests decode (a SaaS operator audit:
one key's 40 requests at once made another key's chats 12x slower). A real clara-serve,
real streams."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

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
            if not first or not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if any(c["delta"].get("content") for c in chunk.get("choices") or []):
                said.append((f"{name}-first", time.monotonic()))
                first = False
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
        runs[0].start()
        deadline = time.monotonic() + 60
        while not any(n == "a1-first" for n, _ in said) and time.monotonic() < deadline:
            time.sleep(0.01)
        for t in runs[1:]:
            t.start()
        for t in runs:
            t.join(120)
    order = [n for n, _ in sorted(said, key=lambda x: x[1])]
    assert order.index("b-end") < order.index("a1-end")  # another key: not held back
    if cap == 1:  # alice's second waits for her first to leave the batch
        assert order.index("a2-first") > order.index("a1-end"), order
    else:  # (the test can fail: without the cap, it decodes beside the first)
        assert order.index("a2-end") < order.index("a1-end"), order
