"""Held-out evaluation on real prose: Apple's ml-clara example documents never trained on.

    python bench/bench_heldout.py --checkpoint DIR --tag new --out runs/heldout  # one row set
    python bench/bench_heldout.py --report runs/heldout     # table + JSON -> BENCHMARKS.md,
                                                            # chart -> runs/heldout/heldout_eval.png
    python bench/bench_heldout.py --report runs/heldout --chart docs/heldout_eval.png  # the docs' chart

Questions: one per held-out document (0-based line % 5 == 0 of clara-example-pretrain.jsonl;
the question at index `doc % len(questions)`), every `200 / --questions`-th document.
Per checkpoint, on the same base model and questions:
- oracle (the gold document alone): as 16x memory read by the generator adapter; as text
  read by the generator adapter; (baselines) as text read by the bare model;
- end to end over all 1000 documents (`--collection heldout`: the 200 held-out ones): CLaRa
  (the query adapter ranks the compressed documents, the generator reads the top-k memories),
  and CLaRa with the product's default hybrid retrieval (that ranking and BM25's fused by
  reciprocal rank, `clara.retrieval.Fusion`); clara-serve's "mixed" mode on that ranking (the
  generator reads the best document as text and the next k-1 as memories); (baselines) the
  generator reading the best document alone as text, text RAG (the bare model reading BM25's
  top-k texts), no retrieval. R@1/R@5 of each ranking against the gold document.
`--baselines` adds the bare-model rows (run it once, with one of the checkpoints).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402,F401  first: OpenBLAS before mlx
import numpy as np  # noqa: E402

from bench._common import (  # noqa: E402
    add_no_append,
    append_report,
    run_record,
    runs_made,
    start_run,
)
from clara import _blas  # noqa: E402
from clara._blas import decode_weights  # noqa: E402
from clara.model import QUERY_PRECISIONS  # noqa: E402
from clara.prompt import mixed_prompt, text_prompt  # noqa: E402
from clara.retrieval import (  # noqa: E402
    DENSE_SCORINGS,
    Fusion,
    cosine_scores,
    maxsim_rerank,
    recall_precision_at_k,
    reciprocal_rank_fusion,
)
from training.data import QARecord  # noqa: E402
from training.evaluate import (  # noqa: E402
    Retrieved,
    answer_scores,
    clara_row,
    no_retrieval_row,
    score_rows,
    text_rag_row,
)
from clara.checkpoint import load_clara  # noqa: E402
from clara.errors import CheckpointError  # noqa: E402
from training.pipeline import load_for_training  # noqa: E402
from training.default_recipe import default_data  # noqa: E402

DATA = default_data()  # $CLARA_EXAMPLE_DATA, or a shared/data folder beside the checkout
_WORD = re.compile(r"\w+")


def heldout(n: int, path: Path = DATA, every: bool = False) -> tuple[list[QARecord], list[str]]:
    """`n` held-out questions (one per held-out document, the gold doc as the only doc) and all
    1000 documents; `every`: all questions of those `n` documents instead of one each."""
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    docs = [r["docs"][0] for r in rows]
    held = [i for i in range(len(rows)) if i % 5 == 0]
    recs = []  # (spread evenly over them: every 200/n-th; n=150 took the first 150)
    for i in [held[k * len(held) // n] for k in range(min(n, len(held)))]:
        qs, ans = rows[i]["question"], rows[i]["answers"]
        for j in range(len(qs)) if every else [i % len(qs)]:
            recs.append(QARecord(qs[j], [docs[i]], [ans[j]], [0]))
    return recs, docs


def bm25(queries: list[str], docs: list[str], k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """BM25 scores (Q, N) over lower-cased word tokens."""
    toks = [Counter(w.lower() for w in _WORD.findall(d)) for d in docs]
    lens = np.array([sum(t.values()) for t in toks], float)
    df = Counter(w for t in toks for w in t)
    avg = lens.mean()
    out = np.zeros((len(queries), len(docs)))
    for qi, q in enumerate(queries):
        for w in set(x.lower() for x in _WORD.findall(q)):
            if w not in df:
                continue
            idf = math.log(1 + (len(docs) - df[w] + 0.5) / (df[w] + 0.5))
            tf = np.array([t.get(w, 0) for t in toks], float)
            out[qi] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lens / avg))
    return out


def rankings(cm, recs, docs, mem) -> tuple[list[list[int]], ...]:
    """Each question's documents, best first, by the query adapter (dense), BM25, and the
    product's default retrieval fusing the two by reciprocal rank (`clara.retrieval.Fusion`)."""
    fusion = Fusion()
    q = cm.encode_queries([r.question for r in recs])
    dense = np.argsort(-np.array(cosine_scores(q, mem)), axis=1, kind="stable")
    depth = cm.config.dense_rerank  # as the index does: FAISS's nearest re-scored by MaxSim
    if depth:
        import mlx.core as mx

        qn, mn = np.array(q.astype(mx.float32)), np.array(mem.astype(mx.float32))
        near = dense[:, : max(depth, fusion.depth)]
        dense = np.stack([maxsim_rerank(qn[i], row, mn[row])[1] for i, row in enumerate(near)])
    dense = [row[: fusion.depth].tolist() for row in dense]
    scores = bm25([r.question for r in recs], docs)
    lexical = [np.argsort(-s, kind="stable")[: fusion.depth].tolist() for s in scores]
    hybrid = [
        [f.id for f in reciprocal_rank_fusion({"dense": d, "lexical": w}, fusion.k,
                                              fusion.weights)]
        for d, w in zip(dense, lexical)
    ]  # fmt: skip
    return dense, lexical, hybrid


