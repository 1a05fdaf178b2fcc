"""Does teacher-free cloze QA help? Stage 1 on documents that come without questions.

    python bench/bench_cloze.py --out runs/cloze               # train the arms (resumable),
                                                               # evaluate, append to BENCHMARKS.md
    python bench/bench_cloze.py --out runs/cloze --no-append   # print the table only

A user with documents and no teacher model has two stage-1 recipes: paraphrase records alone
(`clara-train synth --no-qa`), or paraphrase records plus fill-in-the-blank questions on the
names, numbers and dates of each chunk (`clara-train synth --cloze`). This benchmark trains
each arm from the same adapters (`--init`, default: runs/old-default, the adapters shipped
before real-prose training, which read real prose poorly: commit 36b4b4e's, made as --init's
help says), for the same number of steps, on the same 800 training documents of Apple's
ml-clara example data, and judges them on the questions of the 200 held-out documents, which
no arm saw: the gold document alone as 16x memory, read by the generator
(bench/bench_heldout.py's oracle row). A third arm, paraphrase plus the data's own questions
(a teacher's), shows what a teacher adds. Arms run one after another with `clara-train
pretrain` on 2 data-parallel ranks; each checkpoints every 10 steps and resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402,F401  first: OpenBLAS before mlx
import numpy as np  # noqa: E402

from bench._common import (  # noqa: E402
    add_no_append,
    add_old_report_flag,
    append_report,
    markdown_table,
    start_run,
)
from bench.bench_heldout import DATA, heldout, interval  # noqa: E402
from bench.bench_heldout import build_parser as heldout_parser  # noqa: E402
from bench.bench_heldout import run as heldout_run  # noqa: E402
from training.data import pretrain_to_json, write_jsonl  # noqa: E402
from training.default_recipe import (  # noqa: E402
    default_ranks,
    float32_copy,
    qa_records,
    split_example,
    synth_cloze,
    train_stage,
)
from training.evaluate import answer_scores  # noqa: E402

OLD = ROOT / "runs" / "old-default"
# The default --init is not shipped: it is the adapters commit 36b4b4e shipped, before any
# real-prose training (starting there lets the stage-1 data, not earlier training on these
# very documents, decide the result). Git has them:
OLD_HOWTO = (
    "mkdir -p runs/old-default && for f in adapters.safetensors clara_config.json; do "
    "git show 36b4b4e:clara/checkpoints/smollm2-135m-16x/$f > runs/old-default/$f; done"
)
ARMS = {
    "paraphrase": "paraphrase records only (synth --no-qa)",
    "paraphrase+cloze": "paraphrase + cloze QA (synth --cloze)",
    "paraphrase+teacher": "paraphrase + the data's own questions (a teacher's)",
}


def build(out: Path, seed: int) -> dict[str, int]:
    """One jsonl per arm under `out`; returns records per arm."""
    train, _, _ = split_example(DATA)  # line % 5 == 0: held out
    para, cloze = synth_cloze({f"doc{i:04d}": r["docs"][0] for i, r in enumerate(train)},
                              out / "synth", seed)  # fmt: skip
    teacher = [pretrain_to_json(rec) for r in train for rec in qa_records(r)]
    arms = {"paraphrase": para, "paraphrase+cloze": para + cloze,
            "paraphrase+teacher": para + teacher}  # fmt: skip
    for name, recs in arms.items():
        recs = list(recs)
        random.Random(seed).shuffle(recs)
        write_jsonl(out / f"{name}.jsonl", recs)
    return {name: len(recs) for name, recs in arms.items()}


def train(out: Path, arm: str, init: Path, steps: int, ranks: int, seed: int) -> Path:
    run = out / arm
    final = run / "final"
    if not final.exists():
        argv = ["pretrain", "--data", str(out / f"{arm}.jsonl"), "--out", str(run),
                "--init-from", str(init), "--max-steps", str(steps), "--lr", "5e-4",
                "--batch-size", str(4 // ranks), "--pass-size", "1", "--log-every", "5",
                "--save-every", "10", "--dtype", "float32", "--seed", str(seed)]  # fmt: skip
        if train_stage(argv, run, ranks):
            raise SystemExit(f"training arm {arm} failed")
    return final


def evaluate(out: Path, tag: str, checkpoint: Path, questions: int) -> dict:
    path = out / "eval" / f"{tag}.json"
    if path.exists():
        return json.loads(path.read_text())
    # bench_heldout's own options and defaults, so its run() gets every argument it reads
    ns = heldout_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--tag", tag, "--out", str(path.parent),
         "--questions", str(questions), "--top-k", "1", "--oracle-only"]
    )  # fmt: skip
    result = heldout_run(ns)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="folder for data, runs and results")
    p.add_argument("--init", type=Path, default=OLD,
                   help="installed checkpoint every arm starts from (default: runs/old-default, "
                   "the adapters of commit 36b4b4e, made from the checkout with: "
                   f"{OLD_HOWTO.replace('%', '%%')})")  # fmt: skip
    p.add_argument("--steps", type=int, default=80, help="optimiser steps per arm (batch 4)")
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms to run")
    p.add_argument("--questions", type=int, default=200, help="held-out questions (<= 200)")
    p.add_argument(
        "--ranks", type=int, default=default_ranks(),
        help="data-parallel training processes per arm (default: 2 on a CPU with 2+ cores)",
    )  # fmt: skip
    p.add_argument(
        "--seed", type=int, default=0,
        help="seed of the synthetic records, their order and training (default: 0)",
    )  # fmt: skip
    add_no_append(p)
    add_old_report_flag(p)
    args = p.parse_args(argv)
    if not DATA.exists():
        raise SystemExit(f"{DATA} not found: give the example data's path in CLARA_EXAMPLE_DATA")
    if args.steps < 1 or args.ranks < 1 or not 1 <= args.questions <= 200:
        p.error("--steps and --ranks must be 1 or more, --questions 1 to 200")
    if not args.init.exists():
        how = f"; make it from the checkout with:\n  {OLD_HOWTO}" if args.init == OLD else ""
        raise SystemExit(f"{args.init}: no such checkpoint (give --init DIR{how})")
    start_run()
    arms = [a for a in args.arms.split(",") if a]
    unknown = set(arms) - set(ARMS)
    if unknown:
        p.error(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    sizes_file = out / "records.json"
    if not sizes_file.exists():
        sizes_file.write_text(json.dumps(build(out, args.seed)))
    sizes = json.loads(sizes_file.read_text())
    init = out / "init"
    if not init.exists():
        float32_copy(args.init, init)
    start = time.perf_counter()
    results = [("start (--init)", "-", 0, evaluate(out, "init", init, args.questions))]
    secs: dict[str, str] = {}
    for arm in arms:
        t0 = time.perf_counter()
        timing = out / arm / "train_seconds.txt"
        if not (out / arm / "final").exists():
            train(out, arm, init, args.steps, args.ranks, args.seed)
            timing.write_text(f"{time.perf_counter() - t0:.0f}\n")  # one uninterrupted run
        final = out / arm / "final"
        secs[arm] = timing.read_text().strip() if timing.exists() else "?"
        print(f"{arm}: trained in {secs[arm]}s", file=sys.stderr)
        results.append((arm, sizes[arm], args.steps, evaluate(out, arm, final, args.questions)))
    golds = [r.answers for r in heldout(args.questions)[0]]
    per = {name: np.array([answer_scores(x, g)["f1"] for x, g in
                           zip(res["rows"][0]["predictions"], golds)])
           for name, _, _, res in results}  # fmt: skip
    rows = []
    for name, n, steps, res in results:
        r = res["rows"][0]
        f1, acc = interval(r, golds, "f1"), interval(r, golds, "acc")
        paired = "-"
        if name != "paraphrase" and "paraphrase" in per:  # same questions: paired difference
            d = per[name] - per["paraphrase"]
            half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
            paired = f"{100 * d.mean():+.1f} ± {100 * half:.1f}"
        rows.append([name, ARMS.get(name, "the starting adapters"), n, steps,
                     f"{100 * r['em']:.1f}", f1, acc, paired])  # fmt: skip
    table = markdown_table(
        ["arm", "stage-1 data", "records", "steps", "EM", "F1", "cover-EM",
         "F1 vs paraphrase only (paired)"], rows,
    )  # fmt: skip
    print(table)
    if not args.no_append:
        body = (
            f"Stage 1 from `{args.init.name}` on the 800 training documents of the ml-clara "
            f"example data, {args.steps} steps of batch 4 per arm on {args.ranks} data-parallel "
            f"ranks (lr 5e-4, seed {args.seed}); judged on {args.questions} held-out questions "
            "with the gold document alone as 16x memory read by the generator (greedy, at most "
            "32 tokens; ± is a 95% interval over the questions). The cloze arm's questions are "
            "written from each document's own sentences by `training.cloze`, no model involved."
            " Training wall time per arm: "
            + ", ".join(f"{a} {secs[a]} s" for a in arms)
            + f"; this invocation: {time.perf_counter() - start:.0f} s (arms already trained or "
            "evaluated are reused).\n\n" + table + "\n"
        )
        append_report("Teacher-free cloze QA: does it help? (bench/bench_cloze.py)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
