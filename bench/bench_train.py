"""Stage-1 training speed, before vs after, side by side in one run (default model, batch 4).

    python bench/bench_train.py                 # timing rows + the 50-step loss check,
                                                # appended to BENCHMARKS.md
    python bench/bench_train.py --no-append     # print them only

Paths (each its own model, same initial weights and data; steps interleaved so both see the
same machine load):
- before: the original LoRA forward (a dropout mask per linear layer, uniform random numbers,
  separate scale/cast/add ops), MLX's own RoPE and RMSNorm graphs (`CLARA_CPU_ROPE` and
  `CLARA_CPU_NORM` off for that model) and batches in seeded random order;
- after: the training fast path (`AdapterSwitch.fast`: one dropout mask per layer input, 4
  per block instead of 7, scale folded into one `addmm`) and length-bucketed batches
  (`TrainConfig.length_buckets`), at each BLAS thread count of `--threads`; on CPUs with
  bfloat16 products (AMX tiles or AVX-512 BF16), also with the frozen weights' products in
  bfloat16 (`TrainConfig.bf16_products`);
- after, data parallel: the same (in bfloat16 where the CPU can) on `--ranks` processes (`clara-train --ranks`), each with an
  equal share of the cores and of each batch (the same global batches); timed after the
  interleaved paths, alone on the machine.

Tokens/s counts real (unpadded) positions: document + memory slots of the compressor input,
plus the generator's prompt and answer. The loss check trains before and after (bfloat16 included) for `--check-steps`
steps on the same batches (bucketing off: it changes which examples share a step) and
compares every step's loss. Data: the training documents of the example data ($CLARA_EXAMPLE_DATA; QA and paraphrase
records), else Python's documentation topics (paraphrase).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402,F401  first: OpenBLAS before mlx
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from bench._common import (  # noqa: E402
    add_no_append,
    add_old_report_flag,
    append_report,
    markdown_table,
    sample_texts,
    scratch_dir,
    start_run,
)
from clara import _blas  # noqa: E402
from training.data import PretrainRecord, parse_pretrain  # noqa: E402
from training.default_recipe import default_data  # noqa: E402
from training.pipeline import load_for_training  # noqa: E402
from training.stages import PretrainStage, set_trainable  # noqa: E402
from training.trainer import TrainConfig, Trainer  # noqa: E402

DATA = default_data()  # $CLARA_EXAMPLE_DATA, or a shared/data folder beside the checkout
MODEL = "smollm2-135m"


def records(n: int) -> tuple[list[PretrainRecord], str]:
    """`n` stage-1 records: QA and paraphrase of training documents (line % 5 != 0)."""
    if DATA.exists():
        out = []
        for i, line in enumerate(DATA.read_text(encoding="utf-8").splitlines()):
            if i % 5 == 0:
                continue  # held out
            r = parse_pretrain(f"{DATA}:{i + 1}", json.loads(line))
            out.append(r if len(out) % 2 == 0 else PretrainRecord("paraphrase", r.doc))
            if len(out) == n:
                break
        return out, f"{n} records (QA/paraphrase alternating) of clara-example training documents"
    texts = [t[:1200] for t in sample_texts() if len(t) > 400][:n]
    return [PretrainRecord("paraphrase", t) for t in texts], f"{n} pydoc paraphrase records"


def short(recs: list[PretrainRecord], words: int) -> list[PretrainRecord]:
    return [PretrainRecord("paraphrase", " ".join(r.doc.split()[:words])) for r in recs]


def trainer(
    recs,
    fast: bool,
    buckets: bool,
    steps: int,
    out: str,
    pass_size=None,
    batch=4,
    group=None,
    bf16: bool = True,
) -> Trainer:
    keep = {k: os.environ.get(k) for k in ("CLARA_CPU_ROPE", "CLARA_CPU_NORM")}
    if not fast:  # the original forward: MLX's RoPE and RMSNorm (read when the model loads)
        os.environ.update(dict.fromkeys(keep, "off"))
    try:
        cm = load_for_training(MODEL, None, dtype="float32")
    finally:
        for k, v in keep.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    cm.switch.fast = fast
    stage = PretrainStage(cm)
    examples = stage.build(recs)
    set_trainable(cm, stage.adapters, True, False)
    cfg = TrainConfig(
        stage="pretrain", out=out, lr=1e-3, max_steps=steps, batch_size=batch, quiet=True,
        length_buckets=buckets, pass_size=pass_size, bf16_products=bf16,
    )  # fmt: skip
    t = Trainer(cm, stage, examples, cfg, group)
    cm.train()
    return t


def seeded_order(t: Trainer, seed: int):
    """`t`'s batch order as with `seed`, whatever `t.cfg.seed` (which then only moves dropout)."""
    order = t._order

    def fixed(epoch: int):
        mine, t.cfg.seed = t.cfg.seed, seed
        try:
            return order(epoch)
        finally:
            t.cfg.seed = mine

    return fixed


