"""Stage-3 variants side by side: rerun only `joint` of the learning proof from one stage-2
checkpoint, with config overrides, and score held-out and training questions over the whole
collection.

    python bench/bench_learning.py --workdir runs/proof          # once: stages 1-3 + eval
    python bench/bench_joint.py --init runs/proof/instruct/final --set retrieval_weight=0
    python bench/bench_joint.py --init runs/proof/instruct/final --set joint_hard=0.75 joint_steps=1500

Prints one markdown row per run (run variants one after another, or two at a time with
OPENBLAS_NUM_THREADS=1 on a 2-core machine) and appends it to BENCHMARKS.md (`--no-append`:
print only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402,F401  first: OpenBLAS before mlx

from bench._common import add_no_append, add_old_report_flag, append_report, start_run  # noqa: E402
from clara.checkpoint import CONFIG_FILE  # noqa: E402
from training.evaluate import clara_row, retrieve  # noqa: E402
from training.pipeline import load_for_training, train  # noqa: E402
from training.proof import ProofConfig  # noqa: E402
from training.trainer import TrainConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--init", required=True, help="stage-2 checkpoint of a bench_learning run")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="ProofConfig override")
    p.add_argument("--workdir", help="keep the joint run here (default: a temporary directory)")
    add_no_append(p)
    add_old_report_flag(p)
    args = p.parse_args(argv)
    if not (Path(args.init) / CONFIG_FILE).is_file():
        p.error(
            f"--init {args.init}: no checkpoint there (a folder with {CONFIG_FILE}); make one "
            "with `python bench/bench_learning.py --workdir DIR`, then give DIR/instruct/final"
        )
    start_run()
    cfg = ProofConfig().override(args.set)
    world = cfg.world()
    records = cfg.joint_records(world)
    with tempfile.TemporaryDirectory(prefix="clara-joint-") as tmp:
        out = Path(args.workdir or tmp)
        start = time.perf_counter()
        ck = train(
            records,
            TrainConfig(stage="joint", out=str(out), lr=cfg.joint_lr, max_steps=cfg.joint_steps,
                        batch_size=cfg.batch_size, seed=cfg.seed, quiet=True, log_every=50),
            init_from=args.init, dtype="float32", stage_config=cfg.joint_stage(),
        )  # fmt: skip
        seconds = time.perf_counter() - start
        cm = load_for_training(None, ck, dtype="float32")
        rows = {}
        for split in ("test", "train"):
            qs = world.qa_records(split, n_docs=1)[: cfg.eval_limit]
            got = retrieve(cm, qs, "collection", world.docs, cfg.top_k)
            rows[split] = clara_row(cm, qs, got, split, str(ck), cfg.max_tokens)
    test, trained = rows["test"], rows["train"]
    row = (
        f"| {' '.join(args.set) or 'defaults'} | {cfg.joint_steps} | {test.em:.3f} | "
        f"{test.retrieval['recall@1']:.3f} | {trained.retrieval['recall@1']:.3f} | {seconds:.0f} |"
    )
    head = (
        "| overrides | steps | held-out EM | held-out Recall@1 | training-question Recall@1 "
        "| joint s |\n|---|---:|---:|---:|---:|---:|"
    )
    print(head + "\n" + row)
    if not args.no_append:
        append_report("Stage-3 variant (bench/bench_joint.py)", f"{head}\n{row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
