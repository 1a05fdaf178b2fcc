"""`clara-eval`: answer quality and retrieval of CLaRa checkpoints against text baselines.

    clara-eval --data test.jsonl --checkpoint runs/s3/final
    clara-eval --data test.jsonl --checkpoint runs/x4/final --checkpoint runs/x16/final \\
        --retrieval collection --chart results.png --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from clara_cli.common import (
    add_dtype_arg,
    add_quiet_arg,
    add_version_arg,
    collection_arg,
    model_dtype,
    positive_int,
    progress,
    run_main,
)

PROG = "clara-eval"

DESCRIPTION = """\
Evaluate on a QA jsonl ({"question", "docs", "answer"|"answers"|"golden_answers", "pos_index"})
with the reference metrics: exact match (EM), token F1, cover-EM ("acc": every gold token in
the prediction), and Recall@k / Precision@k of retrieval against pos_index.

Rows, all on the same base model:
  no retrieval           the bare base model, question only
  text RAG               the bare base model reading the top-k documents' raw text
  CLaRa <rate>x          each --checkpoint: query-adapter retrieval, generator reading the
                         compressed memory vectors (n_mem positions per document)
  mixed: best as text    each checkpoint's generator reading the best document's raw text
                         and the others' memory vectors (clara-serve's mode "mixed")
  (--generator-only)     each checkpoint's generator without any documents