def rankings_recall(cm, recs, docs, mem, gold) -> dict:
    """R@1/R@3/R@5 of the dense, BM25 and hybrid rankings against the gold documents."""
    names = ("dense", "bm25", "hybrid")
    ranked = rankings(cm, recs, docs, mem)
    return {n: recall_precision_at_k(r, gold, (1, 3, 5)) for n, r in zip(names, ranked)}


def compressed(cm, docs: list[str], folder: Path | None):
    """`cm.compress(docs)`, kept in `folder` under a digest of what compression reads: the
    base model (its fingerprint, and the first values of each of its weights as loaded), the
    compression settings, the compressor (its LoRA weights, memory-token embeddings and
    center) and the documents.
    Checkpoints that share a compressor (e.g. after `clara-train joint --query-only`) reuse
    it; another base model or compression rate does not (before, only the compressor was in
    the digest, and fresh adapters over another base model read the first one's memories)."""
    import hashlib

    import mlx.core as mx
    from mlx.utils import tree_flatten

    h = hashlib.sha1()
    c = cm.config
    h.update(
        f"{cm.info.fingerprint}|{c.compression_rate}|{c.doc_max_tokens}|{c.lora_rank}|"
        f"{c.lora_alpha}".encode()
    )
    for name, value in tree_flatten(cm.lm.parameters()):  # the base: a sample of each weight
        if "lora_" not in name:
            h.update(name.encode())
            h.update(np.array(value.reshape(-1)[:4096].astype(mx.float32)).tobytes())
    for name, value in tree_flatten(cm.parameters()):
        if "lora_compressor" in name or name in ("mem_embeddings", "enc_embedding",
                                                 "memory_center"):  # fmt: skip
            h.update(name.encode())
            h.update(np.array(value.astype(mx.float32)).tobytes())
    h.update("\0".join(docs).encode())
    path = folder / f"memory-{h.hexdigest()[:16]}.npy" if folder else None
    if path is not None and path.exists():
        return mx.array(np.load(path))
    mem = cm.compress(docs)
    if path is not None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(path, np.array(mem.astype(mx.float32)))
    return mem


