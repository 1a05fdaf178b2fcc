"""Structured output: decode speed of a batch holding JSON answers, and how many are valid.

    .venv/bin/python bench/bench_structured.py      # prints a table, appends it to BENCHMARKS.md

In-process (`clara.decode.Decoder`, the default model's bare base model, no HTTP): a batch of
8 answers to pydoc questions decoded together, greedy, up to `--max-tokens` each, with none,
1 or all 8 held to a small JSON schema (`clara.structured`), side by side in one run. The
JSON rows make every step of their batch wait for its tokens (a grammar reads each one before
it says what may follow), and their masks are computed on the model's thread: the table says
what that costs the whole batch, and how many held answers end by themselves as JSON valid
under the schema (the others run to max_tokens).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)

from bench._common import add_no_append, append_report, markdown_table, start_run  # noqa: E402

TOPICS = ("assert", "break", "for", "if", "while", "with", "lambda", "class")
#: what a JSON answer holds: a yes/no and a short reason
SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"enum": ["yes", "no"]},
        "reason": {"type": "string", "maxLength": 80},
    },
    "required": ["answer", "reason"],
    "additionalProperties": False,
}


def run(cm, prompts, held: int, max_tokens: int, grammar: str) -> tuple[list[float], list, list]:
    """Decode the 8 prompts together, the first `held` held to `grammar` (the others decode
    to max_tokens): (seconds of each step taken by all 8, texts, finish reasons)."""
    from clara.decode import Decoder
    from clara.stream import SamplingParams

    d = Decoder(cm, None)
    requests = [
        (p, SamplingParams(max_tokens=max_tokens, grammar=grammar, ignore_eos=False), i)
        if i < held
        else (p, SamplingParams(max_tokens=max_tokens, ignore_eos=True), i)
        for i, p in enumerate(prompts)
    ]
    texts, reasons, steps = [""] * len(prompts), [None] * len(prompts), []
    for seq, first in d.add_many(requests):
        texts[seq.tag] += first.text
        reasons[seq.tag] = first.finish_reason
    while d.sequences:
        full, start = len(d.sequences) == len(prompts), time.perf_counter()
        out = d.step()
        if full:
            steps.append(time.perf_counter() - start)
        for seq, chunk in out:
            texts[seq.tag] += chunk.text
            reasons[seq.tag] = chunk.finish_reason
    return steps, texts, reasons


def valid(text: str) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return (
        isinstance(value, dict)
        and value.get("answer") in ("yes", "no")
        and (
            isinstance(value.get("reason"), str) and len(value["reason"]) <= 80 and len(value) == 2
        )
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-tokens", type=int, default=48, help="per answer (default 48)")
    p.add_argument("--repeats", type=int, default=3, help="runs per row; median (default 3)")
    p.add_argument(
        "--steps", type=int, default=10,
        help="decode steps timed in each run, from the first (default 10; fewer where a held "
        "answer ends before)",
    )  # fmt: skip
    add_no_append(p)
    args = p.parse_args(argv)
    if min(args.max_tokens, args.repeats, args.steps) < 1:
        p.error("--max-tokens, --repeats and --steps must be 1 or more")
    start_run(args.repeats)
    from pydoc_data.topics import topics

    from clara.checkpoint import load_clara
    from clara.prompt import text_prompt
    from clara.structured import json_grammar

    cm = load_clara("smollm2-135m")
    grammar = json_grammar(SCHEMA)
    prompts = [
        text_prompt(cm, f"Is the {name} statement a loop? Answer in JSON.", [topics[name][:600]])
        for name in TOPICS
    ]
    run(cm, prompts, 8, 4, grammar)  # warm-up (and the tokenizer's llguidance view, once)
    rows = []
    for held in (0, 1, 8):
        steps, texts, reasons = [], [], []
        for _ in range(args.repeats):
            took, texts, reasons = run(cm, prompts, held, args.max_tokens, grammar)
            steps += took[: args.steps]  # (the same steps in every row: a later step reads
            # a longer cache, and the held answers end early)
        ended = [t for t, r in zip(texts[:held], reasons[:held]) if r == "stop"]
        rows.append([
            f"{held} of 8", f"{1000 * statistics.median(steps):.1f}", str(len(steps)),
            f"{sum(map(valid, ended))}/{held}" if held else "-",
            f"{len(ended)}/{held}" if held else "-",
        ])  # fmt: skip
        print(rows[-1], flush=True)
    base = float(rows[0][1])
    for row in rows:
        row.insert(2, f"{float(row[1]) / base:.2f}x")
    table = markdown_table(
        ["answers held to JSON", "decode step of 8 ms (median)", "vs none held",
         "steps timed", "held answers valid under the schema",
         "held answers ended by themselves"],
        rows,
    )  # fmt: skip
    notes = (
        f"In-process `clara.decode.Decoder`, the default model's bare base model: 8 greedy "
        f"answers of up to {args.max_tokens} tokens decoded together (the free ones with "
        "ignore_eos, to max_tokens), in "
        f"{args.repeats} runs per row after a warm-up; timed: the first {args.steps} decode "
        "steps of each run taken by all 8 (the same steps in every row: a later step reads a "
        "longer cache). The schema: a yes/no and a "
        "reason of at most 80 characters. An answer held to JSON that ends by itself is valid "
        "by construction; one cut at max_tokens is not counted as valid."
    )
    if args.no_append:
        print(table + "\n\n" + notes)
    else:
        append_report("Structured output: a batch holding JSON answers", table, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
