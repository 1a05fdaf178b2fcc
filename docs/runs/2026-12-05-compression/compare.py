"""Compression before and after three changes to the compressor's pass, side by side.

    .venv/bin/python docs/runs/2026-12-05-compression/compare.py [--rounds 4]

The changes (commit after d3bc7cd), each switched on over the one before:
- "causal": the fused attention kernel skips the key blocks past each row's causal limit in
  encoder passes too (their boolean masks hid them, but the kernel read every key);
- "last block": the last block computes queries, attention output and MLP for the memory
  positions alone (`clara.last_positions`);
- "merged": the compressor adapter merged into packed float32 copies of the base weights
  (`ClaraModel.pack_base_weights`): one product per linear instead of three.
One process, the default model and adapters, base weights packed as clara-index does, 8
chunks of 256 tokens; the settings alternate for --rounds rounds; each figure is the median
over rounds of each round's median. Prints a table and appends it to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)
import mlx.core as mx  # noqa: E402

from bench._common import append_report, markdown_table, median_seconds  # noqa: E402
from clara import model as clara_model  # noqa: E402
from clara.checkpoint import load_clara  # noqa: E402

CHUNK_TOKENS = 256


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=6.0, help="timing per figure and round")
    p.add_argument("--no-report", action="store_true")
    args = p.parse_args()

    from pydoc_data.topics import topics

    cm = load_clara("smollm2-135m")
    if not cm.pack_base_weights(compressor=True) or not cm.__dict__.get("_packed_compressor"):
        raise SystemExit("no packed weights here (needs the thin kernel with AVX2/AVX-512)")
    texts = []
    for name in sorted(topics):  # as bench/bench_server.py's compression figure
        ids = cm.tokenize([topics[name]])[0]
        if len(ids) >= CHUNK_TOKENS:
            texts.append(cm.tokenizer.decode(ids[:CHUNK_TOKENS]))
        if len(texts) == 8:
            break
    holder = cm.__dict__["_packed_compressor"]
    encode = cm.encode_tokens

    def full_pass(token_lists, adapter, memory_only=False):
        return encode(token_lists, adapter)

    def setting(causal: bool, last: bool, merged: bool) -> None:
        clara_model._Positions.causal_mask = causal
        object.__setattr__(cm, "encode_tokens", encode if last else full_pass)
        cm.__dict__["_packed_compressor"] = holder if merged else None

    settings = {
        "before": (False, False, False),
        "+ causal": (True, False, False),
        "+ last block": (True, True, False),
        "+ merged (after)": (True, True, True),
    }
    got: dict[str, list[float]] = {name: [] for name in settings}
    for r in range(args.rounds):
        for name, flags in settings.items():
            setting(*flags)
            got[name].append(median_seconds(lambda: mx.eval(cm.compress(texts)), args.seconds))
        print(f"round {r + 1}: " + ", ".join(
            f"{n} {len(texts) / got[n][-1]:.2f}" for n in settings) + " chunks/s",
            flush=True)  # fmt: skip
    setting(True, True, True)
    base = got["before"]
    rows = []
    for name in settings:
        t = statistics.median(got[name])
        ratios = sorted(y / x for x, y in zip(base, got[name]))
        rows.append([name, f"{len(texts) / t:.2f}", f"{1e3 * t / len(texts):.0f}",
                     f"{t / statistics.median(base):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"])  # fmt: skip
    body = markdown_table(
        ["setting", "chunks/s", "ms per chunk", "time vs before (rounds)"], rows
    ) + (
        "\n\nDefault model and adapters, base weights packed once (as clara-index does), "
        f"{len(texts)} chunks of {CHUNK_TOKENS} tokens of Python's documentation topics in one "
        "`ClaraModel.compress` call (the default batch and CPU lanes). Each setting adds its "
        "change to the one above. Medians of timings over "
        f"{args.seconds:.0f} s per figure, {args.rounds} rounds alternating in one process, "
        "median of the rounds (range of the rounds' ratios)."
    )
    if args.no_report:
        print(body)
    else:
        append_report(
            "Compression: causal key skipping, the short last block, the packed merged "
            "compressor (docs/runs/2026-12-05-compression)",
            body,
        )


if __name__ == "__main__":
    main()
