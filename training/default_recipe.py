"""Reproduce the default CLaRa adapters for SmolLM2-135M at 16x, on data every machine has.

    python -m training.default_recipe --out runs/default            # train (resumable)
    python -m training.default_recipe --out runs/default --install  # and copy into clara/

Data: an invented world of facts (`training.world`): its answers are in the documents only, so
the generator must read the memory vectors, and fresh documents with random facts make
memorising useless. Stage 1 (`pretrain`) trains compressor + generator on paraphrase and QA
records of such documents, plus paraphrase records of Python's documentation topics
(`pydoc_data.topics`: real prose in 256-token chunks). Stage 2 (`instruct`) re-initialises the
generator and trains on questions with 5 candidate documents. Stage 3 (`joint`) trains the query
encoder and the generator through the differentiable top-k over 16 candidates that mostly state
the attribute asked about (only the name tells them apart), with the reference code's
retrieval loss. The compressor's outputs are centered (`--center-memory`, fitted on the
first 256 stage-1 documents): SmolLM2's final-norm states share one dominant component, and
without centering its generator does not learn to read memories on a CPU budget. Held-out
world questions (about documents never trained on) go to eval.jsonl:

    clara-eval --data runs/default/eval.jsonl --checkpoint runs/default/joint/final
    clara-eval ... --retrieval collection --collection runs/default/collection.txt  # all docs

Each stage resumes where it stopped when the command is run again.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import clara  # noqa: F401  preloads OpenBLAS before mlx
from training.cli import main as train_main
from training.data import pretrain_to_json, qa_to_json, write_jsonl
from training.world import make_world

PACKAGED = Path(clara.__file__).resolve().parent / "checkpoints" / "smollm2-135m-16x"
STAGES = ("pretrain", "instruct", "joint")


def write_qa(path: Path, records) -> None:
    write_jsonl(path, (qa_to_json(r) for r in records))


def build_data(out: Path, args: argparse.Namespace) -> None:
    rng = random.Random(0)
    docs = Path(tempfile.mkdtemp(prefix="pydoc-"))
    from pydoc_data.topics import topics

    for name, text in topics.items():
        (docs / f"{name}.txt").write_text(text, encoding="utf-8")
    if train_main(["synth", str(docs), "--out", str(out / "pydoc"), "--no-qa", "-q"]):
        raise SystemExit("synth failed")
    shutil.rmtree(docs)
    pydoc = [json.loads(x) for x in (out / "pydoc" / "stage1.jsonl").read_text().splitlines()]
    world = make_world(seed=0)
    stage1 = [pretrain_to_json(r) for r in world.synthetic(args.world_docs, 1).pretrain_records()]
    stage1 += rng.sample(pydoc, min(args.pydoc, len(pydoc)))
    rng.shuffle(stage1)
    write_jsonl(out / "pretrain.jsonl", stage1)
    instruct = world.synthetic(args.world_docs, 2).qa_records("train", 5, hard=0.5)
    write_qa(out / "instruct.jsonl", rng.sample(instruct, len(instruct)))
    # stage 3 compresses every candidate document once before training: a smaller pool
    joint = world.synthetic(args.joint_docs, 3).qa_records("train", 16, hard=0.75)
    write_qa(out / "joint.jsonl", rng.sample(joint, len(joint)))
    held = world.qa_records("test", n_docs=5)
    write_qa(out / "eval.jsonl", rng.sample(held, min(args.eval, len(held))))
    (out / "collection.txt").write_text("".join(d + "\n" for d in world.docs), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--world-docs", type=int, default=3000, help="fresh world documents, stages 1-2")
    p.add_argument("--joint-docs", type=int, default=800, help="fresh world documents, stage 3")
    p.add_argument("--pydoc", type=int, default=200, help="pydoc paraphrase records (stage 1)")
    p.add_argument("--eval", type=int, default=100, help="held-out questions for clara-eval")
    p.add_argument("--steps", default="500,100,150", help="optimiser steps of the three stages")
    p.add_argument("--lr", default="1e-3,1e-3,5e-4", help="learning rates of the three stages")
    p.add_argument(
        "--stop-after",
        default="300,,",
        help="per stage, stop at this step of its schedule and go on from that checkpoint "
        "(e.g. '300,,': stage 1 stops at step 300 of its --steps)",
    )
    p.add_argument(
        "--no-center-memory",
        dest="center_memory",
        action="store_false",
        help="train without --center-memory (the paper's memory vectors; SmolLM2 then does not "
        "learn to read them on this budget, see BENCHMARKS.md)",
    )
    p.add_argument("--batch-size", default="4", help="examples per step")
    p.add_argument("--install", action="store_true", help=f"copy the result to {PACKAGED}")
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "eval.jsonl").exists():
        build_data(out, args)
    steps, lrs = args.steps.split(","), args.lr.split(",")
    stops = (args.stop_after.split(",") + ["", "", ""])[:3]
    init: list[str] = []
    for stage, n, lr, stop in zip(STAGES, steps, lrs, stops):
        run = out / stage
        done = run / (f"step-{int(stop):06d}" if stop else "final")
        if not done.exists():
            extra = ["--retrieval-weight", "1.0"] if stage == "joint" else []
            if stage == "pretrain" and args.center_memory:
                extra = ["--center-memory"]
            if stop:
                extra += ["--stop-after", stop]
            resume = ["--resume"] if (run / "metrics.jsonl").exists() else []
            code = train_main(
                [stage, "--data", str(out / f"{stage}.jsonl"), "--out", str(run), *init,
                 "--max-steps", n, "--lr", lr, "--batch-size", args.batch_size,
                 "--log-every", "5", "--save-every", "25", *extra, *resume]
            )  # fmt: skip
            if code:
                return code
        init = ["--init-from", str(done)]
    final = Path(init[-1])
    if args.install:
        from training.default_ckpt import install

        PACKAGED.parent.mkdir(parents=True, exist_ok=True)
        install(final, PACKAGED)
        print(f"installed {final} -> {PACKAGED}", file=sys.stderr)
    print(f"done: {final}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
