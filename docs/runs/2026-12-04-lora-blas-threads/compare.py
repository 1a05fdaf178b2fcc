"""Query encodings and compression with OpenBLAS on every core (before) and on one thread
(after) while the base products read weights packed for clara's kernel, side by side.

    .venv/bin/python docs/runs/2026-12-04-lora-blas-threads/compare.py [--rounds 4]

With the compressor's and query adapter's float32 base weights packed once
(`ClaraModel.pack_base_weights`, what clara-serve and clara-index do), OpenBLAS computes only
the adapters' rank-16 products of those passes. 'before' gives it every core, as
`clara._blas.for_prefill()` did; 'after' one thread (`for_prefill(packed=True)`, the default
since this change). One process, default model and adapters; the two settings alternate for
--rounds rounds; each figure is the median over rounds of each round's median. Prints a table
and appends it to BENCHMARKS.md.
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

from bench._common import append_report, markdown_table, median_seconds, sample_texts  # noqa: E402
from clara import _blas  # noqa: E402
from clara import model as clara_model  # noqa: E402
from clara.checkpoint import load_clara  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=4.0, help="timing per figure and round")
    p.add_argument("--no-report", action="store_true")
    args = p.parse_args()

    cm = load_clara("smollm2-135m")
    if not cm.pack_base_weights():
        raise SystemExit("no packed base weights here (needs the thin kernel with AVX2/AVX-512)")
    from pydoc_data.topics import topics

    names = sorted(topics)
    one = [f"What does Python's documentation say about {names[0].lower()}?"]
    eight = [f"What does Python's documentation say about {n.lower()}?" for n in names[:8]]
    chunks = [t for t in sample_texts() if len(t) > 2000][:4]  # 256 full tokens each
    work = {
        "query encoding, 1 question": lambda: mx.eval(cm.encode_queries(one)),
        "query encoding, 8 questions": lambda: mx.eval(cm.encode_queries(eight)),
        "compression, 4 chunks": lambda: mx.eval(cm.compress(chunks)),
    }
    real = _blas.for_prefill
    settings = {
        "before": lambda packed=False: real(False),  # every core, whatever the packing
        "after": real,
    }
    got: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for name, fn in settings.items():
            clara_model._blas.for_prefill = fn  # the module attribute `_encode_texts` calls
            for what, run in work.items():
                got.setdefault((what, name), []).append(median_seconds(run, args.seconds))
        clara_model._blas.for_prefill = real
        print(f"round {r + 1}: " + ", ".join(
            f"{w} {1e3 * got[(w, 'before')][-1]:.0f}/{1e3 * got[(w, 'after')][-1]:.0f} ms"
            for w in work), flush=True)  # fmt: skip
    rows = []
    for what in work:
        a, b = (statistics.median(got[(what, n)]) for n in ("before", "after"))
        ratios = sorted(y / x for x, y in zip(got[(what, "before")], got[(what, "after")]))
        rows.append([what, f"{1e3 * a:.0f}", f"{1e3 * b:.0f}",
                     f"{b / a:.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"])  # fmt: skip
    body = markdown_table(["work", "before ms", "after ms", "after / before (rounds)"], rows) + (
        "\n\nDefault model and adapters, base weights packed once (as clara-serve and "
        "clara-index run them); 'before': OpenBLAS on every core for the adapters' rank-16 "
        "products, 'after': on one thread. Questions about Python's documentation topics, "
        "chunks of 256 tokens of them. Medians of timings over "
        f"{args.seconds:.0f} s per figure, {args.rounds} rounds alternating in one process, "
        "median of the rounds (range of the rounds' ratios)."
    )
    if args.no_report:
        print(body)
    else:
        append_report(
            "Query encodings: OpenBLAS threads beside packed weights "
            "(docs/runs/2026-12-04-lora-blas-threads)",
            body,
        )


if __name__ == "__main__":
    main()
