"""Reproduce the default CLaRa adapters for SmolLM2-135M at 16x, trained on real prose.

    python -m training.default_recipe --out runs/default            # train (resumable)
    python -m training.default_recipe --out runs/default --install  # and copy into clara/

Data (`--data`, default: $CLARA_EXAMPLE_DATA): Apple's ml-clara example stage-1 data
(example/pretrain_data.jsonl of github.com/apple/ml-clara; download it once), 1000
encyclopedia-style documents with 7861 short-answer questions. Its fixed split is kept:
documents on 0-based lines with `line % 5 == 0` (200, and their questions) are never trained
on; their questions go to eval.jsonl (the gold document as the only doc, for `clara-eval
--retrieval gold`) and all 1000 documents to collection.txt.

- Stage 1 (`pretrain`): per training document, QA records (its questions in groups of 4) and a
  paraphrase record; plus Python's documentation topics (`pydoc_data.topics`, real prose every
  machine has) chunked by `clara-train synth --cloze`: paraphrase and teacher-free cloze QA.
- Stage 2 (`instruct`): every training question with `--instruct-k` candidates: its document
  and the most similar other training documents (TF-IDF hard negatives), shuffled.
- Stage 3 (`joint`): questions about the first `--joint-docs` training documents, each with
  `--joint-k` candidates from those documents (its own + hard negatives), with the retrieval
  loss (`--retrieval-weight 1`); the generator reads the top `--top-k`.

Stage 1 starts from the previously shipped adapters (`--init`, made float32; `--init none`:
fresh adapters with `--center-memory`). Batches are length-bucketed, one example per pass, on
`--ranks` data-parallel processes (2 on a CPU with 2+ cores). Each stage checkpoints
every 10 steps and resumes where it stopped when the command is run again (same options).

    clara-eval --data runs/default/eval.jsonl --checkpoint runs/default/joint/final \\
        --retrieval collection --collection runs/default/collection.txt
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import clara  # noqa: F401  preloads OpenBLAS before mlx
from training.cli import main as train_main
from training.data import PretrainRecord, QARecord, pretrain_to_json, qa_to_json, write_jsonl
from training.synth import tfidf_neighbours
from training.trainer import checkpoints

PACKAGED = Path(clara.__file__).resolve().parent / "checkpoints" / "smollm2-135m-16x"
ROOT = Path(clara.__file__).resolve().parents[1]
STAGES = ("pretrain", "instruct", "joint")
DATA_NAME = "clara-example-pretrain.jsonl"


def default_data() -> Path:
    """$CLARA_EXAMPLE_DATA when set (the scripts under docs/runs read the data through this),
    else shared/data/clara-example-pretrain.jsonl beside the checkout or a folder above it."""
    if os.environ.get("CLARA_EXAMPLE_DATA"):
        return Path(os.environ["CLARA_EXAMPLE_DATA"]).expanduser()
    for p in ROOT.parents:
        if (p / "shared" / "data" / DATA_NAME).exists():
            return p / "shared" / "data" / DATA_NAME
    return ROOT.parent / "shared" / "data" / DATA_NAME


def split_example(path: Path) -> tuple[list[dict], list[dict], list[str]]:
    """(training rows, held-out rows, all documents) of the example data's fixed split."""
    if not path.is_file():
        raise SystemExit(
            "give the example data's path with --data (or in CLARA_EXAMPLE_DATA, which the "
            "scripts under docs/runs read): the default recipe trains on Apple's ml-clara "
            "example data (example/pretrain_data.jsonl of github.com/apple/ml-clara; download "
            f"it once). Not found: {path}"
        )
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    train = [r for i, r in enumerate(rows) if i % 5]
    held = [r for i, r in enumerate(rows) if i % 5 == 0]
    return train, held, [r["docs"][0] for r in rows]


def with_negatives(qs, docs, k: int, rng: random.Random) -> list[QARecord]:
    """Each `(question, answer, doc index)` with its doc + the k-1 most similar other docs."""
    out = []
    for lo in range(0, len(qs), 500):  # TF-IDF in slices: the question matrix is dense
        part = qs[lo : lo + 500]
        near = tfidf_neighbours([q for q, _, _ in part], docs, k + 1)
        for (q, a, src), nn in zip(part, near):
            cands = [src] + [int(j) for j in nn if j != src][: k - 1]
            rng.shuffle(cands)
            out.append(QARecord(q, [docs[j] for j in cands], [a], [cands.index(src)]))
    return out


