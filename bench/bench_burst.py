"""What a burst of requests costs clara-serve's model thread, in process (no HTTP).

    .venv/bin/python bench/bench_burst.py      # prints a table, appends it to BENCHMARKS.md

On the default model and adapters, with memory prompts of five 256-token chunks (Python's
documentation topics, compressed) and pydoc questions, in one process, alternating the two
settings of each comparison so that both see the same machine:
- query encoding of 1 and 8 questions, with the compressor's and query adapter's float32 base
  weights packed once (`ClaraModel.pack_base_weights`, what clara-serve and clara-index do)
  and without (OpenBLAS packing them on every product);
- prefill of 1, 2, 4 and 8 memory prompts (`Decoder.add_many`, first token sampled) with each
  pass split into one part per CPU core (`clara.lanes`, the default) and as one batched pass
  (`CLARA_CPU_LANES=1`);
- greedy decode steps of 1 and 8 sequences through the generator, with each block's q/k/v
  merged weights as one stacked product (`clara.lora._Fused`, the default) and as one product
  per linear (`CLARA_FUSE=off`);
- a text prompt (the same five chunks as text) through the bare model: prefill and decode
  steps from the bare model's own decode copies of its weights (the default) and from the
  float32 base weights the query adapter reads (`CLARA_MERGE_GB=0`, no copies); and its
  prefill in chunks that keep its attention scores under `clara.decode.PREFILL_SCORES` (the
  default) and in chunks of `prefill_step` (512) rows.
Medians of `--repeats` timings (decode: of `--steps` steps). Clients, HTTP and retrieval are left out: bench_server.py
measures those end to end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)
import mlx.core as mx  # noqa: E402

from bench._common import append_report, markdown_table, sample_texts  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` (one untimed call first)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7, help="timings per figure (median)")
    p.add_argument("--steps", type=int, default=24, help="decode steps per decode timing")
    p.add_argument(
        "--only", default="encode,prefill,decode,text",
        help="comma-separated parts to measure: encode, prefill, decode, text",
    )  # fmt: skip
    p.add_argument("--no-report", action="store_true", help="print only, no BENCHMARKS.md")
    args = p.parse_args()
    parts = set(args.only.split(","))
    if not parts or parts - {"encode", "prefill", "decode", "text"}:
        p.error("--only takes encode, prefill, decode and/or text")

    from clara.checkpoint import load_clara
    from clara.decode import Decoder, PrefixCache
    from clara.stream import SamplingParams
    from clara.prompt import memory_prompt, text_prompt

    cm = load_clara("smollm2-135m")
    from pydoc_data.topics import topics

    names = sorted(topics)
    long = [t for t in sample_texts() if len(t) > 2000]  # 256 full tokens each
    chunks = [cm.tokenizer.decode(cm.tokenize([t])[0][:256]) for t in long[:5]]
    questions = [f"What does Python's documentation say about {n.lower()}?" for n in names[:8]]
    memories = cm.compress(chunks)
    mx.eval(memories)
    prompts = [memory_prompt(cm, q, [memories[i] for i in range(5)]) for q in questions]

    rows = []
    # query encoding, packed and unpacked alternating
    packed = cm.pack_base_weights()
    holder = cm.__dict__.get("_packed")
    if "encode" in parts and packed and holder is not None:
        for n in (1, 8):
            got = {}
            for _ in range(2):
                for setting in ("unpacked", "packed"):
                    if setting == "unpacked":
                        holder.close()
                    else:
                        cm.pack_base_weights()
                    t = timed(lambda n=n: mx.eval(cm.encode_queries(questions[:n])), args.repeats)
                    got.setdefault(setting, []).append(t)
            a, b = min(got["unpacked"]), min(got["packed"])
            rows.append([f"query encoding, {n} question(s)", "weights packed once",
                         f"{a * 1000:.0f}", f"{b * 1000:.0f}", f"{b / a:.2f}x"])  # fmt: skip
    elif "encode" in parts:
        print("packed base weights unavailable here (no AVX-512 or no thin kernel)")
    cm.pack_base_weights()

    # prefill, one batched pass against parts side by side, alternating
    decoder = Decoder(cm, "generator", prefix_cache=PrefixCache())
    params = SamplingParams(max_tokens=2)

    def prefill(n: int) -> None:
        decoder.add_many([(prompt, params, None) for prompt in prompts[:n]])
        for seq in list(decoder.sequences):
            decoder.remove(seq)

    before = os.environ.get("CLARA_CPU_LANES")
    try:
        for n in (1, 2, 4, 8) if "prefill" in parts else ():
            got = {}
            for _ in range(2):
                for lanes in ("1", before or ""):
                    os.environ["CLARA_CPU_LANES"] = lanes
                    got.setdefault(lanes, []).append(timed(lambda n=n: prefill(n), args.repeats))
            a, b = min(got["1"]), min(got[before or ""])
            rows.append([f"prefill, {n} memory prompt(s)", "parts side by side",
                         f"{a * 1000:.0f}", f"{b * 1000:.0f}", f"{b / a:.2f}x"])  # fmt: skip
    finally:
        if before is None:
            os.environ.pop("CLARA_CPU_LANES", None)
        else:
            os.environ["CLARA_CPU_LANES"] = before

    # decode steps, stacked q/k/v product against one per linear, alternating
    def steps(n: int, decoder: Decoder = decoder, prompts: list = prompts) -> float:
        """Median seconds of a decode step of `n` sequences (`args.steps` of them)."""
        greedy = SamplingParams(max_tokens=10_000, ignore_eos=True)
        decoder.add_many([(prompt, greedy, None) for prompt in prompts[:n]])
        try:
            for _ in range(3):  # warm-up (and the first tokens of the prefill)
                decoder.step()
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                decoder.step()
                times.append(time.perf_counter() - start)
            return statistics.median(times)
        finally:
            for seq in list(decoder.sequences):
                decoder.remove(seq)

    before = os.environ.get("CLARA_FUSE")
    try:
        for n in (1, 8) if "decode" in parts else ():
            got = {}
            for _ in range(2):
                for fuse in ("off", "on"):
                    os.environ["CLARA_FUSE"] = fuse
                    got.setdefault(fuse, []).append(steps(n))
            a, b = min(got["off"]), min(got["on"])
            rows.append([f"decode step, {n} sequence(s)", "q/k/v as one stacked product",
                         f"{a * 1000:.1f}", f"{b * 1000:.1f}", f"{b / a:.2f}x"])  # fmt: skip
    finally:
        if before is None:
            os.environ.pop("CLARA_FUSE", None)
        else:
            os.environ["CLARA_FUSE"] = before

    # a text prompt through the bare model: its own decode copies, or the base weights
    text = [text_prompt(cm, questions[0], chunks)]
    bare = Decoder(cm, None)  # no prefix cache: the same prompt again would be all cached

    def text_prefill() -> None:
        bare.add_many([(text[0], params, None)])
        for seq in list(bare.sequences):
            bare.remove(seq)

    before = os.environ.get("CLARA_MERGE_GB")
    try:
        for what in ("prefill", "decode step") if "text" in parts else ():
            got = {}
            for _ in range(2):
                for budget in ("0", before):
                    if budget is None:
                        os.environ.pop("CLARA_MERGE_GB", None)
                    else:
                        os.environ["CLARA_MERGE_GB"] = budget
                    if what == "prefill":
                        t = timed(text_prefill, max(1, args.repeats // 2))
                    else:
                        t = steps(1, bare, text)
                    got.setdefault(budget, []).append(t)
            a, b = min(got["0"]), min(got[before])
            rows.append([f"text prompt, {what}", "bare model from its own decode copies",
                         f"{a * 1000:.1f}", f"{b * 1000:.1f}", f"{b / a:.2f}x"])  # fmt: skip
    finally:
        if before is None:
            os.environ.pop("CLARA_MERGE_GB", None)
        else:
            os.environ["CLARA_MERGE_GB"] = before
    if "text" in parts:  # chunks of prefill_step rows against chunks under the score budget
        import clara.decode as decode

        budget, got = decode.PREFILL_SCORES, {}
        try:
            for _ in range(2):
                for setting in ("rows", "budget"):
                    decode.PREFILL_SCORES = budget if setting == "budget" else 1 << 60
                    t = timed(text_prefill, max(1, args.repeats // 2))
                    got.setdefault(setting, []).append(t)
        finally:
            decode.PREFILL_SCORES = budget
        a, b = min(got["rows"]), min(got["budget"])
        rows.append(["text prompt, prefill", "chunks under the attention-score budget",
                     f"{a * 1000:.1f}", f"{b * 1000:.1f}", f"{b / a:.2f}x"])  # fmt: skip

    table = markdown_table(["work", "change", "before ms", "after ms", "after / before"], rows)
    notes = (
        f"Prompts of {prompts[0].positions} positions (five 256-token chunks as 16x memory, a "
        f"question, the chat template; the shared prefix from the prefix cache). 'before' is "
        "OpenBLAS packing the weights on every product, one batched prefill pass "
        "(CLARA_CPU_LANES=1), one product per q/k/v linear in decode steps (CLARA_FUSE=off), "
        f"and the bare model reading its float32 base weights for a text prompt of "
        f"{text[0].positions} positions (CLARA_MERGE_GB=0) in chunks of 512 rows where it "
        "says so; 'after' is what clara-serve does "
        "by default. Each figure is the lower of two medians "
        f"of {args.repeats} timings ({args.steps} steps for decode), the settings alternating. "
        "A pass is split "
        "only where each part gets at least `clara.lanes.MIN_ROWS` (128) positions: two "
        f"prompts of {prompts[0].positions} positions are split only if that is 128 or more; "
        "one prompt never is (its row shows the noise)."
    )
    if args.no_report:
        print(table + "\n\n" + notes)
    else:
        append_report("A burst on the model thread (bench/bench_burst.py)", table, notes)


if __name__ == "__main__":
    main()
