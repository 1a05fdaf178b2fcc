"""One API key's flood of chats and another key's questions: what --max-batch-per-key buys.

clara-serve gives each key of --api-key-file its own places in the queue and takes turns by
key, but the decode batch (--max-batch, 16) is shared: a key that keeps 16 long answers
running holds every place, and a colleague's question waits for one to end. This starts
clara-serve with the default model on a temporary index of Python's documentation topics and
measures, side by side in one run, for the batch shared as before and for each key capped at
`--cap` places:

- a colleague's streamed chats (TTFT and total time, one after another) alone;
- the same chats while another key keeps `--flood` streamed chats of `--flood-tokens` tokens
  running (each thread sends its next one as soon as one ends), and that key's tokens per
  second meanwhile (what the cap costs the flooding key).

    python bench/bench_keys.py [--chats 8] [--flood 16] [--cap 4] [--no-append]

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
from bench._chats import QUESTIONS, chat, chats, index_topics, phases_table, slowdown  # noqa: E402
from bench._common import add_no_append, append_report, start_run  # noqa: E402
from clara_cli.process import ServerProcess, free_port  # noqa: E402

KEYS = "flood sk-bench-flood\ncolleague sk-bench-colleague\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--chats", type=int, default=8, help="the colleague's chats per phase (8)")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens per colleague answer (32)")
    p.add_argument("--flood", type=int, default=16, help="the flooding key's chats at once (16)")
    p.add_argument("--flood-tokens", type=int, default=128, help="tokens per flood answer (128)")
    p.add_argument("--cap", type=int, default=4, help="--max-batch-per-key measured (4)")
    add_no_append(p)
    return p


def flood(client, model: str, tokens: int, stop: threading.Event, counted: list[int]) -> None:
    """Streamed chats one after another until `stop`, their tokens counted into `counted`."""
    i = 0
    while not stop.is_set():
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            max_tokens=tokens,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                counted[0] += 1
        i += 1


def measure(args, index: Path, tmp: Path, cap: int | None) -> dict:
    """One clara-serve (each key capped at `cap` places, or none): the colleague's chats
    alone, then beside the flood."""
    import openai

    keys = tmp / "keys"
    keys.write_text(KEYS)
    keys.chmod(0o600)
    port = free_port()
    argv = [sys.executable, "-m", "server.cli", "--port", str(port), "--index", str(index),
            "--api-key-file", str(keys), "--queue-size", str(args.flood + 4),
            "--responses-db", str(tmp / f"responses-{cap}.sqlite"), "--log-level", "warning"]  # fmt: skip
    if cap is not None:
        argv += ["--max-batch-per-key", str(cap)]
    with ServerProcess(argv, port=port, cwd=ROOT, env=dict(os.environ),
                       log=tmp / "server.log") as server:  # fmt: skip
        server.wait_ready(timeout=600)

        def as_(key: str):
            return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)

        colleague, flooding = as_("sk-bench-colleague"), as_("sk-bench-flood")
        model = colleague.models.list().data[0].id
        chat(colleague, model, "warm-up", 4)
        label = f"cap {cap}" if cap else "no cap"
        print(f"[{label}] the colleague's chats alone ...", flush=True)
        alone = chats(colleague, model, args.chats, args.max_tokens)
        print(f"[{label}] the same beside {args.flood} chats of another key ...", flush=True)
        stop, counted = threading.Event(), [0]
        threads = [
            threading.Thread(target=flood, args=(flooding, model, args.flood_tokens, stop, counted))
            for _ in range(args.flood)
        ]
        for t in threads:
            t.start()
        time.sleep(5)  # (the flood fills the batch)
        start, before = time.perf_counter(), counted[0]
        beside = chats(colleague, model, args.chats, args.max_tokens)
        flood_rate = (counted[0] - before) / (time.perf_counter() - start)
        stop.set()
        for t in threads:
            t.join(300)
    return {"alone": alone, "beside": beside, "flood_rate": flood_rate}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start_run()
    with tempfile.TemporaryDirectory(prefix="bench-keys-") as tmp:
        tmp = Path(tmp)
        index = index_topics(tmp)
        runs = {cap: measure(args, index, tmp, cap) for cap in (None, args.cap)}
    names = {None: "shared batch (no cap)", args.cap: f"--max-batch-per-key {args.cap}"}
    table = phases_table("batch: the colleague's chats", names, runs, "colleague alone",
                         "colleague beside the flood")  # fmt: skip
    ratios = [
        f"{names[cap]}: the colleague's chats {slowdown(r):.2f}x their time alone, the "
        f"flooding key {r['flood_rate']:.1f} tokens/s"
        for cap, r in runs.items()
    ]
    notes = (
        "; ".join(ratios) + f". The colleague's chats ran one after another ({args.max_tokens} "
        f"tokens each, streamed) while another key kept {args.flood} streamed chats of "
        f"{args.flood_tokens} tokens running (`ignore_eos`), on the default --max-batch 16."
    )
    if args.no_append:
        print(table + "\n\n" + notes)
    else:
        append_report("One key's flood beside another key (bench/bench_keys.py)", table, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
