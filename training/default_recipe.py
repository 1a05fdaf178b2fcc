"""Reproduce the default CLaRa adapters for SmolLM2-135M at 16x, on data every machine has.

    python -m training.default_recipe --out runs/default            # ~45 min on 2 CPU cores
    python -m training.default_recipe --out runs/default --install  # and copy into clara/

Data: paraphrase records from Python's documentation topics (`pydoc_data.topics`: real prose,
256-token chunks) and question/answer records over an invented world of facts
(`training.world`: the answers are in the documents only, so the generator must read the
memory vectors). Stage 1 (`pretrain`) trains compressor + generator on both; stage 2
(`instruct`) re-initialises the generator and trains on world questions with 5 candidate
documents each. The query adapter starts as a copy of the compressor. Held-out world questions
go to eval.jsonl for `clara-eval`.
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
from training.world import make_world

PACKAGED = Path(clara.__file__).resolve().parent / "checkpoints" / "smollm2-135m-16x"


def write(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def build_data(out: Path, n_pydoc: int, n_world_qa: int, n_instruct: int, n_eval: int) -> None:
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
    qa = [
        {"data_type": "qa", "question": r.questions, "answers": r.answers, "docs": [r.doc]}
        for r in world.pretrain_records(qa=True)
        if r.kind == "qa"
    ]
    stage1 = rng.sample(pydoc, min(n_pydoc, len(pydoc))) + rng.sample(qa, min(n_world_qa, len(qa)))
    rng.shuffle(stage1)
    write(out / "stage1.jsonl", stage1)

    def qa_rows(split: str, n: int) -> list[dict]:
        recs = world.qa_records(split, n_docs=5)
        recs = rng.sample(recs, min(n, len(recs)))
        return [
            {"question": r.question, "docs": r.docs, "answers": r.answers, "pos_index": r.pos_index}
            for r in recs
        ]

    write(out / "stage2.jsonl", qa_rows("train", n_instruct))
    write(out / "eval.jsonl", qa_rows("test", n_eval))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--pydoc", type=int, default=120, help="paraphrase records (256-token chunks)")
    p.add_argument("--world-qa", type=int, default=400, help="single-document QA records")
    p.add_argument("--instruct", type=int, default=300, help="stage-2 questions (5 docs each)")
    p.add_argument("--eval", type=int, default=100, help="held-out questions for clara-eval")
    p.add_argument("--lr", default="2e-4")
    p.add_argument("--batch-size", default="4")
    p.add_argument("--install", action="store_true", help=f"copy the result to {PACKAGED}")
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "eval.jsonl").exists():
        build_data(out, args.pydoc, args.world_qa, args.instruct, args.eval)
    common = [
        "--lr",
        args.lr,
        "--batch-size",
        args.batch_size,
        "--log-every",
        "5",
        "--save-every",
        "20",
    ]
    s1, s2 = out / "stage1", out / "stage2"
    if not (s1 / "final").exists():
        resume = ["--resume"] if (s1 / "metrics.jsonl").exists() else []
        code = train_main(
            ["pretrain", "--data", str(out / "stage1.jsonl"), "--out", str(s1), *common, *resume]
        )
        if code:
            return code
    if not (s2 / "final").exists():
        resume = ["--resume"] if (s2 / "metrics.jsonl").exists() else []
        code = train_main(
            ["instruct", "--init-from", str(s1 / "final"), "--data", str(out / "stage2.jsonl"),
             "--out", str(s2), *common, *resume]
        )  # fmt: skip
        if code:
            return code
    if args.install:
        PACKAGED.parent.mkdir(parents=True, exist_ok=True)
        from training.default_ckpt import install

        install(s2 / "final", PACKAGED)
    print(f"done: {s2 / 'final'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
