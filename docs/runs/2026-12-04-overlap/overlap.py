"""Does a prefill on its own MLX stream overlap decode steps of 8 sequences? (#14, tried and
dropped in session 22.) One process, the four settings alternating, 7 timings each:

    .venv/bin/python docs/runs/2026-12-04-overlap/overlap.py [K] [PROMPTS]   # default 4 1

- one after the other: PROMPTS memory prompts prefilled (`Decoder.add_many`, every core), then
  K decode steps of 8 sequences (every core);
- overlapped: the prefill's graph built on its own stream and queued (`mx.async_eval`) with one
  BLAS and thin-kernel thread per side, the K decode steps run meanwhile, then the prefill
  awaited;
- the decode steps alone, the prefill alone.
Appends the medians to BENCHMARKS.md.
"""

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)
from pydoc_data.topics import topics  # noqa: E402

import mlx.core as mx  # noqa: E402

from bench._common import append_report, markdown_table, sample_texts  # noqa: E402
from clara import _blas  # noqa: E402
from clara.checkpoint import load_clara  # noqa: E402
from clara.decode import Decoder, PrefixCache  # noqa: E402
from clara.prompt import memory_prompt  # noqa: E402
from clara.stream import SamplingParams  # noqa: E402

ONE_THREAD = {"CLARA_DECODE_THREADS": "1", "CLARA_PREFILL_THREADS": "1"}


def main(steps: int = 4, n_prompts: int = 1) -> None:
    cm = load_clara("smollm2-135m")
    cm.pack_base_weights()
    long = [t for t in sample_texts() if len(t) > 2000]
    chunks = [cm.tokenizer.decode(cm.tokenize([t])[0][:256]) for t in long[:5]]
    questions = [f"What does Python's documentation say about {n.lower()}?" for n in sorted(topics)]
    memories = cm.compress(chunks)
    mx.eval(memories)
    prompts = [
        memory_prompt(cm, q, [memories[i] for i in range(len(chunks))])
        for q in questions[: 8 + n_prompts]
    ]
    running = Decoder(cm, "generator", prefix_cache=PrefixCache())  # the 8 decoding sequences
    joining = Decoder(cm, "generator", prefix_cache=PrefixCache())  # the prefills
    running.add_many([(p, SamplingParams(max_tokens=100_000, ignore_eos=True), None)
                      for p in prompts[:8]])  # fmt: skip
    new = prompts[8:]
    stream = mx.new_stream(mx.cpu)

    def decode() -> None:
        for _ in range(steps):
            running.step()

    def prefill() -> None:
        joining.add_many([(p, SamplingParams(max_tokens=2), None) for p in new])
        for seq in list(joining.sequences):
            joining.remove(seq)

    def overlapped() -> None:
        os.environ.update(ONE_THREAD)  # read by every step's and prefill's thread policy
        _blas.set_threads(1)
        _blas.set_thin_threads(1)
        try:
            with mx.stream(stream):
                _, logits = joining._prefill(new, evaluate=False)
                first = mx.argmax(logits, axis=-1)
            mx.async_eval(first)
            decode()
            mx.eval(first)
        finally:
            for name in ONE_THREAD:
                del os.environ[name]

    settings = {
        "prefill, then the decode steps": lambda: (prefill(), decode()),
        "prefill on its own stream beside the decode steps": overlapped,
        "the decode steps alone": decode,
        "the prefill alone": prefill,
    }
    for fn in settings.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(7):
        for name, fn in settings.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    rows = [[name, f"{1000 * statistics.median(t):.0f}"] for name, t in times.items()]
    append_report(
        "Prefill beside decode steps (docs/runs/2026-12-04-overlap/overlap.py)",
        markdown_table(["work", "median ms"], rows),
        f"{n_prompts} memory prompt(s) of five 256-token chunks and {steps} greedy decode steps "
        "of 8 sequences through the generator, default model and adapters; medians of 7 "
        "timings, the four settings alternating in one process.",
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Appends the medians to BENCHMARKS.md."
    )  # (a bare `--help` ran the whole benchmark and appended its section)
    parser.add_argument("steps", nargs="?", type=int, default=4, help="decode steps (K)")
    parser.add_argument("prompts", nargs="?", type=int, default=1, help="memory prompts")
    args = parser.parse_args()
    main(args.steps, args.prompts)
