"""Decode speed and greedy agreement of the CPU decode paths, in-process (no HTTP).

    .venv/bin/python bench/bench_decode.py      # prints a table, appends it to BENCHMARKS.md

Settings, each in its own subprocess (the BLAS path is chosen when clara is first imported):
OpenBLAS for every product (`CLARA_THIN=off`, as before the thin-matmul kernel), and the thin
kernel reading the decode-only weights as float32, float16 (the default) or int8
(`CLARA_DECODE_WEIGHTS`); on CPUs with AMX tiles the default prefills through the generator
in bfloat16 (clara/_thinmm.c), so float16 also runs with `CLARA_AMX=off`. Each subprocess
times `clara.decode.Decoder` (generator adapter, a memory-free text prompt) at 1 and 8
sequences and a batched prefill of 8 such prompts (`add_many`), and decodes `--answers` greedy answers of
40 tokens to pydoc questions through the generator and the bare model; the parent reports how
many answers are token for token those of float32 weights through OpenBLAS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)

from bench._common import add_no_append, append_report, markdown_table, start_run  # noqa: E402

SETTINGS = {  # name -> environment
    "OpenBLAS (CLARA_THIN=off)": {"CLARA_THIN": "off"},
    "thin kernel, float32": {"CLARA_DECODE_WEIGHTS": "float32"},
    "thin kernel, float16, prefill float32 (CLARA_AMX=off)": {
        "CLARA_DECODE_WEIGHTS": "float16",
        "CLARA_AMX": "off",
    },
    "float16 copies, AMX bfloat16 where the CPU has it (default)": {
        "CLARA_DECODE_WEIGHTS": "float16"
    },
    "thin kernel, int8": {"CLARA_DECODE_WEIGHTS": "int8"},
    "AMX bfloat16 for prefill only (CLARA_AMX_ROWS=17)": {"CLARA_AMX_ROWS": "17"},
}
TOPICS = ("assert", "break", "for", "if", "while", "with", "lambda", "class")


def worker(args: argparse.Namespace) -> None:
    from pydoc_data.topics import topics

    from clara.checkpoint import load_clara
    from clara.decode import Decoder
    from clara.stream import SamplingParams
    from clara.prompt import text_prompt

    cm = load_clara("smollm2-135m")
    chunk = ["The assert statement checks a condition and raises AssertionError otherwise. " * 5]
    prompt = text_prompt(cm, "What does the assert statement do in Python?", chunk)

    def speed(batch: int) -> float:
        d = Decoder(cm, "generator")
        for _ in range(batch):
            d.add(prompt, SamplingParams(max_tokens=10**6, ignore_eos=True))
        for _ in range(3):  # warm-up
            d.step()
        start, tokens = time.perf_counter(), 0
        for _ in range(args.steps):
            tokens += len(d.step())
        return tokens / (time.perf_counter() - start)

    d = Decoder(cm, "generator")
    batch = [(prompt, SamplingParams(max_tokens=1), None)] * 8
    d.add_many(batch)  # warm-up
    start = time.perf_counter()
    for _ in range(3):
        d.add_many(batch)
    prefill = (time.perf_counter() - start) / 3

    answers = []
    for adapter in ("generator", None):
        d = Decoder(cm, adapter)
        for name in TOPICS[: args.answers // 2]:
            p = text_prompt(
                cm, f"What does the {name} statement do in Python?", [topics[name][:900]]
            )
            _, first = d.add(p, SamplingParams(max_tokens=40))
            tokens = [first.token]
            while d.sequences:
                tokens += [c.token for _, c in d.step()]
            answers.append(tokens)
    print(
        json.dumps(
            {
                "b1": speed(1),
                "b8": speed(8),
                "prefill": prefill,
                "positions": prompt.positions,
                "answers": answers,
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=48, help="timed decode steps (default 48)")
    p.add_argument(
        "--answers", type=int, default=16,
        help="greedy answers compared: an even number from 2 to 16, half through the generator "
        "and half through the bare model (default 16)",
    )  # fmt: skip
    add_no_append(p)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.steps < 1:
        p.error("--steps must be 1 or more")
    if not (2 <= args.answers <= 2 * len(TOPICS) and args.answers % 2 == 0):
        p.error(f"--answers takes an even number from 2 to {2 * len(TOPICS)} (half per adapter)")
    start_run()
    results = {}
    for name, env in SETTINGS.items():
        cmd = [sys.executable, __file__, "--worker", "--steps", str(args.steps)]
        cmd += ["--answers", str(args.answers)]
        out = subprocess.run(
            cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True
        )
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(name, {k: v for k, v in results[name].items() if k != "answers"}, flush=True)

    reference = results["OpenBLAS (CLARA_THIN=off)"]["answers"]
    prompt_positions = results["OpenBLAS (CLARA_THIN=off)"]["positions"]
    rows = []
    for name, r in results.items():
        same = sum(a == b for a, b in zip(r["answers"], reference))
        rows.append(
            [
                name,
                f"{r['b1']:.1f}",
                f"{r['b8']:.1f}",
                f"{r['prefill']:.2f}",
                f"{same}/{len(reference)}",
            ]
        )
    table = markdown_table(
        [
            "decode products",
            "1 sequence tok/s",
            "8 sequences tok/s",
            "prefill of 8 prompts s",
            "greedy answers = OpenBLAS",
        ],
        rows,
    )
    notes = (
        f"In-process `clara.decode.Decoder` (generator adapter), {os.cpu_count()}-core CPU, "
        "each setting in its "
        f"own process one after another; {args.steps} timed steps after 3 warm-up steps. Greedy "
        f"answers: {len(reference)} answers of 40 tokens to pydoc questions (half through the "
        "generator, half through the bare model), compared token for token with float32 weights "
        f"through OpenBLAS. Prefill: 8 prompts of {prompt_positions} positions through the "
        "generator as one batch (`Decoder.add_many`), mean of 3 after a warm-up. The thin kernel's float32 products sum in another order than "
        "OpenBLAS's, so even that row may differ in a near-tie."
    )
    if args.no_append:
        print(table + "\n\n" + notes)
    else:
        append_report("Decode paths on the CPU: speed and greedy agreement", table, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
