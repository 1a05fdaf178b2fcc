"""What a burst of requests costs clara-serve's model thread, in process (no HTTP).

    .venv/bin/python bench/bench_burst.py      # prints a table, appends it to BENCHMARKS.md

On the default model and adapters, with memory prompts of five 256-token chunks (Python's
documentation topics, compressed) and pydoc questions, in one process, alternating the two
settings of each comparison so that both see the same machine:
- query encoding of 1 and 8 questions, with the compressor's and query adapter's float32 base
  weights packed once (`ClaraModel.pack_base_weights`, what clara-serve and clara-index do)
  and without (OpenBLAS packing them on every product); and, on CPUs with bfloat16 products, with
  the query adapter's base products in bfloat16 (`--query-precision bfloat16`, opt-in);
  and query encodings and the compression of the five chunks with their attention through
  clara's fused kernel as an MLX op (the default where clara/_mlx_attention.cpp builds) and
  through MLX's ops (`CLARA_ROWS_ATTENTION=off`);
- prefill of 1, 2, 4 and 8 memory prompts (`Decoder.add_many`, first token sampled) with each
  pass split into one part per CPU core (`clara.lanes`, the default) and as one batched pass
  (`CLARA_CPU_LANES=1`); and with every prompt row's attention through clara's fused kernel as
  an MLX op (the default where clara/_mlx_attention.cpp builds) and through MLX's ops
  (`CLARA_ROWS_ATTENTION=off`);
- greedy decode steps of 1 and 8 sequences through the generator, with each block's q/k/v
  merged weights as one stacked product (`clara.lora._Fused`, the default) and as one product
  per linear (`CLARA_FUSE=off`); and with each layer's attention as clara's one MLX op
  (clara/_mlx_attention.cpp, the default) and as MLX's ops (`CLARA_ROWS_ATTENTION=off`);
- on CPUs with bfloat16 products (AMX tiles or AVX-512 BF16), prefill of 1, 2 and 8 memory
  prompts and decode steps of 1 and 8 sequences with the generator's products in bfloat16
  (the default) and as without them (`clara._blas.float32_products`: float32 prefill, the
  float16 decode kernel);
- a text prompt (the same five chunks as text) through the bare model: prefill and decode
  steps from the bare model's own decode copies of its weights (the default) and from the
  float32 base weights the query adapter reads (`CLARA_MERGE_GB=0`, no copies); its
  prefill through MLX's attention in chunks that keep its attention scores under
  `clara.decode.PREFILL_SCORES` (the default below position 512) and in chunks of
  `prefill_step` (512) rows; and its rows from position 512 on through clara's fused
  attention kernel (clara/_attention.c, the default) and through MLX's attention
  (`CLARA_FUSED_ATTENTION=off`).
Medians of `--repeats` timings (decode: of `--steps` steps). Clients, HTTP and retrieval are left out: bench_server.py
measures those end to end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)
import mlx.core as mx  # noqa: E402

from bench._common import add_no_append, append_report, start_run, markdown_table, sample_texts  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` (one untimed call first)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _put(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@contextlib.contextmanager
def env(name: str, value: str | None):
    """The environment variable `name` set to `value` (None: unset) inside the block only."""
    before = os.environ.get(name)
    _put(name, value)
    try:
        yield
    finally:
        _put(name, before)


def side_by_side(measure, before, after) -> tuple[float, float]:
    """The lower of two results of `measure()` under each of the settings `before()` and
    `after()` (context managers), the two alternating: both see the same machine."""
    got: tuple[list, list] = ([], [])
    for _ in range(2):
        for i, setting in enumerate((before, after)):
            with setting():
                got[i].append(measure())
    return min(got[0]), min(got[1])


def row(work: str, change: str, a: float, b: float, digits: int = 0) -> list[str]:
    return [work, change, f"{a * 1000:.{digits}f}", f"{b * 1000:.{digits}f}", f"{b / a:.2f}x"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7, help="timings per figure (median)")
    p.add_argument("--steps", type=int, default=24, help="decode steps per decode timing")
    p.add_argument(
        "--only", default="encode,prefill,decode,text,bf16",
        help="comma-separated parts to measure: encode, prefill, decode, text, bf16",
    )  # fmt: skip
    add_no_append(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    parts = set(args.only.split(","))
    if not parts or parts - {"encode", "prefill", "decode", "text", "bf16"}:
        p.error("--only takes encode, prefill, decode, text and/or bf16")
    start_run(args.repeats)

    from clara import _blas
    from clara.checkpoint import load_clara
    from clara.decode import Decoder, PrefixCache
    from clara.stream import SamplingParams
    from clara.prompt import memory_prompt, text_prompt

    if "bf16" in parts:  # its 'before' decodes from the float16 copies, as CPUs without it do
        _blas.keep_float16_copies()
    kernels_default = _blas.fused_attention_default()
    if not kernels_default:  # measure the kernels anyway, against MLX's ops (this CPU's default)
        os.environ["CLARA_FUSED_ATTENTION"] = "on"
        print("no AVX2: clara's fused attention kernels are off by default here; measured "
              "anyway (CLARA_FUSED_ATTENTION=on) against MLX's ops")  # fmt: skip
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
    # query encoding: OpenBLAS packing the weights on every product, or packed once
    packed = cm.pack_base_weights()
    holder = cm.__dict__.get("_packed")

    @contextlib.contextmanager
    def unpacked():
        holder.close()
        try:
            yield
        finally:
            cm.pack_base_weights()

    if "encode" in parts and packed and holder is not None:
        for n in (1, 8):
            a, b = side_by_side(
                lambda n=n: timed(lambda: mx.eval(cm.encode_queries(questions[:n])), args.repeats),
                unpacked, contextlib.nullcontext,
            )  # fmt: skip
            rows.append(row(f"query encoding, {n} question(s)", "weights packed once", a, b))

        @contextlib.contextmanager
        def query_bfloat16():
            cm.set_query_precision("bfloat16")
            try:
                yield
            finally:
                cm.set_query_precision("float32")

        # attention of compression and query encodings: MLX's ops, or the fused kernel as an
        # MLX op (the default, where clara's extension builds)
        for n in (1, 8):
            a, b = side_by_side(
                lambda n=n: timed(lambda: mx.eval(cm.encode_queries(questions[:n])), args.repeats),
                lambda: env("CLARA_ROWS_ATTENTION", "off"), contextlib.nullcontext,
            )  # fmt: skip
            rows.append(
                row(f"query encoding, {n} question(s)", "fused attention as an MLX op", a, b)
            )
        a, b = side_by_side(
            lambda: timed(lambda: mx.eval(cm.compress(chunks)), max(3, args.repeats // 2)),
            lambda: env("CLARA_ROWS_ATTENTION", "off"), contextlib.nullcontext,
        )  # fmt: skip
        rows.append(row(f"compression, {len(chunks)} chunks", "fused attention as an MLX op", a, b))

        for n in (1, 8) if _blas.bf16 else ():  # --query-precision bfloat16 (opt-in)
            a, b = side_by_side(
                lambda n=n: timed(lambda: mx.eval(cm.encode_queries(questions[:n])), args.repeats),
                contextlib.nullcontext, query_bfloat16,
            )  # fmt: skip
            rows.append(row(f"query encoding, {n} question(s)", "bfloat16 query products", a, b))
    elif "encode" in parts:
        print("packed base weights unavailable here (no AVX-512 or no thin kernel)")

    # prefill: one batched pass, or parts side by side (the default)
    decoder = Decoder(cm, "generator", prefix_cache=PrefixCache())
    params = SamplingParams(max_tokens=2)

    def prefill(n: int, decoder: Decoder = decoder, prompts: list = prompts) -> None:
        decoder.add_many([(prompt, params, None) for prompt in prompts[:n]])
        for seq in list(decoder.sequences):
            decoder.remove(seq)

    for n in (1, 2, 4, 8) if "prefill" in parts else ():
        a, b = side_by_side(
            lambda n=n: timed(lambda: prefill(n), args.repeats),
            lambda: env("CLARA_CPU_LANES", "1"), contextlib.nullcontext,
        )  # fmt: skip
        rows.append(row(f"prefill, {n} memory prompt(s)", "parts side by side", a, b))
    for n in (1, 2, 8) if "prefill" in parts else ():
        a, b = side_by_side(
            lambda n=n: timed(lambda: prefill(n), args.repeats),
            lambda: env("CLARA_ROWS_ATTENTION", "off"), contextlib.nullcontext,
        )  # fmt: skip
        rows.append(row(f"prefill, {n} memory prompt(s)", "fused attention as an MLX op", a, b))

    # decode steps: one product per q/k/v projection, or one stacked product (the default)
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

    for n in (1, 8) if "decode" in parts else ():
        a, b = side_by_side(
            lambda n=n: steps(n), lambda: env("CLARA_FUSE", "off"), contextlib.nullcontext
        )
        rows.append(row(f"decode step, {n} sequence(s)", "q/k/v as one stacked product", a, b, 1))
    for n in (1, 8) if "decode" in parts else ():
        a, b = side_by_side(
            lambda n=n: steps(n), lambda: env("CLARA_ROWS_ATTENTION", "off"),
            contextlib.nullcontext,
        )  # fmt: skip
        rows.append(row(f"decode step, {n} sequence(s)", "attention as one MLX op", a, b, 1))

    # the generator's products in bfloat16 (AMX tiles or AVX-512 BF16, the default where the
    # CPU has either) or as without them: float32 prefill, the float16 decode kernel
    if "bf16" in parts and _blas.bf16:
        change = f"generator products in bfloat16 ({_blas.bf16_engine})"
        for n in (1, 2, 8):
            a, b = side_by_side(
                lambda n=n: timed(lambda: prefill(n), args.repeats),
                _blas.float32_products, contextlib.nullcontext,
            )  # fmt: skip
            rows.append(row(f"prefill, {n} memory prompt(s)", change, a, b))
        for n in (1, 8):
            a, b = side_by_side(
                lambda n=n: steps(n), _blas.float32_products, contextlib.nullcontext
            )
            rows.append(row(f"decode step, {n} sequence(s)", change, a, b, 1))
    elif "bf16" in parts:
        print(f"no bfloat16 products here: {_blas.bf16_reason}")

    # a text prompt through the bare model: from the float32 base weights the query adapter
    # reads (no copies), or from its own decode copies (the default); then its prefill in
    # chunks of `prefill_step` rows, or under the attention-score budget (the default)
    text = [text_prompt(cm, questions[0], chunks)]
    bare = Decoder(cm, None)  # no prefix cache: the same prompt again would be all cached
    text_prefill = lambda: timed(lambda: prefill(1, bare, text), max(1, args.repeats // 2))  # noqa: E731
    if "text" in parts:
        no_copies = lambda: env("CLARA_MERGE_GB", "0")  # noqa: E731
        change = "bare model from its own decode copies"
        a, b = side_by_side(text_prefill, no_copies, contextlib.nullcontext)
        rows.append(row("text prompt, prefill", change, a, b, 1))
        a, b = side_by_side(lambda: steps(1, bare, text), no_copies, contextlib.nullcontext)
        rows.append(row("text prompt, decode step", change, a, b, 1))

        import clara.decode as decode

        @contextlib.contextmanager
        def rows_only():
            budget, decode.PREFILL_SCORES = decode.PREFILL_SCORES, 1 << 60
            try:
                yield
            finally:
                decode.PREFILL_SCORES = budget

        unfused = lambda: env("CLARA_FUSED_ATTENTION", "off")  # noqa: E731

        @contextlib.contextmanager
        def rows_only_unfused():
            with rows_only(), unfused():
                yield

        a, b = side_by_side(text_prefill, rows_only_unfused, unfused)
        rows.append(row("text prompt, prefill", "chunks under the attention-score budget", a, b, 1))
        change = "rows from position 512 through the fused attention kernel (NumPy)"
        numpy_route = lambda: env("CLARA_ROWS_ATTENTION", "off")  # noqa: E731
        a, b = side_by_side(text_prefill, unfused, numpy_route)
        rows.append(row("text prompt, prefill", change, a, b, 1))
        change = "every row through the fused attention kernel as an MLX op"
        a, b = side_by_side(text_prefill, numpy_route, contextlib.nullcontext)
        rows.append(row("text prompt, prefill", change, a, b, 1))

    table = markdown_table(["work", "change", "before ms", "after ms", "after / before"], rows)
    notes = (
        f"Prompts of {prompts[0].positions} positions (five 256-token chunks as 16x memory, a "
        f"question, the chat template; the shared prefix from the prefix cache). 'before' is "
        "OpenBLAS packing the weights on every product, one batched prefill pass "
        "(CLARA_CPU_LANES=1), one product per q/k/v linear in decode steps (CLARA_FUSE=off), MLX's attention ops in "
        "decode steps, prompts, query encodings and compression (CLARA_ROWS_ATTENTION=off), "
        f"and the bare model reading its float32 base weights for a text prompt of "
        f"{text[0].positions} positions (CLARA_MERGE_GB=0) in chunks of 512 rows where it "
        "says so (both through MLX's attention) and through MLX's attention from position 512 "
        "(CLARA_FUSED_ATTENTION=off), then the kernel through NumPy against the kernel as an MLX "
        "op (CLARA_ROWS_ATTENTION=off: rows from position 512 only); 'after' is what "
        "clara-serve does "
        "by default, except on the 'bfloat16 query products' rows: there 'before' is the "
        "default (float32 query encodings, weights packed once) and 'after' is "
        "`--query-precision bfloat16` (opt-in, CPUs with bfloat16 products), and on the "
        "'generator products in bfloat16' rows, where 'before' is float32 prefill (OpenBLAS) "
        "and the float16 decode kernel, as on CPUs without them. Each figure is the lower of two medians "
        f"of {args.repeats} timings ({args.steps} steps for decode), the settings alternating. "
        "A pass is split "
        "only where each part gets at least `clara.lanes.MIN_ROWS` (128) positions: two "
        f"prompts of {prompts[0].positions} positions are split only if that is 128 or more; "
        "one prompt never is (its row shows the noise)."
    )
    if not kernels_default:
        notes += (
            " This CPU has no AVX2, so clara-serve's default here is MLX's attention ops "
            "(`clara._blas.fused_attention_default`): on the rows about clara's fused kernel, "
            "'before' is the default and 'after' is CLARA_FUSED_ATTENTION=on."
        )
    if args.no_append:
        print(table + "\n\n" + notes)
    else:
        append_report("A burst on the model thread (bench/bench_burst.py)", table, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
