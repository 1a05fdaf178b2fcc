"""Decode steps with the float16 decode copies laid out row by row (dot products, the thin
kernel before commit "float16 panels") against panels of 16 outputs (after), side by side.

    .venv/bin/python docs/runs/2026-12-04-f16-panels/compare.py [--rev REV] [--rounds 3]

Each setting runs in its own process: a copy of the `clara` package whose `_thinmm.c` is the
one at --rev (before) or the checkout's (after); clara builds each into its library cache by
the source's hash. A process loads the default model and adapters, compresses five 256-token
chunks of Python's documentation topics, prefills 1, 2, 4 or 8 memory prompts through the
generator and times greedy decode steps; the settings alternate for --rounds rounds and each
figure is the median of the rounds' medians. Prints a table and appends it to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)

CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2])
import clara  # the copy under argv[1]: its _thinmm.c
import mlx.core as mx
from bench._common import sample_texts
from clara import _blas
from clara.checkpoint import load_clara
from clara.decode import Decoder, PrefixCache
from clara.prompt import memory_prompt
from clara.stream import SamplingParams
from pydoc_data.topics import topics

assert _blas.thin, _blas.thin_reason
cm = load_clara("smollm2-135m")
long = [t for t in sample_texts() if len(t) > 2000]
chunks = [cm.tokenizer.decode(cm.tokenize([t])[0][:256]) for t in long[:5]]
memories = cm.compress(chunks)
mx.eval(memories)
questions = [f"What does Python's documentation say about {n.lower()}?" for n in sorted(topics)[:8]]
prompts = [memory_prompt(cm, q, [memories[i] for i in range(5)]) for q in questions]
decoder = Decoder(cm, "generator", prefix_cache=PrefixCache())
greedy = SamplingParams(max_tokens=100_000, ignore_eos=True)
out = {"library": _blas.thin}
for n in [int(v) for v in sys.argv[3].split(",")]:
    decoder.add_many([(p, greedy, None) for p in prompts[:n]])
    for _ in range(3):
        decoder.step()
    times = []
    for _ in range(int(sys.argv[4])):
        start = time.perf_counter()
        decoder.step()
        times.append(time.perf_counter() - start)
    out[n] = statistics.median(times)
    for seq in list(decoder.sequences):
        decoder.remove(seq)
print(json.dumps(out))
"""


def package_copy(where: Path, source: str) -> Path:
    """A copy of the clara package whose `_thinmm.c` is `source`."""
    shutil.copytree(ROOT / "clara", where / "clara", ignore=shutil.ignore_patterns("__pycache__"))
    (where / "clara" / "_thinmm.c").write_text(source)
    return where


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rev", default="f64f562", help="the commit whose thin kernel is 'before'")
    p.add_argument("--sizes", default="1,2,4,8", help="sequences per decode step")
    p.add_argument("--steps", type=int, default=48, help="timed decode steps per size")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-report", action="store_true")
    args = p.parse_args()
    old = subprocess.run(
        ["git", "show", f"{args.rev}:clara/_thinmm.c"], cwd=ROOT, check=True,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    new = (ROOT / "clara" / "_thinmm.c").read_text()
    sizes = [int(v) for v in args.sizes.split(",")]
    got: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {
            "before": package_copy(Path(tmp) / "before", old),
            "after": package_copy(Path(tmp) / "after", new),
        }
        for r in range(args.rounds):
            for name, tree in trees.items():
                run = subprocess.run(
                    [sys.executable, "-c", CHILD, str(tree), str(ROOT), args.sizes,
                     str(args.steps)],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                got[name].append(json.loads(run.stdout.strip().splitlines()[-1]))
                print(f"round {r + 1} {name}: " + ", ".join(
                    f"{n}: {1e3 * got[name][-1][str(n)]:.1f} ms" for n in sizes), flush=True)  # fmt: skip

    from bench._common import append_report, markdown_table

    rows = []
    for n in sizes:
        a = statistics.median(g[str(n)] for g in got["before"])
        b = statistics.median(g[str(n)] for g in got["after"])
        ratios = sorted(g[str(n)] / f[str(n)] for f, g in zip(got["before"], got["after"]))
        rows.append([n, f"{1e3 * a:.1f}", f"{1e3 * b:.1f}",
                     f"{b / a:.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})",
                     f"{n / a:.0f}", f"{n / b:.0f}"])  # fmt: skip
    body = markdown_table(
        ["sequences", "before ms/step", "after ms/step", "after / before (rounds)",
         "before tok/s", "after tok/s"], rows,
    ) + (
        f"\n\nGreedy decode steps of memory prompts (five 256-token chunks as 16x memory, a "
        f"question) through the generator, default model and adapters, float16 decode copies "
        f"(this CPU's default). 'before': the thin kernel at {args.rev} (row-by-row dot "
        f"products of each float16 weight row); 'after': the float16 copies in panels of 16 "
        f"outputs. Medians of {args.steps} steps per process, {args.rounds} rounds of the two "
        f"settings alternating (each in its own process), median of the rounds."
    )  # fmt: skip
    if args.no_report:
        print(body)
    else:
        append_report(
            "Decode steps: float16 copies in panels (docs/runs/2026-12-04-f16-panels)", body
        )


if __name__ == "__main__":
    main()