def run(args) -> dict:
    if args.every_question and not args.retrieval_only:
        raise SystemExit("--every-question goes with --retrieval-only (no generation)")
    recs, docs = heldout(args.questions, every=args.every_question)
    if args.collection == "heldout":
        docs = [d for i, d in enumerate(docs) if i % 5 == 0]
    where = {d: i for i, d in enumerate(docs)}
    gold = [[where[r.docs[0]]] for r in recs]
    if args.checkpoint == "default":  # the shipped adapters (load_for_training: fresh ones)
        cm = load_clara(args.model, None, dtype="float32")
    else:
        cm = load_for_training(args.model, args.checkpoint, dtype="float32")
    start = time.perf_counter()
    out = {"tag": args.tag, "checkpoint": str(args.checkpoint), "questions": len(recs)}
    # which questions (a report pairs each run's predictions with their gold answers, which
    # it reads again: runs of another selection of as many questions are refused)
    out["question_set"] = hashlib.sha256("\n".join(r.question for r in recs).encode()).hexdigest()[
        :16
    ]
    out["oracle_only"] = args.oracle_only
    out["every_question"] = args.every_question
    if args.dense_scoring:
        cm.config.dense_scoring = args.dense_scoring
    # packed as the product runs: the compressor as clara-index add, the query adapter (and
    # its --query-precision) as clara-serve
    cm.pack_base_weights(compressor=True)
    out["query_precision"] = cm.set_query_precision(args.query_precision)
    out["dense_rerank"] = cm.config.dense_rerank
    # what the answers' products ran in: float16 (or int8) decode weights, and bfloat16
    # generator products on CPUs with them
    out["decode_weights"] = decode_weights() + (
        " + bfloat16 generator products" if _blas.bf16 else ""
    )
    out.update(top_k=args.top_k, collection=len(docs), max_tokens=args.max_tokens)
    rate = cm.config.compression_rate
    rows = []
    if args.oracle_only:  # compress the gold documents alone
        gold_mem = cm.compress([r.docs[0] for r in recs])
        oracle = Retrieved([[m] for m in gold_mem], [r.docs for r in recs], [], [])
        row = clara_row(cm, recs, oracle, f"memory {rate}x + generator", args.checkpoint,
                        args.max_tokens)  # fmt: skip
        out["rows"] = [{"setting": "oracle", **row.to_dict(with_predictions=True)}]
        out["seconds"] = round(time.perf_counter() - start, 1)
        return out
    mem = compressed(cm, docs, args.out)  # (N, n_mem, d): the oracle reads the gold rows
    if args.retrieval_only:
        out["retrieval"] = rankings_recall(cm, recs, docs, mem, gold)
        out["seconds"] = round(time.perf_counter() - start, 1)
        return out
    oracle = Retrieved([[mem[g[0]]] for g in gold], [r.docs for r in recs], [], [])
    rows.append(("oracle", clara_row(cm, recs, oracle, f"memory {rate}x + generator",
                                     args.checkpoint, args.max_tokens)))  # fmt: skip
    rows.append(("oracle", score_rows(
        cm, "text + generator adapter", "text", recs,
        [text_prompt(cm, r.question, r.docs) for r in recs], "generator", args.max_tokens,
    )))  # fmt: skip
    if args.baselines:
        rows.append(("oracle", text_rag_row(cm, recs, [r.docs for r in recs], args.max_tokens,
                                            name="text, bare model")))  # fmt: skip
    # Rankings of the documents for each question, best first: the query adapter's (dense),
    # BM25's, and the product's default retrieval fusing the two by reciprocal rank with
    # clara's default weights (clara.retrieval.Fusion).
    dense, lexical, hybrid = rankings(cm, recs, docs, mem)

    def clara_e2e(ranked: list[list[int]], name: str):
        """The generator reading the top-k of `ranked` as memory."""
        ranked = [row[:10] for row in ranked]
        picks = [row[: args.top_k] for row in ranked]
        e2e = Retrieved([[mem[j] for j in p] for p in picks],
                        [[docs[j] for j in p] for p in picks], ranked, gold)  # fmt: skip
        return ("end to end", clara_row(cm, recs, e2e, name, args.checkpoint, args.max_tokens))

    rows.append(clara_e2e(dense, f"CLaRa {rate}x (dense top-k)"))
    rows.append(clara_e2e(hybrid, f"CLaRa {rate}x (hybrid top-k, default)"))
    # clara-serve's "mixed" mode: the best document as text, the next ones as memories
    ranked = [row[:10] for row in hybrid]
    picks = [row[: args.top_k] for row in ranked]
    prompts = [mixed_prompt(cm, r.question, [docs[p[0]]], [mem[j] for j in p[1:]])
               for r, p in zip(recs, picks)]  # fmt: skip
    recall = recall_precision_at_k(ranked, gold, (1, 3, 5))
    row = score_rows(cm, "mixed: best as text + memories (hybrid)", "mixed", recs, prompts,
                     "generator", args.max_tokens, retrieval=recall)  # fmt: skip
    rows.append(("end to end", row))
    if args.baselines:
        prompts = [text_prompt(cm, r.question, [docs[p[0]]]) for r, p in zip(recs, picks)]
        row = score_rows(cm, "best as text + generator adapter (hybrid)", "text", recs,
                         prompts, "generator", args.max_tokens, retrieval=recall)  # fmt: skip
        rows.append(("end to end", row))
    if args.baselines:
        ranked = [row[:10] for row in lexical]
        texts = [[docs[j] for j in r[: args.top_k]] for r in ranked]
        row = text_rag_row(cm, recs, texts, args.max_tokens, name="text RAG (BM25 top-k)")
        row.retrieval = recall_precision_at_k(ranked, gold, (1, 3, 5))
        rows.append(("end to end", row))
        rows.append(("end to end", no_retrieval_row(cm, recs, args.max_tokens)))
    out["rows"] = [{"setting": s, **r.to_dict(with_predictions=True)} for s, r in rows]
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def interval(row: dict, golds: list[list[str]], key: str) -> str:
    """`row[key]` in percent with a 95% interval over the questions, recomputed from the row's
    stored predictions (`key`: "f1" or "acc", cover-EM); the bare figure without them. Cover-EM
    is right or wrong per question: Wilson's interval (the normal one read "0.0 ± 0.0" for 0
    of 20, and went below 0 for 1 of 20); F1's is normal, within 0-100."""
    per = [answer_scores(p, g)[key] for p, g in zip(row.get("predictions") or [], golds)]
    if len(per) < 2:
        return f"{100 * row[key]:.1f}"
    n, mean = len(per), float(np.mean(per))
    if key == "acc":
        z = 1.96
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    else:
        centre, half = mean, 1.96 * float(np.std(per, ddof=1)) / math.sqrt(n)
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return f"{100 * row[key]:.1f} ({100 * low:.1f}-{100 * high:.1f})"


