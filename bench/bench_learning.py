"""Proof that CLaRa training works: a tiny Llama trained FROM SCRATCH on a synthetic world.

The three CLaRa stages (pretrain -> instruct -> joint; optionally after language-model
pretraining of the base, `--set lm_steps=N`), then held-out questions answered from 16x-compressed memory retrieved
over the whole collection, against the same model without retrieval.

    python bench/bench_learning.py                # full size (~20 min on 2 CPU cores)
    python bench/bench_learning.py --quick        # reduced size, a smoke run of every stage
    python bench/bench_learning.py --no-report    # do not append to BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402,F401  first: OpenBLAS before mlx

from training.proof import ProofConfig, ProofResult, run_proof  # noqa: E402

QUICK = dict(
    n_people=120, n_towns=30, hidden_size=64, num_layers=2, batch_size=16,
    lm_steps=60, pretrain_steps=300, instruct_steps=150, joint_steps=100,
    eval_limit=60, diagnostics=False,
)  # fmt: skip


def machine() -> str:
    import mlx.core as mx

    from clara import _blas

    try:
        import os

        cores = os.cpu_count()
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        cores, mem = "?", 0
    return (
        f"{platform.system()} {platform.machine()}, {cores} cores, {mem:.0f} GiB RAM, "
        f"Python {platform.python_version()}, mlx {mx.__version__}, {mx.default_device()}, "
        f"BLAS {_blas.loaded or 'reference'}"
    )


def table(r: ProofResult) -> str:
    lines = [
        "| model | EM | F1 | acc | Recall@1 | Recall@5 | positions read |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r.rows:
        ret = row["retrieval"]
        rec = (f"{ret['recall@1']:.3f}", f"{ret['recall@5']:.3f}") if ret else ("-", "-")
        lines.append(
            f"| {row['name']} | {row['em']:.3f} | {row['f1']:.3f} | {row['acc']:.3f} | "
            f"{rec[0]} | {rec[1]} | {row['positions']:.1f} |"
        )
    return "\n".join(lines)


def report(r: ProofResult, command: str) -> str:
    c = r.config
    stages = ", ".join(f"{k} {v:.0f}s" for k, v in r.stage_seconds.items())
    lm = f"LM pretraining ({c['lm_steps']} steps), " if c["lm_steps"] else ""
    return f"""
## Learning proof: tiny Llama from scratch, synthetic world (bench/bench_learning.py)

- command: `{command}`
- machine: {machine()}
- date: {dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}

World: {r.n_docs} documents of invented people and towns, 1-{c["max_facts"]} facts each
(mean {r.mean_doc_tokens} tokens); {r.n_train_facts} training facts; **{r.n_test_questions} held-out
questions** about held-out documents (neither those documents nor questions about them are
ever trained on; the stages also train on fresh synthetic documents with random facts). Model: Llama, hidden {c["hidden_size"]},
{c["num_layers"]} layers, word-level vocabulary of {r.vocab_size}, {r.parameters / 1e6:.2f}M
parameters, float32, trained from random weights: {lm}`pretrain` ({c["pretrain_steps"]} steps, lr {c["pretrain_lr"]},
full fine-tuning, {"paraphrase + QA" if c.get("pretrain_qa") else "paraphrase"}), `instruct` ({c["instruct_steps"]} steps, top-{c["instruct_docs"]} docs),
`joint` ({c["joint_steps"]} steps, LoRA query + generator, differentiable top-{c["joint_top_k"]}
of {c["joint_candidates"]} candidates, tau {c["tau"]}, retrieval loss weight
{c["retrieval_weight"]}). Compression {c["compression_rate"]}x: a {c["doc_max_tokens"]}-token
budget -> {r.n_mem} memory vectors per document. Evaluation: each held-out question retrieves
its top-{c["top_k"]} documents by cosine of flattened query/document memories over the WHOLE
collection ({r.n_docs} documents), the generator reads their memory vectors; greedy decoding.

{table(r)}

Diagnostics: {r.diagnostics}.
Time: {stages}; total {r.total_seconds / 60:.1f} min.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="reduced size: a smoke run of every stage")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config")
    p.add_argument("--workdir", help="keep the run here (default: a temporary directory)")
    p.add_argument("--no-report", action="store_true", help="do not append to BENCHMARKS.md")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    args = p.parse_args(argv)
    cfg = (ProofConfig(**QUICK) if args.quick else ProofConfig()).override(args.set)
    with tempfile.TemporaryDirectory(prefix="clara-proof-") as tmp:
        work = Path(args.workdir or tmp)
        result = run_proof(cfg, work, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(table(result))
    print(f"diagnostics: {result.diagnostics}; stage seconds: {result.stage_seconds}")
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=2))
    if not args.no_report:
        command = "python bench/bench_learning.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        with (ROOT / "BENCHMARKS.md").open("a") as fh:
            fh.write(report(result, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