def synth_cloze(texts: dict[str, str], out: Path, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(paraphrase, cloze QA) stage-1 rows of `texts` (name -> text), written to `out` by
    `clara-train synth --cloze`."""
    docs = Path(tempfile.mkdtemp(prefix="synth-docs-"))
    try:
        for name, text in texts.items():
            (docs / f"{name}.txt").write_text(text, encoding="utf-8")
        argv = ["synth", str(docs), "--out", str(out), "--cloze", "-q", "--force"]
        argv += ["--seed", str(seed)]
        code = train_main(argv)
    finally:
        shutil.rmtree(docs)
    if code:
        raise SystemExit("clara-train synth --cloze failed")
    rows = [json.loads(x) for x in (out / "stage1.jsonl").read_text().splitlines()]
    para = [r for r in rows if r["data_type"] == "paraphrase"]
    return para, [r for r in rows if r["data_type"] == "qa"]


def qa_records(row: dict) -> list[PretrainRecord]:
    """Stage-1 QA records of one example-data row: its questions in groups of 4."""
    qs, ans, doc = row["question"], row["answers"], row["docs"][0]
    return [PretrainRecord("qa", doc, qs[g : g + 4], ans[g : g + 4]) for g in range(0, len(qs), 4)]


def pydoc_records(out: Path, n: int, rng: random.Random) -> list[dict]:
    """Paraphrase + cloze QA records of Python's documentation topics (`synth --cloze`)."""
    from pydoc_data.topics import topics

    para, qa = synth_cloze(topics, out / "pydoc")
    return rng.sample(para, min(n, len(para))) + rng.sample(qa, min(n, len(qa)))


def build_data(out: Path, args: argparse.Namespace) -> None:
    rng = random.Random(0)
    train, held, every_doc = split_example(args.data)
    docs = [r["docs"][0] for r in train]
    stage1 = []
    for r in train:
        stage1 += qa_records(r)
        stage1.append(PretrainRecord("paraphrase", r["docs"][0]))
    stage1 = [pretrain_to_json(r) for r in stage1] + pydoc_records(out, args.pydoc, rng)
    rng.shuffle(stage1)
    write_jsonl(out / "pretrain.jsonl", stage1)
    qs = [(q, a, i) for i, r in enumerate(train) for q, a in zip(r["question"], r["answers"])]
    instruct = with_negatives(qs, docs, args.instruct_k, rng)
    rng.shuffle(instruct)
    write_jsonl(out / "instruct.jsonl", map(qa_to_json, instruct))
    few = docs[: args.joint_docs]
    joint = with_negatives([q for q in qs if q[2] < len(few)], few, args.joint_k, rng)
    rng.shuffle(joint)
    write_jsonl(out / "joint.jsonl", map(qa_to_json, joint))
    held_qs = [
        QARecord(q, [r["docs"][0]], [a], [0])
        for r in held
        for q, a in zip(r["question"], r["answers"])
    ]
    write_jsonl(out / "eval.jsonl", map(qa_to_json, held_qs))
    (out / "collection.txt").write_text(
        "".join(" ".join(d.split()) + "\n" for d in every_doc), encoding="utf-8"
    )


def float32_copy(src: Path, dst: Path) -> Path:
    """A float32 copy of an installed (float16) checkpoint to train from."""
    import mlx.core as mx

    from clara.checkpoint import CONFIG_FILE, WEIGHTS_FILE

    dst.mkdir(parents=True, exist_ok=True)
    weights = mx.load(str(src / WEIGHTS_FILE))
    mx.save_safetensors(
        str(dst / WEIGHTS_FILE), {k: v.astype(mx.float32) for k, v in weights.items()}
    )
    shutil.copy(src / CONFIG_FILE, dst / CONFIG_FILE)
    return dst


def default_ranks() -> int:
    """2 data-parallel ranks on a CPU with 2+ cores (MLX runs elementwise ops on one thread, so
    a second process keeps the other core busy; BENCHMARKS.md, training speed), else 1."""
    import mlx.core as mx

    return 2 if mx.default_device() == mx.cpu and (os.cpu_count() or 1) >= 2 else 1


def train_stage(argv: list[str], run: Path, ranks: int) -> int:
    """`clara-train argv --ranks ranks`, resuming from the stage's last checkpoint if any."""
    resume = ["--resume"] if (run / "metrics.jsonl").exists() and checkpoints(run) else []
    return train_main([*argv, "--ranks", str(ranks), *resume])


class _Help(argparse.RawDescriptionHelpFormatter):
    """The description as written, and each option's default after its help (where the help
    does not say it already)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.default_recipe",
        description=__doc__,
        formatter_class=_Help,  # (each option's default stated)
    )
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument(
        "--data",
        type=Path,
        default=default_data(),
        help="the example data (a jsonl file; default: $CLARA_EXAMPLE_DATA, else "
        f"shared/data/{DATA_NAME} in a folder above the checkout, where one is)",
    )
    p.add_argument("--pydoc", type=int, default=150, help="pydoc paraphrase + cloze records each")
    p.add_argument("--instruct-k", type=int, default=2, help="candidates per question, stage 2")
    p.add_argument("--joint-docs", type=int, default=40, help="training documents in stage 3")
    p.add_argument("--joint-k", type=int, default=8, help="candidates per question, stage 3")
    p.add_argument("--top-k", type=int, default=3, help="documents the generator reads, stage 3")
    p.add_argument("--steps", default="320,50,30", help="optimiser steps of the three stages")
    p.add_argument("--lr", default="5e-4,5e-4,2e-4", help="learning rates of the three stages")
    p.add_argument(
        "--stop-after",
        default=",,",
        help="per stage, stop at this step of its schedule and go on from that checkpoint "
        "(default: none; e.g. 10,6,5 for a short run)",
    )
    p.add_argument(
        "--init",
        default=str(PACKAGED),
        help="stage-1 start: an installed checkpoint (default: the shipped adapters) or 'none'",
    )
    p.add_argument("--batch-size", type=int, default=4, help="examples per step (all ranks)")
    p.add_argument(
        "--ranks",
        type=int,
        default=default_ranks(),
        help="data-parallel training processes on this machine (default: 2 on a CPU with 2+ "
        "cores, where two train faster than one; else 1)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="data order seed of every stage (a run continuing from earlier adapters with more "
        "steps: another seed, so it starts on examples the earlier run had not reached)",
    )
    p.add_argument("--install", action="store_true", help=f"copy the result to {PACKAGED}")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "collection.txt").exists():
        build_data(out, args)
    if args.ranks < 1 or args.batch_size % args.ranks:
        p.error(f"--batch-size {args.batch_size} must be a multiple of --ranks {args.ranks}")
    per_rank = args.batch_size // args.ranks
    steps, lrs = args.steps.split(","), args.lr.split(",")
    stops = (args.stop_after.split(",") + ["", "", ""])[:3]
    init: list[str] = []
    if args.init != "none":
        start = out / "init"
        if not start.exists():
            float32_copy(Path(args.init), start)
        init = ["--init-from", str(start)]
    for stage, n, lr, stop in zip(STAGES, steps, lrs, stops):
        run = out / stage
        done = run / (f"step-{int(stop):06d}" if stop else "final")
        if not done.exists():
            extra = []
            if stage == "joint":
                extra += ["--retrieval-weight", "1.0", "--top-k", str(args.top_k)]
            if stage == "instruct":
                extra += ["--top-k", str(args.instruct_k)]
                if args.init != "none":
                    extra += ["--keep-generator"]
            if stage == "pretrain" and args.init == "none":
                extra += ["--center-memory"]
            if stop:
                extra += ["--stop-after", stop]
            argv = [stage, "--data", str(out / f"{stage}.jsonl"), "--out", str(run), *init,
                    "--max-steps", n, "--lr", lr, "--batch-size", str(per_rank),
                    "--pass-size", "1", "--log-every", "5", "--save-every", "10",
                    "--dtype", "float32", "--seed", str(args.seed), *extra]  # fmt: skip
            code = train_stage(argv, run, args.ranks)
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
