"""Proof that CLaRa training works: a tiny Llama trained FROM SCRATCH on a synthetic world.

The three CLaRa stages (pretrain -> instruct -> joint; optionally after language-model
pretraining of the base, `--set lm_steps=N`), then held-out questions answered from 16x-compressed memory retrieved
over the whole collection, against the same model without retrieval.

    python bench/bench_learning.py                # full size (~20 min on 2 CPU cores)
    python bench/bench_learning.py --quick        # reduced size, a smoke run of every stage
    python bench/bench_learning.py --no-report    # do not append to BENCHMARKS.md

A full run appends a "Learning proof" section to BENCHMARKS.md; a --quick run appends
nothing unless given --report, and then as a "Smoke run of the learning proof" section, so a
smoke run never reads as a proof.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402,F401  first: OpenBLAS before mlx

from bench._common import add_no_append, append_report, start_run  # noqa: E402
from training.proof import ProofConfig, ProofResult, run_proof  # noqa: E402

TITLE = "Learning proof: tiny Llama from scratch, synthetic world (bench/bench_learning.py)"
# not "Learning proof: ...": a reader (or a script) looking for the proof's figures must not
# find a smoke run
QUICK_TITLE = "Smoke run of the learning proof, reduced size (bench/bench_learning.py --quick)"

QUICK = dict(
    n_people=120, n_towns=30, hidden_size=64, num_layers=2, batch_size=16,
    lm_steps=60, pretrain_steps=300, instruct_steps=150, joint_steps=100,
    eval_limit=60, diagnostics=False,
)  # fmt: skip


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


def report(r: ProofResult) -> str:
    """The section's body (append_report adds the title, command, machine and date)."""
    c = r.config
    stages = ", ".join(f"{k} {v:.0f}s" for k, v in r.stage_seconds.items())
    lm = f"LM pretraining ({c['lm_steps']} steps), " if c["lm_steps"] else ""
    return f"""World: {r.n_docs} documents of invented people and towns, 1-{c["max_facts"]} facts each
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
Time: {stages}; total {r.total_seconds / 60:.1f} min."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--quick",
        action="store_true",
        help="reduced size: a smoke run of every stage; appends nothing unless --report",
    )
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config")
    p.add_argument("--workdir", help="keep the run here (default: a temporary directory)")
    add_no_append(p, "do not append to BENCHMARKS.md")
    p.add_argument(
        "--report", action="store_true",
        help="with --quick: append anyway, as a 'Smoke run of the learning proof' section",
    )  # fmt: skip
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    args = p.parse_args(argv)
    if args.report and args.no_append:
        p.error("--report and --no-report contradict each other")
    append = not args.no_append and (args.report or not args.quick)
    start_run()
    cfg = (ProofConfig(**QUICK) if args.quick else ProofConfig()).override(args.set)
    with tempfile.TemporaryDirectory(prefix="clara-proof-") as tmp:
        work = Path(args.workdir or tmp)
        result = run_proof(cfg, work, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(table(result))
    print(f"diagnostics: {result.diagnostics}; stage seconds: {result.stage_seconds}")
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=2))
    if append:
        append_report(QUICK_TITLE if args.quick else TITLE, report(result))
    elif args.quick:
        print("(a --quick run: not appended to BENCHMARKS.md; --report appends it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