def report(folder: Path, chart: Path | None = None, no_append: bool = False) -> None:
    """Append the results in `folder` to BENCHMARKS.md (`no_append`: print them only); the
    answers' chart goes to `chart` (default: `folder`/heldout_eval.png, so a report never
    overwrites the docs' chart). Runs made with other questions or settings are refused: one
    table's rows must differ in their adapters alone."""
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    found = [json.loads(p.read_text()) for p in sorted(folder.glob("*.retrieval"))]
    if not runs and not found:
        raise SystemExit(f"no results in {folder}")
    for kind, results, keys in (
        (
            "*.json",
            runs,
            ("questions", "question_set", "top_k", "collection", "max_tokens", "oracle_only"),
        ),  # fmt: skip
        ("*.retrieval", found, ("questions", "collection", "every_question")),
    ):
        settings = {tuple(x.get(k) for k in keys) for x in results}
        if len(settings) > 1:
            raise SystemExit(
                f"{folder}/{kind}: runs made with different {', '.join(keys)} ({sorted(settings, key=str)}): "
                "report each setting from a folder of its own"
            )
    if found:
        report_retrieval(found, no_append)
    if runs:
        if not DATA.exists():  # the gold answers, for the intervals
            raise SystemExit(
                f"{DATA} not found: the report reads the questions' answers from the example "
                "data; give its path in CLARA_EXAMPLE_DATA"
            )
        report_answers(runs, chart or folder / "heldout_eval.png", no_append)