It measures your own data and adapters. The held-out tables of the project's BENCHMARKS.md
come from bench/bench_heldout.py (BM25 and hybrid rankings, float32, top 2 or 3, 32 tokens),
whose defaults differ from these.
"""

RETRIEVAL_HELP = (
    "where documents come from: 'candidates' = each question's own docs (CLaRa ranks them with "
    "its query adapter; text RAG reads the first --top-k, the dataset's order), 'collection' = "
    "all documents (--collection, default: every doc in --data) ranked by each checkpoint, "
    "'gold' = the pos_index documents (oracle), 'index' = a clara-index collection (--index). "
    "With 'collection'/'index' the text RAG row reads what the first checkpoint retrieved "
    "(default: candidates)."
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version_arg(p)
    p.add_argument("--data", required=True, metavar="JSONL", help="questions with gold answers")
    # not add_model_args: --checkpoint repeats here and --model defaults to the checkpoint's base
    model = p.add_argument_group("model")
    model.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="DIR",
        help="CLaRa checkpoint (clara-train's final/ or step-N/; 'default': the shipped "
        "adapters; 'none': untrained ones); repeat to compare several, e.g. different "
        "compression rates (default: no checkpoint, so only the text baselines are measured)",
    )
    model.add_argument(
        "--model",
        default=None,
        help="base model for every row: 'smollm2-135m', a local mlx-lm directory or a hub id "
        "in the local cache (default: the first checkpoint's own base/ if it has one, else "
        "smollm2-135m)",
    )
    add_dtype_arg(model)
    p.add_argument(
        "--retrieval",
        default="candidates",
        choices=("candidates", "collection", "gold", "index"),
        help=RETRIEVAL_HELP,
    )
    p.add_argument(
        "--collection",
        metavar="FILE",
        help="documents for --retrieval collection: .txt (one per line) or .jsonl (strings, "
        '{"text": ...}, or records with "docs")',
    )
    p.add_argument(
        "--index", metavar="NAME", type=collection_arg("--index-root"),
        help="clara-index collection for --retrieval index (a name; --index-root is its folder)",
    )  # fmt: skip
    p.add_argument(
        "--index-root", metavar="DIR",
        help="the folder of clara-index collections (default: $CLARA_HOME/indexes)",
    )  # fmt: skip
    p.add_argument(
        "--retrieval-mode",
        choices=("hybrid", "dense", "lexical"),
        help="how --retrieval index searches: memory vectors and words fused (its default), "
        "memory vectors only, or BM25 over words only (the other --retrieval choices rank by "
        "the query adapter alone, as the checkpoint scores: flattened cosine or MaxSim)",
    )
    p.add_argument(
        "--top-k", type=positive_int, default=5, help="documents per question (default: 5)"
    )
    p.add_argument(
        "--max-tokens", type=positive_int, default=64, help="answer length cap (default: 64)"
    )
    p.add_argument(
        "--limit", type=positive_int,
        help="evaluate N questions, spread evenly over the file (every len/N-th: the first N "
        "of a file grouped by document were the questions of one or two documents)",
    )  # fmt: skip
    p.add_argument("--no-baselines", action="store_true", help="skip the two text rows")
    p.add_argument(
        "--generator-only", action="store_true", help="add each checkpoint without documents"
    )
    p.add_argument(
        "--json", action="store_true",
        help='print JSON instead of a markdown table: {"run": what was evaluated (clara\'s '
        "version, the data file and its sha256, the questions, each checkpoint and its "
        'adapters\' sha256, the options, the CPU path, the date), "rows": the table}',
    )  # fmt: skip
    p.add_argument("--chart", metavar="PNG", help="write a bar chart of EM/F1/acc per row")
    p.add_argument("--predictions", metavar="JSONL", help="write every prediction")
    add_quiet_arg(p)
    return p


def read_collection(path: str) -> list[str]:
    """Documents from a .txt (one per line) or .jsonl (strings, {"text"}, or {"docs"})."""
    from training.data import DataError, iter_jsonl

    p = Path(path)
    if p.suffix != ".jsonl":
        if not p.is_file():
            raise DataError(f"{p}: no such collection file")
        return [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    docs: list[str] = []
    for where, obj in iter_jsonl(p):
        if isinstance(obj.get("docs"), list):
            docs += [d for d in obj["docs"] if isinstance(d, str)]
        elif isinstance(obj.get("text") or obj.get("contents"), str):
            docs.append(obj.get("text") or obj.get("contents"))
        else:
            raise DataError(f"{where}: expected a 'text' string or a 'docs' list")
    return docs


def markdown_table(rows) -> str:
    ks = sorted({k for r in rows for k in r.retrieval if k.startswith("recall")})
    head = ["Method", "Checkpoint", "EM", "F1", "Acc", *[k.replace("recall", "R") for k in ks]]
    head += ["Positions", "Time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.name, Path(r.checkpoint).name if r.checkpoint else "-"]
        cells += [f"{100 * v:.1f}" for v in (r.em, r.f1, r.acc)]
        cells += [f"{100 * r.retrieval[k]:.1f}" if k in r.retrieval else "-" for k in ks]
        cells += [f"{r.positions:.0f}", f"{r.seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: File types matplotlib writes a chart as (by the file name; none: PNG)
CHART_FORMATS = frozenset(
    {
        "",
        ".png",
        ".svg",
        ".svgz",
        ".pdf",
        ".jpg",
        ".jpeg",
        ".eps",
        ".ps",
        ".tif",
        ".tiff",
        ".webp",
        ".pgf",
        ".raw",
        ".rgba",
    }
)


def write_chart(rows, path: str) -> None:
    try:
        import matplotlib
    except ImportError:
        print(
            f"{PROG}: no chart: --chart needs matplotlib (pip install matplotlib)", file=sys.stderr
        )
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r.name for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4))
    for i, (key, label) in enumerate((("em", "EM"), ("f1", "F1"), ("acc", "Acc"))):
        ax.bar(x + (i - 1) * 0.27, [100 * getattr(r, key) for r in rows], 0.27, label=label)
    ax.set_xticks(x, names, rotation=15, ha="right")
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(args: argparse.Namespace) -> list:
    from clara.checkpoint import DEFAULT_CHECKPOINT, FRESH, read_checkpoint_config
    from clara.errors import ClaraError
    from training.data import read_qa
    from training.evaluate import (
        MISSING,
        retrieve,
        retrieve_from_index,
    )
    from training.trainer import base_of

    args.checkpoint = [  # ('default' was "no such checkpoint folder"; a folder of that name
        str(DEFAULT_CHECKPOINT) if ck == "default" and not Path(ck).is_dir() else ck  # wins)
        for ck in args.checkpoint
    ]
    for ck in args.checkpoint:  # each read before minutes of answers, not after
        if ck.lower() not in FRESH:  # ('none': untrained adapters)
            read_checkpoint_config(ck)
    _check_options_apply(args)
    for flag, path in (("--predictions", args.predictions), ("--chart", args.chart)):
        if not path:
            continue
        where = Path(path).resolve()
        if not where.parent.is_dir():  # before minutes of answers
            raise ClaraError(f"{flag} {path}: no folder {where.parent}")
        if where.is_dir():  # (found when the answers were done, and they were lost)
            raise ClaraError(f"{flag} {path} is a folder: name a file in it")
        if not os.access(where if where.exists() else where.parent, os.W_OK):
            raise ClaraError(f"{flag} {path}: this user may not write there")
    if args.chart and Path(args.chart).suffix.lower() not in CHART_FORMATS:
        raise ClaraError(
            f"--chart {args.chart}: name a .png, .svg or .pdf file (a chart's format is its "
            "file name's; it was found only once the answers were done)"
        )
    records = read_qa(args.data, need_docs=args.retrieval in ("candidates", "gold"))
    every_doc = list(dict.fromkeys(d for r in records for d in r.docs))  # (before --limit)
    if args.limit and args.limit < len(records):  # spread over the file, not its first ones
        records = [records[i * len(records) // args.limit] for i in range(args.limit)]
    alone = sum(len(r.docs) < 2 for r in records) if args.retrieval == "candidates" else 0
    if alone:
        print(
            f"clara-eval: warning: {alone} of {len(records)} questions have one candidate "
            "document: their Recall@k is 1 whatever the query adapter does",
            file=sys.stderr,
        )
    if args.retrieval == "gold" and not all(r.pos_index for r in records):
        raise ClaraError("--retrieval gold needs pos_index in every record")
    if args.retrieval == "index" and not args.index:
        raise ClaraError("--retrieval index needs --index NAME (a clara-index collection)")
    if args.retrieval in ("collection", "index") and not args.checkpoint and not args.no_baselines:
        raise ClaraError(f"--retrieval {args.retrieval} retrieves with a checkpoint: add one")
    dtype = model_dtype(args)
    first = args.checkpoint[0] if args.checkpoint else None
    model = args.model or (str(base_of(first)) if base_of(first) else "smollm2-135m")
    collection = None
    if args.retrieval == "collection":
        # every document of --data, not only those of the questions --limit keeps (with
        # --limit 10, one document: Recall@k 100 whatever the ranking)
        collection = read_collection(args.collection) if args.collection else every_doc

    def bar(it, n, desc):
        return progress(it, n, desc, unit="q", quiet=args.quiet)

    def get(cm, ck):
        if args.retrieval == "index":
            got = retrieve_from_index(
                cm, records, args.index, args.index_root, args.top_k,
                mode=args.retrieval_mode or "hybrid", checkpoint=ck,
            )  # fmt: skip
            if not any(i != MISSING for g in got.gold for i in g):
                print(
                    f"clara-eval: warning: for {ck}, no chunk retrieved from index "
                    f"'{args.index}' is a piece of a question's gold document: is it the "
                    "index of these documents? (Recall@k counts each question as missed)",
                    file=sys.stderr,
                )
            return got
        return retrieve(cm, records, args.retrieval, collection, args.top_k)

    rows: list = []
    try:
        _rows(args, records, rows, model, dtype, get, bar)
    except (KeyboardInterrupt, ClaraError) as exc:  # (and SIGTERM; a later checkpoint that
        # fails to load) what was finished is kept, as the README says
        if rows:
            why = "stopped" if isinstance(exc, KeyboardInterrupt) else "failed"
            print(f"{PROG}: {why}; the {len(rows)} finished rows:", file=sys.stderr)
            _write_predictions(args, records, rows)
            _print_rows(args, rows)
        raise
    _write_predictions(args, records, rows)
    return rows


def _rows(args, records, rows: list, model, dtype, get, bar) -> None:
    """`evaluate`'s rows, appended to `rows` as each is done (a stop keeps the finished)."""
    from clara.checkpoint import load_clara
    from training.evaluate import (
        clara_row,
        generator_only_row,
        mixed_row,
        no_retrieval_row,
        text_rag_row,
    )
    from training.pipeline import load_for_training

    contexts = None
    for ck in args.checkpoint:
        cm = load_for_training(model, ck, dtype=dtype)  # a full fine-tuning ck brings base/
        got = get(cm, ck)
        contexts = contexts if contexts is not None else got.texts
        name = f"CLaRa {cm.config.compression_rate}x"
        if len(args.checkpoint) > 1:
            name += f" ({Path(ck).parent.name}/{Path(ck).name})"
        rows.append(clara_row(cm, records, got, name, ck, args.max_tokens, bar))
        if not cm.config.reference:  # clara-serve's mode "mixed" (imported layouts have none)
            mixed = name.replace(f"CLaRa {cm.config.compression_rate}x", "mixed: best as text")
            rows.append(mixed_row(cm, records, got, mixed, ck, args.max_tokens, bar))
        if args.generator_only:
            rows.append(
                generator_only_row(cm, records, name + ", no docs", ck, args.max_tokens, bar)
            )
    if not args.no_baselines:
        base = load_clara(model, None, dtype=dtype)
        if args.retrieval == "candidates":
            contexts = [r.docs[: args.top_k] for r in records]
        elif args.retrieval == "gold":
            contexts = [[r.docs[j] for j in r.pos_index] for r in records]
        rows.insert(0, no_retrieval_row(base, records, args.max_tokens, bar))
        rows.insert(1, text_rag_row(base, records, contexts, args.max_tokens, bar))


