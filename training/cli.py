"""`clara-train`: the three CLaRa training stages, and synthetic stage-1/2 data from documents.

clara-train pretrain --data stage1.jsonl --out runs/s1
clara-train instruct --data qa.jsonl --init-from runs/s1/final --out runs/s2
clara-train joint    --data qa.jsonl --init-from runs/s2/final --out runs/s3
clara-train synth    my_docs/ --out data/
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from clara.errors import ClaraError
from clara.model import COMPRESSION_RATES, ClaraConfig
from clara.paths import file_sha256
from clara_cli.common import (
    add_model_args,
    add_quiet_arg,
    add_version_arg,
    command_parser,
    fraction,
    model_dtype,
    non_negative_float,
    non_negative_int,
    parse_command_line,
    positive_float,
    positive_int,
    ratio,
    run_main,
)

PROG = "clara-train"
#: Options that shape fresh adapters: a run from a checkpoint (--init-from, --resume) takes its.
FRESH_ONLY = ("--compression-rate", "--doc-max-tokens", "--lora-rank", "--lora-alpha",
              "--lora-dropout", "--center-memory")  # fmt: skip

STAGE_HELP = {
    "pretrain": (
        "stage 1, salient compressor pretraining: trains the compressor and generator "
        "adapters on single documents with QA and paraphrase targets "
        "(loss = CE + 0.1 x memory MSE). Data: jsonl records "
        '{"data_type": "qa", "question": [...], "answers": [...], "docs": [doc]} or '
        '{"data_type": "paraphrase", "docs": [doc]}.'
    ),
    "instruct": (
        "stage 2, compression instruction tuning: loads the stage-1 compressor (--init-from), "
        "re-initialises the generator and trains both on QA with each question's top-k "
        "documents (loss = CE + 0.1 x memory MSE). Data: jsonl records "
        '{"question": str, "docs": [str, ...], "answer"|"answers"|"golden_answers": ..., '
        '"pos_index": [int, ...]}.'
    ),
    "joint": (
        "stage 3, end-to-end: the compressor is frozen (documents compressed once); the query "
        "adapter (initialised from the compressor) and the generator train through a "
        "differentiable top-k over each question's candidate docs, on the generator's CE. "
        "Logs recall/precision@1/3/5 against pos_index. Same data format as instruct."
    ),
}

EPILOG = """\
Outputs in --out: step-NNNNNN/ checkpoints (every --save-every steps) and final/, each a CLaRa
checkpoint (clara_config.json + adapters.safetensors; with --full also base/, the fine-tuned
base model) plus the optimiser state for --resume; metrics.jsonl and loss.png.
Ctrl-C or SIGTERM finishes the step, keeps it as a checkpoint and exits 130 (again, a second
later: at once); run the same command with --resume to go on.
Data parallel: --ranks 2 runs two processes on this machine (on a 2-core CPU about 1.5x the
tokens/s of one; --batch-size is per rank); mlx.launch --hostfile hosts.json clara-train ...
spans several Macs. Each rank takes a slice of every batch and its share of the batch loss; the
gradients are summed across ranks (the step one process would take); rank 0 writes.
"""


def default_pass_size() -> int | None:
    """1 on a CPU (measured fastest there) and on a Mac (its GPU shares the Mac's memory): one
    example's activations at a time, as instruct compresses 5 documents per example (~4.4 GB
    for the default model); None (the whole batch) on a CUDA GPU."""
    import mlx.core as mx

    return 1 if mx.default_device() == mx.cpu or mx.metal.is_available() else None


def _add_training_args(p: argparse.ArgumentParser, stage: str) -> None:
    add_model_args(
        p,
        checkpoint_help="CLaRa checkpoint to start from (compressor/query/generator adapters, "
        "e.g. the previous stage's final/); default: fresh adapters, never the shipped ones",
    )
    p.add_argument(
        "--init-from",
        dest="init_from",
        metavar="DIR",
        help="start from this checkpoint (the previous stage's final/); same as --checkpoint. "
        "Not one imported with clara-models import-clara (it reads its reference's prompts)",
    )
    p.add_argument("--data", required=True, metavar="JSONL", help="training data (see above)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (checkpoints, logs)")
    p.add_argument(
        "--ranks",
        type=positive_int,
        default=1,
        metavar="N",
        help="data-parallel processes on this machine (MLX ring backend, no launcher); the "
        "batches are the same as one process with N x --batch-size (default: 1)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its latest checkpoint, exactly (same data and "
        "options required)",
    )
    o = p.add_argument_group("optimisation")
    o.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="peak learning rate (default: 1e-4 for pretrain/instruct, 5e-6 for joint)",
    )
    o.add_argument(
        "--epochs", type=positive_float, default=1.0, help="passes over the data (default: 1)"
    )
    o.add_argument("--max-steps", type=positive_int, help="optimiser steps (overrides --epochs)")
    o.add_argument(
        "--batch-size", type=positive_int, default=8,
        help="examples per micro-batch and rank (default: 8)",
    )  # fmt: skip
    o.add_argument(
        "--grad-accum", type=positive_int, default=1,
        help="micro-batches per optimiser step (default: 1)",
    )  # fmt: skip
    o.add_argument(
        "--warmup", type=fraction, default=0.03,
        help="share of the steps the learning rate warms up over (default: 0.03)",
    )  # fmt: skip
    o.add_argument(
        "--min-lr-ratio", type=ratio, default=0.1, help="cosine floor / lr (default: 0.1)"
    )
    o.add_argument(
        "--clip", type=non_negative_float, default=1.0,
        help="gradient-norm clip; 0: no clipping (default: 1.0)",
    )  # fmt: skip
    o.add_argument("--seed", type=int, default=0, help="data order and dropout seed (default: 0)")
    o.add_argument(
        "--full",
        action="store_true",
        help="full fine-tuning: train the base weights too (for small models trained from "
        "scratch; the checkpoint then carries base/). Default: LoRA adapters only",
    )
    o.add_argument(
        "--grad-checkpoint",
        action="store_true",
        help="recompute transformer blocks in the backward pass: less memory for long inputs",
    )
    o.add_argument(
        "--length-buckets",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="batch examples of similar length (less padding, faster); off: plain seeded "
        "random batches (default: on)",
    )
    o.add_argument(
        "--pass-size",
        type=positive_int,
        default=None,
        help="examples per forward/backward pass inside a batch (same gradients; default: 1 on "
        "a CPU and a Mac, the fastest on a CPU and the least memory: a whole batch of 8 "
        "instruct examples would need ~35 GB (a pass of 4 grew past 19 GB); the whole batch "
        "on a CUDA GPU)",
    )
    o.add_argument(
        "--save-every",
        type=non_negative_int,
        default=0,
        help="checkpoint every N steps (default 0: at the end only)",
    )
    o.add_argument(
        "--keep-last", type=non_negative_int, default=0, metavar="N",
        help="keep only the newest N step checkpoints on disk (each holds the float32 adapters "
        "and the optimiser state: ~140 MB for the default model); final/ is always kept "
        "(default: keep all)",
    )  # fmt: skip
    o.add_argument("--stop-after", type=positive_int, help="stop with a checkpoint after step N")
    o.add_argument(
        "--log-every", type=positive_int, default=10, help="metrics row every N steps (default: 10)"
    )
    m = p.add_argument_group("CLaRa (fresh adapters only; a checkpoint brings its own)")
    m.add_argument(
        "--compression-rate",
        type=int,
        default=16,
        choices=COMPRESSION_RATES,
        help="document tokens per memory vector (default: 16)",
    )
    m.add_argument(
        "--doc-max-tokens",
        type=positive_int,
        default=256,
        help="document length cap (default: 256)",
    )
    m.add_argument("--lora-rank", type=positive_int, default=16, help="LoRA rank (default: 16)")
    m.add_argument(
        "--lora-alpha", type=positive_float, default=32.0, help="LoRA alpha (default: 32)"
    )
    m.add_argument("--lora-dropout", type=fraction, default=0.1, help="LoRA dropout (default: 0.1)")
    m.add_argument(
        "--center-memory",
        action="store_true",
        help="subtract a fixed mean memory vector, fitted on the first 256 training documents, "
        "from every compressor/query output (not in the paper; for base models whose final-norm "
        "states share one dominant component, e.g. SmolLM2: see README)",
    )
    s = p.add_argument_group("loss")
    if stage in ("pretrain", "instruct"):
        s.add_argument(
            "--mse-weight",
            type=non_negative_float,
            default=0.1,
            help="memory MSE weight (default: 0.1)",
        )
        s.add_argument(
            "--distill-weight",
            type=non_negative_float,
            default=0.0,
            help="add this weight x the KL divergence from the generator reading the same "
            "documents as text (the teacher: the generator adapter, no gradient) to the "
            "generator reading their memories, over the answer tokens (default 0: off; not "
            "in the paper)",
        )
    if stage == "instruct":
        s.add_argument(
            "--keep-generator",
            action="store_true",
            help="continue the --init-from generator instead of re-initialising it (not in the "
            "paper; for short runs that start from trained adapters)",
        )
    if stage in ("instruct", "joint"):
        s.add_argument(
            "--top-k",
            type=positive_int,
            default=5,
            help="documents per question given to the generator (default: 5)",
        )
    if stage == "joint":
        s.add_argument(
            "--tau", type=positive_float, default=0.02, help="top-k temperature (default: 0.02)"
        )
        s.add_argument(
            "--retrieval-weight",
            type=non_negative_float,
            default=0.0,
            help="add the reference's InfoNCE retrieval loss on the query scores with this "
            "weight (default 0: generator CE only, as in the paper)",
        )
        s.add_argument(
            "--query-only",
            action="store_true",
            help="train the --init-from query adapter alone on the retrieval loss (needs "
            "--retrieval-weight > 0), with no generator pass: a cheap way to fit retrieval to "
            "many questions; the compressor and generator stay as loaded (not in the paper)",
        )
        s.add_argument(
            "--corpus-negatives",
            action="store_true",
            help="the retrieval loss ranks each question's gold documents against every "
            "document of the data, not only its own candidates (needs --retrieval-weight > 0; "
            "not in the paper)",
        )
        s.add_argument(
            "--keep-query",
            action="store_true",
            help="continue the --init-from query adapter instead of starting it as a copy of "
            "the compressor (the paper's start; --query-only always continues it)",
        )
        s.add_argument(
            "--train-compressor",
            action="store_true",
            help="train the compressor too: each step compresses its questions' candidate "
            "documents with gradients (instead of once, frozen, before training), so the "
            "retrieval loss (and the generator's, unless --query-only) shapes the memories; "
            "with --corpus-negatives the rest of the data is ranked from a memory bank, "
            "compressed when the stage starts and updated with each step's memories. Slow: "
            "every candidate is a compressor pass with a backward (not in the paper)",
        )
        s.add_argument(
            "--retrieval-score",
            choices=("flat", "maxsim"),
            default="flat",
            help="how questions score documents in stage 3: flat (cosine of the flattened "
            "memory vectors, the paper's) or maxsim (each query vector's best cosine among a "
            "document's vectors, averaged; not in the paper). Default: flat",
        )
    add_quiet_arg(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train CLaRa adapters (compressor, query reasoner, generator) on MLX.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version_arg(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage, text in STAGE_HELP.items():
        p = sub.add_parser(stage, help=text.split(":")[0], description=text, epilog=EPILOG)
        _add_training_args(p, stage)
        p.set_defaults(func=cmd_train, stage=stage)
    from training.synth import add_synth_parser

    add_synth_parser(sub)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    # SIGTERM (kill, timeout, a scheduler) stops a run as Ctrl-C does: the launcher stops its
    # ranks instead of leaving them training on, and rank 0 says where to --resume from
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        return _train(args)
    finally:
        if previous is not None:  # (None: a handler not set from Python)
            signal.signal(signal.SIGTERM, previous)


def _train(args: argparse.Namespace) -> int:
    from training.launch import is_rank

    if is_rank():  # (the launcher holds --out)
        return _train_in(args)
    made = not Path(args.out).exists()
    lock = _hold_out(args.out)
    try:
        return _train_in(args)
    finally:
        if made:  # a run that failed before writing anything leaves no folder behind
            with contextlib.suppress(OSError):  # (removed under the lock: no run comes between)
                out = Path(args.out)
                if [p.name for p in out.iterdir()] == ["writer.lock"]:
                    (out / "writer.lock").unlink()
                    out.rmdir()
        lock.release()


def _hold_out(out: str) -> Any:
    """One run at a time into `out`: two (or a --resume beside the run it resumes) would
    interleave their checkpoints and metrics. Released on exit, whatever the way."""
    from indexing.durable import WriterLock

    where = Path(out)
    if where.exists() and not where.is_dir():
        raise ClaraError(f"--out {out} is a file: give a folder for the run")
    where.mkdir(parents=True, exist_ok=True)
    return WriterLock(where, f"--out {out}")


def _train_in(args: argparse.Namespace) -> int:
    from training.data import read_pretrain, read_qa
    from training.launch import is_rank, run_ranks, self_command
    from training.pipeline import check_out, train
    from training.stages import StageConfig
    from training.trainer import TrainConfig

    if args.ranks > 1 and not is_rank():
        check_out(args.out, args.resume, args.checkpoint)  # once, before any rank starts
        return run_ranks(self_command(_without_ranks(args.argv)), args.ranks)
    records = read_pretrain(args.data) if args.stage == "pretrain" else read_qa(args.data)
    alone = sum(len(r.docs) < 2 for r in records) if args.stage == "joint" else 0
    if alone and not is_rank():
        print(
            f"{PROG}: warning: {alone} of {len(records)} questions have one candidate document: "
            "the query adapter learns nothing to rank from them (the retrieval loss and recall "
            "of each are trivially perfect); build the data from more documents",
            file=sys.stderr,
        )
    if args.checkpoint is not None or args.resume:  # (said once: not by every rank)
        ignored = [o for o in FRESH_ONLY if any(a.split("=")[0] == o for a in args.argv)]
        if ignored and not is_rank():
            print(
                f"{PROG}: note: {', '.join(ignored)} ignored: the checkpoint it starts from "
                "brings its own (its clara_config.json)",
                file=sys.stderr,
            )
    if args.stage in ("instruct", "joint") and args.checkpoint is None and not args.resume:
        print(
            f"{PROG}: note: no --init-from checkpoint; {args.stage} starts from fresh adapters",
            file=sys.stderr,
        )
    config = TrainConfig(
        stage=args.stage,
        out=args.out,
        lr=args.lr,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        warmup=args.warmup,
        min_lr_ratio=args.min_lr_ratio,
        clip=args.clip,
        save_every=args.save_every,
        keep_last=args.keep_last,
        stop_after=args.stop_after,
        log_every=args.log_every,
        seed=args.seed,
        full=args.full,
        grad_checkpoint=args.grad_checkpoint,
        quiet=args.quiet,
        length_buckets=args.length_buckets,
        pass_size=args.pass_size if args.pass_size is not None else default_pass_size(),
        extra={
            "data": str(Path(args.data).resolve()),
            "data_sha256": file_sha256(args.data),  # --resume refuses data regenerated since
            "init_from": args.checkpoint,
        },
    )
    clara_config = ClaraConfig(
        compression_rate=args.compression_rate,
        doc_max_tokens=args.doc_max_tokens,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        seed=args.seed,
        center_memory=args.center_memory,
    )
    stage_config = StageConfig(
        top_k=getattr(args, "top_k", 5),
        tau=getattr(args, "tau", 0.02),
        mse_weight=getattr(args, "mse_weight", 0.1),
        keep_generator=getattr(args, "keep_generator", False),
        query_only=getattr(args, "query_only", False),
        corpus_negatives=getattr(args, "corpus_negatives", False),
        train_compressor=getattr(args, "train_compressor", False),
        keep_query=getattr(args, "keep_query", False),
        retrieval_score=getattr(args, "retrieval_score", "flat"),
        retrieval_weight=getattr(args, "retrieval_weight", 0.0),
        distill_weight=getattr(args, "distill_weight", 0.0),
    )
    try:
        final = train(
            records,
            config,
            model=args.model,
            init_from=args.checkpoint,
            clara_config=clara_config,
            stage_config=stage_config,
            resume=args.resume,
            dtype=model_dtype(args),
        )
    except KeyboardInterrupt:  # (one line from rank 0; run_main would add "interrupted")
        if os.environ.get("MLX_RANK", "0") == "0":
            _say_where_it_stopped(args.out)
        return 130
    if os.environ.get("MLX_RANK", "0") == "0":
        print(final)
    return 0


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _say_where_it_stopped(out: str) -> None:
    from training.trainer import checkpoints

    kept = [p for p in checkpoints(out) if p.name != "final"]
    if kept:
        print(f"{PROG}: stopped; the last checkpoint is {kept[-1]}: run the same command with "
              "--resume to go on from it", file=sys.stderr)  # fmt: skip
    else:
        print(f"{PROG}: stopped before any checkpoint (--save-every N keeps one every N steps)",
              file=sys.stderr)  # fmt: skip


def _without_ranks(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--ranks":
            skip = True
        elif not a.startswith("--ranks="):
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parse_command_line(parser, argv)
    args.argv = argv
    init_from = getattr(args, "init_from", None)  # (one name of --checkpoint: given both,
    if init_from is not None:  # the last was taken, without a word)
        if (
            args.checkpoint is not None
            and Path(args.checkpoint).resolve() != Path(init_from).resolve()
        ):
            command_parser(parser, args).error(
                f"--init-from {init_from} and --checkpoint {args.checkpoint} name the same "
                "option: give one"
            )
        args.checkpoint = init_from
    return run_main(PROG, lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