def report_retrieval(found: list[dict], no_append: bool = False) -> None:
    """The `--retrieval-only` results as one table -> BENCHMARKS.md; each figure with the
    questions it counts (a difference of a few of 1686 is no difference)."""
    lines = ["| query adapter | checkpoint | dense scoring | query precision | ranking | R@1 | R@3 "
             "| R@5 |", "|" + "---|" * 8]  # fmt: skip
    for x in found:
        depth = x.get("dense_rerank", 0)
        scoring = f"MaxSim of cosine top {depth}" if depth else "flattened cosine"
        precision = x.get("query_precision", "float32")
        for name, r in x["retrieval"].items():
            dense = name != "bm25"
            cells = [x["tag"], f"`{x['checkpoint']}`", scoring if dense else ""]
            cells += [precision if dense else "", name]
            cells += [f"{100 * r[f'recall@{k}']:.1f} ({round(r[f'recall@{k}'] * x['questions'])})"
                      for k in (1, 3, 5)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    per = "every question of each" if found[0].get("every_question") else "one per"
    body = (
        f"{found[0]['questions']} held-out questions ({per} held-out document), ranking all "
        f"{found[0]['collection']} documents; dense: the query adapter's vectors against the "
        "compressed documents (the flattened cosine, or as the index ranks by default: its "
        "nearest re-scored by MaxSim), hybrid: the product's default fusion of dense and "
        "BM25.\n\n"
        + "\n".join(lines)
        + "\n\n"
        + runs_made([(x["tag"], x.get("run")) for x in found])
    )
    if no_append:
        print(body)
        return
    append_report("Held-out retrieval (bench/bench_heldout.py --retrieval-only)", body)


def report_answers(runs: list[dict], png: Path, no_append: bool = False) -> None:
    head = "| adapters | setting | method | EM | F1 | cover-EM | R@1 | R@5 | positions |"
    lines = [head, "|" + "---|" * 9]
    chart = []
    golds = {}  # questions -> their gold answers (the same questions for every run)
    for run_ in runs:
        n = run_["questions"]
        if n not in golds:
            golds[n] = [r.answers for r in heldout(n)[0]]
        for r in run_["rows"]:
            ret = r.get("retrieval") or {}
            cells = [run_["tag"], r["setting"], r["name"], f"{100 * r['em']:.1f}"]
            cells += [interval(r, golds[n], k) for k in ("f1", "acc")]
            cells += [f"{100 * ret[k]:.1f}" if k in ret else "-" for k in ("recall@1", "recall@5")]
            cells.append(f"{r['positions']:.0f}")
            lines.append("| " + " | ".join(cells) + " |")
            chart.append((f"{run_['tag']}: {r['name']}", r))
    png.parent.mkdir(parents=True, exist_ok=True)
    _chart(chart, png)
    try:
        shown = png.resolve().relative_to(ROOT)
    except ValueError:
        shown = png
    slim = [{**x, "rows": [{k: v for k, v in r.items() if k != "predictions"} for r in x["rows"]]}
            for x in runs]  # fmt: skip
    n, k = runs[0]["questions"], runs[0]["top_k"]
    # what ran: an --oracle-only run has no end-to-end rows (nothing retrieved)
    e2e = any(r["setting"] == "end to end" for x in runs for r in x["rows"])
    what = (
        f"end to end retrieves the top {k} of {runs[0]['collection']} documents"
        if e2e
        else "the gold document alone as memory (oracle rows only, nothing retrieved)"
    )
    decode = sorted({x.get("decode_weights", "not recorded") for x in runs})
    body = (
        f"{n} held-out questions (one per held-out document"
        + (", spread evenly over the 200" if n < 200 else "")
        + "; in brackets a 95% interval over the questions: Wilson's for cover-EM, normal for "
        "F1), the same base model (smollm2-135m, float32 weights; the answers' decode products "
        f"in {' and '.join(decode)} on this CPU: another CPU may change a few answers word for "
        f"word, docs/CPU.md) and questions for every row; {what}; greedy answers, "
        f"at most {runs[0].get('max_tokens', 32)} tokens. Chart: {shown}.\n\n"
        + "\n".join(lines)
        + "\n\n"
        + runs_made([(x["tag"], x.get("run")) for x in runs])
        + "\n\n<details><summary>JSON</summary>\n\n```json\n"
        + json.dumps(slim, indent=1)
        + "\n```\n</details>\n"
    )
    if no_append:
        print(body)
        return
    append_report("Held-out real-prose evaluation (bench/bench_heldout.py)", body)


def _chart(items, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(items))
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(items)), 4.5))
    for i, (key, label) in enumerate((("em", "EM"), ("f1", "F1"), ("acc", "cover-EM"))):
        ax.bar(x + (i - 1) * 0.27, [100 * r[key] for _, r in items], 0.27, label=label)
    ax.set_xticks(x, [n for n, _ in items], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("score (%)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def build_parser(report: bool = False) -> argparse.ArgumentParser:
    """The options; --checkpoint, --tag and --out are required unless `report` (--report DIR).
    bench_cloze.py builds its runs' arguments from this parser too."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    need = not report
    p.add_argument(
        "--checkpoint", required=need,
        help="CLaRa checkpoint to evaluate ('default': the shipped adapters)",
    )  # fmt: skip
    p.add_argument("--tag", required=need, help="name of this checkpoint's rows (e.g. old, new)")
    p.add_argument("--out", type=Path, required=need, help="folder for TAG.json")
    p.add_argument("--model", default="smollm2-135m", help="base model (default: smollm2-135m)")
    p.add_argument("--questions", type=int, default=200, help="held-out questions (<= 200)")
    p.add_argument("--top-k", type=int, default=3, help="documents per question, end to end")
    p.add_argument("--max-tokens", type=int, default=32, help="answer length cap")
    p.add_argument(
        "--collection",
        choices=("all", "heldout"),
        default="all",
        help="documents retrieved from end to end: all 1000, or the 200 held-out ones",
    )
    p.add_argument("--baselines", action="store_true", help="add the bare-model rows")
    p.add_argument(
        "--oracle-only", action="store_true",
        help="only the oracle memory row (the gold documents compressed alone, a few minutes): "
        "a quick reading check of a training checkpoint; keep its --out apart from full runs",
    )  # fmt: skip
    p.add_argument(
        "--retrieval-only", action="store_true",
        help="only R@1/3/5 of the dense, BM25 and hybrid rankings (no generation); the "
        "compressed collection is kept in --out and reused while the compressor is unchanged",
    )  # fmt: skip
    p.add_argument(
        "--every-question", action="store_true",
        help="with --retrieval-only: every question of the held-out documents (1686) "
        "instead of one per document (a finer comparison; questions of one document are not independent)",
    )  # fmt: skip
    p.add_argument(
        "--dense-scoring", choices=DENSE_SCORINGS,
        help="score the dense ranking this way instead of as the checkpoint says",
    )  # fmt: skip
    p.add_argument(
        "--query-precision", choices=QUERY_PRECISIONS, default="float32",
        help="the query adapter's base products, as clara-serve's --query-precision",
    )  # fmt: skip
    p.add_argument(
        "--report", type=Path, metavar="DIR",
        help="combine DIR/*.json and DIR/*.retrieval into a report appended to BENCHMARKS.md "
        "(then --checkpoint, --tag and --out are not needed)",
    )  # fmt: skip
    add_no_append(p, "with --report: print the report only; leave BENCHMARKS.md unchanged")
    p.add_argument(
        "--chart", type=Path, metavar="PNG",
        help="with --report: where the answers' chart goes (default: DIR/heldout_eval.png; "
        "docs/heldout_eval.png is the one the docs show)",
    )  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    first = argparse.ArgumentParser(add_help=False)  # --report makes the others optional
    first.add_argument("--report", type=Path)
    p = build_parser(report=first.parse_known_args(argv)[0].report is not None)
    args = p.parse_args(argv)
    if args.chart and not args.report:
        p.error("--chart goes with --report DIR")
    if not 1 <= args.questions <= 200:
        p.error("--questions takes 1 to 200")
    if args.top_k < 1 or args.max_tokens < 1:
        p.error("--top-k and --max-tokens must be 1 or more")
    if args.report:  # (merges earlier runs' results: nothing is measured now)
        report(args.report, args.chart, args.no_append)
        return 0
    start_run()
    if args.checkpoint != "default" and not Path(args.checkpoint).is_dir():
        p.error(f"--checkpoint {args.checkpoint}: no such folder ('default': the shipped adapters)")
    if not DATA.exists():
        raise SystemExit(f"{DATA} not found: give the example data's path in CLARA_EXAMPLE_DATA")
    try:
        result = run(args)
    except CheckpointError as e:
        raise SystemExit(f"--checkpoint {args.checkpoint}: {e}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    result["run"] = run_record()  # (what --report names: it merges runs made elsewhen)
    if args.retrieval_only:  # apart from the answer rows --report reads
        (args.out / f"{args.tag}.retrieval").write_text(json.dumps(result, indent=1))
        for name, r in result["retrieval"].items():
            print(f"{name:8} " + " ".join(f"{k} {100 * v:.1f}" for k, v in r.items()
                                          if k.startswith("recall")))  # fmt: skip
        return 0
    (args.out / f"{args.tag}.json").write_text(json.dumps(result, indent=1))
    for r in result["rows"]:
        print(f"{r['setting']:10} {r['name']:32} EM {r['em']:.3f} F1 {r['f1']:.3f} "
              f"acc {r['acc']:.3f} {r.get('retrieval')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