def _check_options_apply(args: argparse.Namespace) -> None:
    """Options that would be taken and ignored are refused (an error audit: `--collection`
    under `--retrieval candidates` exited 0, its documents never read)."""
    from clara.errors import ClaraError

    for flag, value, mode in (
        ("--collection", args.collection, "collection"),
        ("--index", args.index, "index"),
        ("--index-root", args.index_root, "index"),
        ("--retrieval-mode", args.retrieval_mode, "index"),
    ):
        if value is not None and args.retrieval != mode:
            raise ClaraError(
                f"{flag} applies to --retrieval {mode} only (this run retrieves with "
                f"--retrieval {args.retrieval}): add --retrieval {mode}, or leave {flag} out"
            )
    if args.generator_only and not args.checkpoint:
        raise ClaraError("--generator-only adds each --checkpoint's row: give a --checkpoint")


def _write_predictions(args, records, rows) -> None:
    if args.predictions:
        with open(args.predictions, "w", encoding="utf-8") as fh:
            for i, r in enumerate(records):
                preds = {row.name: row.predictions[i] for row in rows}
                fh.write(json.dumps({"question": r.question, "answers": r.answers, **preds}) + "\n")


def _print_rows(args, rows) -> None:
    if args.json:
        print(json.dumps({"run": run_info(args, rows), "rows": [r.to_dict() for r in rows]},
                         indent=2))  # fmt: skip
    else:
        print(markdown_table(rows))