def timed(t: Trainer, threads: int | None) -> tuple[float, dict]:
    if threads:
        _blas.set_threads(threads)
    start = time.perf_counter()
    m = t.train_step()
    return time.perf_counter() - start, m


def rank_worker(steps: int, ranks: int, out: str) -> int:
    """One rank of the data-parallel path (started by `training.launch.run_ranks`): the after path with batch
    4 / ranks per rank, so the global batches are the in-process path's; rank 0 writes JSON."""
    from training.pipeline import local_ranks

    group = mx.distributed.init()
    _blas.for_training(local_ranks(group))
    recs, _ = records(64)
    t = trainer(recs, True, True, 1000, f"{out}.run", 1, 4 // ranks, group)
    times, work = [], []
    for step in range(steps + 1):
        start = time.perf_counter()
        m = t.train_step()
        if step:
            times.append(time.perf_counter() - start)
            work.append(m["work"])
    if group.rank() == 0:
        Path(out).write_text(json.dumps({"s": times, "work": work}))
    return 0


def data_parallel(steps: int, ranks: int, tmp: str) -> dict | None:
    """Times of the data-parallel path, or None (with the reason printed) if it cannot run."""
    from training.launch import run_ranks

    out = f"{tmp}/ddp.json"
    cmd = [sys.executable, __file__, "--rank-worker", out, "--steps", str(steps)]
    code = run_ranks(cmd, ranks, {**os.environ, "CLARA_BENCH_RANKS": str(ranks)})
    if code == 0 and Path(out).exists():
        return json.loads(Path(out).read_text())
    print(f"data-parallel path skipped: the ranks exited {code}", file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=4, help="timed steps per path (after 1 warm-up)")
    p.add_argument("--threads", default="2", help="BLAS thread counts for the after path")
    p.add_argument("--check-steps", type=int, default=50, help="steps of the loss check (0: off)")
    p.add_argument("--check-words", type=int, default=24, help="document words in the check")
    p.add_argument("--tolerance", type=float, default=0.02, help="max relative loss difference")
    p.add_argument(
        "--ranks", type=int, default=2, help="ranks of the data-parallel path (0: skip it)"
    )
    p.add_argument("--check-only", action="store_true", help="only the loss check, no timing")
    add_no_append(p)
    add_old_report_flag(p)
    p.add_argument("--rank-worker", metavar="JSON", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rank_worker:
        return rank_worker(args.steps, int(os.environ.get("CLARA_BENCH_RANKS", "2")),
                           args.rank_worker)  # fmt: skip
    given = [x.strip() for x in args.threads.split(",")]
    threads = [int(x) for x in given if x.isdigit() and int(x)]
    if args.steps < 1 or args.check_steps < 0 or not threads or len(threads) < len(given):
        p.error("--steps must be 1 or more, --check-steps 0 or more, --threads counts of 1 or more")
    start_run()
    with scratch_dir("bench-train-") as tmp:  # the paths' trainers write under it
        return measure(args, threads, str(tmp))


def measure(args, threads: list[int], tmp: str) -> int:
    """The timing rows and the loss check; 1 if the check fails."""
    recs, what = records(64)
    if args.check_only:
        body = f"Stage 1 (pretrain), {MODEL} float32, {what}: the loss check alone.\n"
    else:
        # (name, fast LoRA path, length buckets, examples per pass, BLAS threads, AMX tiles)
        paths = [
            ("before", False, False, None, 2, False),
            ("fast LoRA + buckets", True, True, None, 2, False),
        ]
        paths += [
            (f"after: + 1 example/pass, {n} BLAS thr", True, True, 1, n, False) for n in threads
        ]
        if _blas.bf16:
            paths += [(f"after: + bfloat16, {n} BLAS thr", True, True, 1, n, True) for n in threads]
        trainers = {  # one trainer (model, optimizer, data order) per path: each sees its batches
            name: trainer(recs, fast, buckets, 1000, f"{tmp}/{i}", size, bf16=bf16)
            for i, (name, fast, buckets, size, _, bf16) in enumerate(paths)
        }
        stats = {name: {"s": [], "work": [], "loss": []} for name, *_ in paths}
        for step in range(args.steps + 1):
            for name, _, _, _, n, _ in paths:
                dt, m = timed(trainers[name], n)
                if step:  # step 0: warm-up
                    stats[name]["s"].append(dt)
                    stats[name]["work"].append(m["work"])
                print(f"step {step} {name}: {dt:.2f} s, {m['work']} positions", file=sys.stderr)
        _blas.set_threads(2)
        del trainers
        mx.clear_cache()
        if args.ranks > 1:  # after the interleaved paths: it needs the whole machine
            got = data_parallel(args.steps, args.ranks, tmp)
            if got:
                name = f"after, {args.ranks} data-parallel ranks (--ranks), 1 example/pass"
                name += f", bfloat16 ({_blas.bf16_engine})" if _blas.bf16 else ""
                paths.append((name, True, True, 1, None, _blas.bf16))
                stats[name] = got
        base = sum(stats["before"]["work"]) / sum(stats["before"]["s"])
        rows = []
        for name, *_ in paths:
            s = stats[name]
            tps = sum(s["work"]) / sum(s["s"])
            rows.append(
                [name, f"{np.mean(s['s']):.2f}", f"{np.mean(s['work']):.0f}", f"{tps:.0f}",
                 f"{tps / base:.2f}x"]
            )  # fmt: skip
        speed = markdown_table(["path", "s/step", "positions/step", "tokens/s", "vs before"], rows)
        body = (
            f"Stage 1 (pretrain), {MODEL} float32, batch 4, {what}; {args.steps} timed steps "
            f"per path after 1 warm-up, paths interleaved step by step.\n\n{speed}\n"
        )
    ok = True
    if args.check_steps:
        check = short(recs, args.check_words)
        noise = "after, float32, other dropout masks"
        runs = [("before", False, None, False), (noise, True, 1, False)]
        runs += [("after, float32", True, 1, False)]
        if _blas.bf16:
            runs.append(("after, bfloat16", True, 1, True))
        losses = {}
        for name, fast, size, bf16 in runs:
            t = trainer(
                check, fast, False, args.check_steps, f"{tmp}/check-{name}", size, bf16=bf16
            )
            if name == noise:  # the same batches (each epoch's order from seed 0), other dropout
                t._order = seeded_order(t, 0)
                t.cfg.seed = 1
            losses[name] = np.array([t.train_step()["loss"] for _ in range(args.check_steps)])
            del t
            mx.clear_cache()
        body += (
            f"\nLoss check, {args.check_steps} steps on the same batches (first "
            f"{args.check_words} words of each document, paraphrase targets, lr 1e-3; the "
            f"after path as the timing rows run it, {runs[-1][0]}, must stay within "
            f"{args.tolerance} of before at every step):\n\n"
        )
        rows = []
        pairs = [(b, "before") for b, *_ in runs[2:]]
        pairs.append((noise, "after, float32"))  # how far dropout noise alone moves the curve
        if _blas.bf16:
            pairs.append(("after, bfloat16", "after, float32"))  # bfloat16 alone
        for this, that in pairs:
            a, b = losses[that], losses[this]
            rel = np.abs(a - b) / np.abs(a)
            passed = bool(rel.max() <= args.tolerance)
            if this == runs[-1][0] and that == "before":
                ok = passed
            rows.append(
                [f"{this} vs {that}", f"{a[0]:.4f} -> {a[-1]:.4f}", f"{b[0]:.4f} -> {b[-1]:.4f}",
                 f"{rel.max():.4f} (step {int(rel.argmax()) + 1})", f"{rel.mean():.4f}",
                 "PASS" if passed else "FAIL"]
            )  # fmt: skip
        body += markdown_table(
            ["curves", "reference loss", "compared loss", "max rel. diff", "mean", "within tol."],
            rows,
        )
        body += "\n"
    if not args.no_append:
        append_report("Training speed, stage 1 (bench/bench_train.py)", body)
    else:
        print(body)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
