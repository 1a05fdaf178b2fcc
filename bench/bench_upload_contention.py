"""Chats while an upload is indexed: what an upload costs the chats beside it, and the reverse.

One model thread serves both (`clara_cli.worker`): chats go first, and indexing work that has
waited 2 s takes one step (a compressor batch) between them. This starts clara-serve with the
default model on a temporary index of Python's documentation topics and measures, side by
side in one run:

- streamed chats (TTFT and total time, `--max-tokens` each, one after another) alone;
- the same chats while a text file of `--upload-kb` KB is indexed through the Files and
  Vector Stores API (OpenAI SDK);
- that upload's indexing time alone and under the chats,

for indexing steps of whole batches (`CLARA_BULK_STEP_S=0`, the policy before) and of at most
0.25 s of compression while chats run (the default).

    python bench/bench_upload_contention.py [--chats 8] [--upload-kb 100] [--no-append]

Prints a table and appends it to BENCHMARKS.md. Needs a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402,F401  (OpenBLAS before mlx)
from bench._chats import TOPICS, chat, chats, index_topics, phases_table, slowdown  # noqa: E402
from bench._common import add_no_append, append_report, markdown_table, sample_texts, start_run  # noqa: E402
from clara_cli.process import ServerProcess, free_port  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--chats", type=int, default=8, help="chats per phase (default: 8)")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens per answer (default: 32)")
    p.add_argument(
        "--upload-kb", type=int, default=100, help="size of the uploaded text (default: 100)"
    )
    add_no_append(p)
    return p


def index_upload(client, file_id: str, store: str) -> float:
    """Seconds from attaching the file to a new vector store until it is indexed."""
    vs = client.vector_stores.create(name=store)
    start = time.perf_counter()
    client.vector_stores.files.create(vector_store_id=vs.id, file_id=file_id)
    while True:
        f = client.vector_stores.files.retrieve(file_id=file_id, vector_store_id=vs.id)
        if f.status != "in_progress":
            if f.status != "completed":
                raise RuntimeError(f"the upload ended {f.status}: {f.last_error}")
            return time.perf_counter() - start
        time.sleep(0.1)


def measure(args, index: Path, upload: Path, tmp: Path, step_s: str) -> dict:
    """One clara-serve with `CLARA_BULK_STEP_S=step_s`: chats alone, the upload alone, then
    chats while the upload is indexed."""
    import openai

    port = free_port()
    argv = [sys.executable, "-m", "server.cli", "--port", str(port), "--index", str(index),
            "--responses-db", str(tmp / f"responses-{step_s}.sqlite"), "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "CLARA_BULK_STEP_S": step_s}
    with ServerProcess(argv, port=port, cwd=ROOT, env=env, log=tmp / "server.log") as server:
        server.wait_ready(timeout=600)
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        model = client.models.list().data[0].id
        file_id = client.files.create(file=upload.open("rb"), purpose="assistants").id
        chat(client, model, "warm-up", 4)
        print(f"[CLARA_BULK_STEP_S={step_s}] chats alone ...", flush=True)
        alone = chats(client, model, args.chats, args.max_tokens)
        print(f"[CLARA_BULK_STEP_S={step_s}] the upload alone ...", flush=True)
        upload_alone = index_upload(client, file_id, f"alone-{port}")
        print(f"[CLARA_BULK_STEP_S={step_s}] chats while the upload is indexed ...", flush=True)
        done: list[float] = []
        indexing = threading.Thread(
            target=lambda: done.append(index_upload(client, file_id, f"beside-{port}"))
        )
        indexing.start()
        beside: list[tuple[float, float]] = []
        while indexing.is_alive() or len(beside) < args.chats:
            beside += chats(client, model, 1, args.max_tokens)
        indexing.join()
    return {"alone": alone, "beside": beside, "upload_alone": upload_alone, "upload": done[0]}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start_run()
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        tmp = Path(tmp)
        index = index_topics(tmp)
        texts = sample_texts()
        upload = tmp / "upload.txt"
        body, i = "", TOPICS  # (the topics after those indexed)
        while len(body.encode()) < args.upload_kb * 1024:
            body += texts[i % len(texts)] + "\n\n"
            i += 1
        upload.write_text(body[: args.upload_kb * 1024])
        runs = {step: measure(args, index, upload, tmp, step) for step in ("0", "0.25")}
    names = {"0": "whole batches (8 chunks)", "0.25": "steps of 0.25 s while chats run"}
    table = phases_table("indexing steps: chats", names, runs, "chats alone",
                         "chats beside the upload")  # fmt: skip
    table += "\n\n" + markdown_table(
        ["indexing steps", f"{args.upload_kb} KB indexed alone, s", "beside the chats, s"],
        [[names[s], f"{r['upload_alone']:.1f}", f"{r['upload']:.1f}"] for s, r in runs.items()],
    )
    ratios = []
    for step, r in runs.items():
        ratios.append(f"{names[step]}: chats {slowdown(r):.2f}x their time alone, the upload "
                      f"{r['upload'] / r['upload_alone']:.2f}x")  # fmt: skip
    notes = (
        "; ".join(ratios) + f". Chats ran one after another ({args.max_tokens} tokens each, "
        "streamed), the upload through the OpenAI SDK's Files and Vector Stores calls, on "
        "clara-serve's one model thread; `CLARA_BULK_STEP_S` sets the indexing step while "
        "chats run (0: whole batches, the policy before)."
    )
    if args.no_append:
        print(table + "\n\n" + notes)
    else:
        append_report("Chats beside an upload (bench/bench_upload_contention.py)", table, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
