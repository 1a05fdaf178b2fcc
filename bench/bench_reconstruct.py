"""What a document's memory holds: the generator paraphrases it back from its memory alone.

    python bench/bench_reconstruct.py shipped=default s1=runs/x/pretrain/final --docs 40

Each held-out document of the ml-clara example data (0-based line % 5 == 0, never trained on;
every `200 / --docs`-th one) is compressed by the checkpoint's compressor, and its generator
answers the stage-1 paraphrase prompt (`Background: <memory> means the same as`) greedily.
`--train-docs N` adds N training documents beside them: if those come back much better than
the held-out ones, the adapters learned the training documents rather than how to read.

Scored against the document's body (the text after its first line, "This a document about
<title>.", which nearly every paraphrase repeats):
- word recall: share of the body's distinct content words (not stop words) in the paraphrase;
- names and numbers: share of its capitalised words and numbers in the paraphrase, the
  details short answers are made of;
- precision: share of the paraphrase's content words found anywhere in the document (the
  rest is made up);
- words: paraphrase length.
The table goes to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402,F401  first: OpenBLAS before mlx

from bench._common import add_no_append, append_report, markdown_table, start_run  # noqa: E402
from bench.bench_heldout import DATA  # noqa: E402
from clara.generate import batch_generate  # noqa: E402
from clara.prompt import paraphrase_prompt  # noqa: E402
from training.default_recipe import split_example  # noqa: E402
from clara.checkpoint import load_clara  # noqa: E402
from training.pipeline import load_for_training  # noqa: E402

STOP = set(
    "a an the of in on at to for from by with and or but is are was were be been being has have "
    "had it its this that these those as he she they his her their him them which who whom "
    "what when where while also not no after before during into over under about than then "
    "there here such can could would should may might will shall do does did one".split()
)
_WORD = re.compile(r"\w+")
_DETAIL = re.compile(r"\b(?:[A-Z][\w'-]*|\d[\d.,]*)")


def documents(n_held: int, n_train: int, path: Path = DATA) -> list[tuple[str, str]]:
    """`(split, document)`: every `200 / n_held`-th held-out one, then the first `n_train`
    training ones."""
    train_rows, held_rows, _ = split_example(path)
    held = [r["docs"][0] for r in held_rows]
    train = [r["docs"][0] for r in train_rows]
    stride = max(1, len(held) // max(1, n_held))
    return [("held-out", d) for d in held[::stride][:n_held]] + [
        ("training", d) for d in train[:n_train]
    ]


def content(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOP]


def scores(document: str, paraphrase: str) -> dict:
    body = document.split("\n", 1)[1] if "\n" in document else document
    said = content(paraphrase)
    said_set = set(said)
    words = set(content(body))
    details = {d.rstrip(".,").lower() for d in _DETAIL.findall(body)} - STOP
    known = set(content(document))
    return {
        "word_recall": len(words & said_set) / max(1, len(words)),
        "detail_recall": len({d for d in details if d in said_set}) / max(1, len(details)),
        "precision": sum(w in known for w in said) / max(1, len(said)),
        "words": len(_WORD.findall(paraphrase)),
    }


def evaluate(checkpoint: str | None, docs: list[tuple[str, str]], max_tokens: int) -> dict:
    cm = (
        load_clara("smollm2-135m")
        if checkpoint is None
        else load_for_training(checkpoint=checkpoint)
    )
    t0 = time.perf_counter()
    memories = cm.compress([d for _, d in docs])
    prompts = [paraphrase_prompt(cm, memories[i]) for i in range(len(docs))]
    texts = [""] * len(docs)
    for i, answer in batch_generate(cm, prompts, max_tokens=max_tokens):
        texts[i] = answer.text
        print(f"  {sum(bool(t) for t in texts)}/{len(docs)}", end="\r", file=sys.stderr)
    per = [{"split": s, **scores(d, t), "paraphrase": t} for (s, d), t in zip(docs, texts)]
    return {
        "compression_rate": cm.config.compression_rate,
        "n_mem": cm.n_mem,
        "seconds": time.perf_counter() - t0,
        "docs": per,
    }


def summary(result: dict, split: str) -> list:
    rows = [d for d in result["docs"] if d["split"] == split]
    if not rows:
        return []

    def mean(key: str, scale: float = 100.0) -> str:
        return f"{scale * statistics.mean(r[key] for r in rows):.1f}"

    return [
        split,
        len(rows),
        mean("word_recall"),
        mean("detail_recall"),
        mean("precision"),
        mean("words", 1.0),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bench_reconstruct.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2],
    )  # fmt: skip
    p.add_argument(
        "checkpoints", nargs="+", metavar="TAG=DIR",
        help="checkpoints to compare ('default' for the shipped adapters)",
    )  # fmt: skip
    p.add_argument("--docs", type=int, default=40, help="held-out documents (<= 200)")
    p.add_argument("--train-docs", type=int, default=0, help="training documents beside them")
    p.add_argument("--max-tokens", type=int, default=160, help="paraphrase length cap")
    p.add_argument("--out", type=Path, help="folder for TAG.json with every paraphrase")
    add_no_append(p)
    args = p.parse_args(argv)
    if not DATA.exists():
        p.error(f"{DATA}: the ml-clara example data is needed (see bench/bench_heldout.py)")
    start_run()
    docs = documents(args.docs, args.train_docs)
    table = []
    for spec in args.checkpoints:
        tag, _, where = spec.partition("=")
        if not where:
            p.error(f"{spec}: expected TAG=DIR")
        result = evaluate(None if where == "default" else where, docs, args.max_tokens)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{tag}.json").write_text(json.dumps({"checkpoint": where, **result}))
        for split in ("held-out", "training"):
            row = summary(result, split)
            if row:
                table.append([tag, f"{result['compression_rate']}x ({result['n_mem']})", *row])
        print(markdown_table(HEADERS, table[-2:]), flush=True)
    body = markdown_table(HEADERS, table)
    notes = (
        f"Greedy paraphrases of at most {args.max_tokens} tokens from each document's memory "
        "alone (the stage-1 paraphrase prompt), scored against the document's body (after its "
        "title line): word recall = share of its distinct content words said; names and "
        "numbers = share of its capitalised words and numbers said; precision = share of the "
        "paraphrase's content words found in the document."
    )
    if args.no_append:
        print(body + "\n\n" + notes)
    else:
        append_report("What the memory holds: paraphrase from memory (bench/bench_reconstruct.py)",
                      body, notes)  # fmt: skip
    return 0


HEADERS = [
    "adapters", "rate (memory vectors)", "documents", "n", "word recall", "names and numbers",
    "precision", "words",
]  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(main())