def run_info(args: argparse.Namespace, rows) -> dict:
    """What a --json result was made of, so two results can be told apart and compared: the
    data (path, sha256, questions evaluated), each checkpoint's adapters (sha256), the
    options and the machine's CPU path."""
    import datetime as dt

    from clara import __version__
    from clara.checkpoint import FRESH
    from clara.cpu import describe
    from clara.paths import file_sha256

    checkpoints = []
    for name in args.checkpoint:
        if name.lower() in FRESH:  # untrained adapters: no folder
            checkpoints.append({"checkpoint": name, "adapters_sha256": None})
            continue
        folder = Path(name).expanduser()
        digest = file_sha256(folder / "adapters.safetensors")
        checkpoints.append({"checkpoint": str(folder.resolve()), "adapters_sha256": digest})
    return {
        "clara": __version__,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": {"path": str(Path(args.data).resolve()), "sha256": file_sha256(args.data)},
        "questions": rows[0].n if rows else 0,
        "limit": args.limit,
        "model": args.model or "default (the first checkpoint's base, else smollm2-135m)",
        "dtype": args.dtype,
        "checkpoints": checkpoints,
        "retrieval": args.retrieval,
        "retrieval_mode": args.retrieval_mode,
        "top_k": args.top_k,
        "max_tokens": args.max_tokens,
        "cpu": describe(),
    }


def cmd_eval(args: argparse.Namespace) -> int:
    rows = evaluate(args)
    if not rows:
        print(
            f"{PROG}: nothing to evaluate (give --checkpoint or drop --no-baselines)",
            file=sys.stderr,
        )
        return 1
    _print_rows(args, rows)
    if args.chart:  # after the table: a chart that cannot be drawn loses no results
        write_chart(rows, args.chart)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(PROG, lambda: cmd_eval(args))


if __name__ == "__main__":
    sys.exit(main())
