"""Retrieval benchmark: dense vs lexical vs hybrid on two real document sets nobody here wrote.

Both sets (bench/retrieval_sets.py) are written out as files and indexed through the real
`clara-index add` (default model and shipped checkpoint, contextual chunks, full-text table)
into a cache folder outside the repo (`--cache`, default $CLARA_HOME/bench-retrieval);
`clara-index add` is incremental, so a rerun only re-asks the questions. A hit is any chunk of the question's document: R@1, R@5, MRR (over the
top 20) per mode, and search latency p50/p99 per mode (Collection.retrieve with the question's
vector already encoded; query encoding is timed separately).

Neither set is a clean test of the shipped adapters: they trained on Python's documentation
topics (the pydoc set's documents, not its questions), the word ranking's title weight was
chosen on the pydoc questions, and the apple set's held-out questions helped choose among
candidate adapters (docs/TRAINING_RUNS.md).

    python bench/bench_retrieval.py                                              # build + table
    python bench/bench_retrieval.py --cache DIR --build-only --sets apple        # index only
    python bench/bench_retrieval.py --cache DIR --tune                           # k / weights grid
    python bench/bench_retrieval.py --cache DIR --no-build --split 2              # 2 collections

`--split N` also asks each set's questions of its documents dealt round-robin into N
collections searched as one (`indexing.store.retrieve_from`: a file_search tool with N vector
stores), beside the one collection holding them all: the parts are copies of its documents,
chunks and memories (no model work).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import clara  # noqa: F401  preloads OpenBLAS before anything else

import hashlib
import time

import numpy as np

from bench._common import add_no_append, append_report, markdown_table, start_run
from bench.retrieval_sets import apple_name, apple_train_questions, write_set
from clara import paths
from clara.errors import CollectionNotFoundError
from clara.retrieval import DENSE_SCORINGS, RETRIEVAL_MODES, Fusion, reciprocal_rank_fusion
from indexing.meta import ChunkRecord
from indexing.store import Collection, retrieve_from

SETS = ("apple", "pydoc")


def open_collection(index: Path, which: str, manifest: dict) -> Collection:
    """The set's collection, read-only; a clear error where it was never built."""
    try:
        return Collection.open(index, which, manifest, readonly=True)
    except CollectionNotFoundError:
        raise SystemExit(
            f"{index}: no '{which}' collection yet; run once without --no-build to index it"
        ) from None


def build(cache: Path, which: str, batch_size: int) -> list[tuple[str, str]]:
    """Write the set's files and index them with `clara-index add` (skips unchanged files)."""
    from indexing.cli import main as clara_index

    questions = write_set(which, cache / which)
    argv = ["add", str(cache / which), "--index", str(cache / "index"), "--collection", which]
    rc = clara_index([*argv, "--batch-size", str(batch_size), "-q"])
    if rc != 0:
        raise SystemExit(f"clara-index add failed for {which} (exit {rc})")
    return questions


def encode(cm, cache: Path, tag: str, texts: list[str]) -> np.ndarray:
    """Query-adapter vectors (N, n_mem, d) float32, cached per checkpoint and question list."""
    import mlx.core as mx

    key = hashlib.sha256(("\n".join(texts) + cm.fingerprint).encode()).hexdigest()[:16]
    path = cache / f"queries-{tag}-{key}.npy"
    if path.exists():
        return np.load(path)
    out = np.concatenate(
        [
            np.array(cm.encode_queries(texts[i : i + 64], batch_size=32).astype(mx.float32))
            for i in range(0, len(texts), 64)
        ]
    )
    np.save(path, out)
    return out


def doc_of_chunk(col: Collection) -> dict[int, str]:
    return {c.id: d.name for d in col.list_documents() for c in col.document_chunks(d.id)}


def first_hit(ranked_docs: list[str], gold: str, depth: int = 20) -> int | None:
    """1-based rank of the first chunk of the gold document, within `depth`."""
    for i, name in enumerate(ranked_docs[:depth], start=1):
        if name == gold:
            return i
    return None


def metrics(firsts: list[int | None]) -> dict[str, float]:
    n = max(1, len(firsts))
    return {
        "R@1": 100 * sum(f == 1 for f in firsts) / n,
        "R@5": 100 * sum(f is not None and f <= 5 for f in firsts) / n,
        "MRR": sum(1 / f for f in firsts if f is not None) / n,
    }


def candidates(col: Collection, texts: list[str], vecs: np.ndarray, depth: int, rerank: int = 0):
    """Per question: (dense chunk ids, lexical chunk ids or None), `depth` of each."""
    out = []
    for text, vec in zip(texts, vecs):
        dense = [h.chunk_id for h in col.search(vec, depth, rerank)[0]]
        lexical = col.search_lexical(text, depth)
        out.append((dense, None if lexical is None else [i for i, _ in lexical]))
    return out


def fused_firsts(cands, golds, chunk_doc, k: float, weights: dict[str, float]) -> list:
    """The hybrid ranking Collection.retrieve makes, computed from the candidate lists."""
    firsts = []
    for (dense, lexical), gold in zip(cands, golds):
        rankings = {"dense": dense} if lexical is None else {"dense": dense, "lexical": lexical}
        order = [f.id for f in reciprocal_rank_fusion(rankings, k, weights)]
        firsts.append(first_hit([chunk_doc[i] for i in order], gold))
    return firsts


def run_modes(
    cols: list[Collection], texts, golds, vecs, fusion: Fusion, rerank: int = 0
) -> list[list]:
    """The real path: the question searched per mode in `cols` (one collection, or several
    searched as one: `retrieve_from`, which is `Collection.retrieve` for one); quality and
    latency."""
    rows, searched = [], [(c, None) for c in cols]
    for mode in RETRIEVAL_MODES:
        retrieve_from(searched, texts[0], vecs[0], 20, mode, fusion, rerank)  # warm-up
        firsts, times = [], []
        for text, vec, gold in zip(texts, vecs, golds):
            t = time.perf_counter()
            hits = retrieve_from(searched, text, vec, 20, mode, fusion, rerank)
            times.append(1000 * (time.perf_counter() - t))
            firsts.append(first_hit([h.doc_name for h in hits], gold))
        m = metrics(firsts)
        p50, p99 = np.percentile(times, 50), np.percentile(times, 99)
        rows.append([mode, len(texts), f"{m['R@1']:.1f}", f"{m['R@5']:.1f}", f"{m['MRR']:.3f}",
                     f"{p50:.1f}", f"{p99:.1f}"])  # fmt: skip
    return rows


def split_collections(index: Path, col: Collection, n: int, manifest: dict) -> list[Collection]:
    """`col`'s documents dealt round-robin (by name) into n collections "<name>-part<i>of<n>",
    copied with their chunks and memories (made once: a part holding its share is kept),
    opened read-only."""
    docs = sorted(col.list_documents(), key=lambda d: d.name)
    parts = []
    for i in range(n):
        name = f"{col.name}-part{i + 1}of{n}"
        share = docs[i::n]
        with Collection.open(index, name, manifest, create=True) as part:
            if part.stats()["documents"] != len(share):
                for d in part.list_documents():
                    part.remove_document(d.id)
                for d in share:
                    chunks = col.document_chunks(d.id)
                    records = [
                        ChunkRecord(c.text, c.page_start, c.page_end, c.n_tokens, c.context)
                        for c in chunks
                    ]
                    part.add_document(
                        d.path, d.name, d.sha256, records, col.memories([c.id for c in chunks]),
                        size=d.size, mtime=d.mtime, n_pages=d.n_pages,
                    )  # fmt: skip
        parts.append(Collection.open(index, name, manifest, readonly=True))
    return parts


def tune(col, texts, golds, vecs, chunk_doc, rerank: int = 0) -> tuple[Fusion, list[list]]:
    """Grid over k and the dense weight (lexical weight 1): best mean of R@1 and R@5."""
    cands = candidates(col, texts, vecs, Fusion().depth, rerank)
    results = []
    for k in (1, 5, 10, 20, 40, 60, 100):
        for wd in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0):
            m = metrics(fused_firsts(cands, golds, chunk_doc, k, {"dense": wd, "lexical": 1.0}))
            results.append((m["R@1"] + m["R@5"], k, wd, m))
    results.sort(key=lambda r: (-r[0], -r[1]))
    best = results[0]
    rows = [[k, wd, f"{m['R@1']:.1f}", f"{m['R@5']:.1f}", f"{m['MRR']:.3f}"]
            for _, k, wd, m in results[:8]]  # fmt: skip
    dense_only = metrics(
        [first_hit([chunk_doc[i] for i in d], g) for (d, _), g in zip(cands, golds)]
    )
    lex_only = metrics(
        [first_hit([chunk_doc[i] for i in (x if x is not None else d)], g)
         for (d, x), g in zip(cands, golds)]
    )  # fmt: skip
    for name, m in (("dense only", dense_only), ("lexical only", lex_only)):
        rows.append([name, "-", f"{m['R@1']:.1f}", f"{m['R@5']:.1f}", f"{m['MRR']:.3f}"])
    return Fusion(k=float(best[1]), weights={"dense": best[2], "lexical": 1.0}), rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cache = paths.home() / "bench-retrieval"
    p.add_argument(
        "--cache", type=Path, default=cache,
        help=f"folder for the sets' files, their index and the query vectors (default: "
        f"$CLARA_HOME/bench-retrieval, here {cache})",
    )  # fmt: skip
    p.add_argument(
        "--sets", nargs="+", choices=SETS, default=list(SETS),
        help="document sets to index and ask (default: both; apple needs Apple's ml-clara "
        "example data, found through CLARA_EXAMPLE_DATA)",
    )  # fmt: skip
    p.add_argument(
        "--batch-size", type=int, default=8,
        help="clara-index add's --batch-size while building (default: 8)",
    )  # fmt: skip
    p.add_argument(
        "--build-only", action="store_true", help="index the sets, ask no questions, append nothing"
    )
    p.add_argument("--tune", action="store_true", help="grid-search k / dense weight on the "
                   "apple TRAIN-split questions (every 8th) and use the best for the table")  # fmt: skip
    add_no_append(p)
    p.add_argument(
        "--no-build",
        action="store_true",
        help="ask only about the documents already indexed in --cache (a partial index: the "
        "table says how many of the set's documents it holds)",
    )
    p.add_argument(
        "--split", type=int, default=1, metavar="N",
        help="also ask each set's questions of its documents dealt into N collections "
        "searched as one, beside the one collection (default: 1, not)",
    )  # fmt: skip
    p.add_argument(
        "--dense-scoring", choices=DENSE_SCORINGS,
        help="rank the dense side this way instead of as the checkpoint says",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be 1 or more")
    if args.split < 1:
        p.error("--split must be 1 or more")
    start_run()
    if args.no_build:
        questions = {which: write_set(which, args.cache / which) for which in args.sets}
    else:
        questions = {which: build(args.cache, which, args.batch_size) for which in args.sets}
    if args.build_only:
        return 0
    from clara.checkpoint import load_clara

    cm = load_clara("smollm2-135m", None)
    if args.dense_scoring:
        cm.config.dense_scoring = args.dense_scoring
    rerank = cm.config.dense_rerank
    fusion, tuning = Fusion(), None
    index = args.cache / "index"
    if args.tune:
        with open_collection(index, "apple", cm.manifest()) as col:
            train = [(apple_name(n), q) for n, q in apple_train_questions()][::8]
            vecs = encode(cm, args.cache, "apple-train", [q for _, q in train])
            indexed = {d.name for d in col.list_documents()}
            keep = [i for i, (g, _) in enumerate(train) if g in indexed]
            texts, golds = [train[i][1] for i in keep], [train[i][0] for i in keep]
            fusion, tuning = tune(col, texts, golds, vecs[keep], doc_of_chunk(col), rerank)
    rows = []
    partial = []
    for which, qs in questions.items():
        all_texts = [q for _, q in qs]
        all_vecs = encode(cm, args.cache, which, all_texts)
        with open_collection(index, which, cm.manifest()) as col:
            stats = col.stats()
            indexed = {d.name for d in col.list_documents()}
            keep = [i for i, (g, _) in enumerate(qs) if g in indexed]
            if len(keep) < len(qs):
                partial.append(f"{which}: {len(indexed)} documents indexed, {len(keep)} of "
                               f"{len(qs)} questions asked")  # fmt: skip
            texts, golds = [all_texts[i] for i in keep], [qs[i][0] for i in keep]
            vecs = all_vecs[keep]
            for row in run_modes([col], texts, golds, vecs, fusion, rerank):
                rows.append([which, 1, stats["documents"], stats["chunks"], *row])
            if args.split > 1:
                parts = split_collections(index, col, args.split, cm.manifest())
                try:
                    for row in run_modes(parts, texts, golds, vecs, fusion, rerank):
                        rows.append([which, args.split, stats["documents"], stats["chunks"], *row])
                finally:
                    for part in parts:
                        part.close()
    headers = ["set", "collections", "docs", "chunks", "mode", "questions", "R@1", "R@5",
               "MRR@20", "p50 ms", "p99 ms"]  # fmt: skip
    body = markdown_table(headers, rows)
    body += (
        f"\n\nFusion used: k={fusion.k:g}, weights {dict(fusion.weights)}, depth {fusion.depth}."
        + (
            f" Dense: FAISS's {rerank} nearest re-scored by MaxSim."
            if rerank
            else " Dense: the flattened cosine."
        )
    )
    if tuning is not None:
        body += (
            "\n\nTuning (apple TRAIN-split questions, every 8th whose document is indexed; "
            "never the held-out ones):\n\n"
        )
        body += markdown_table(["k", "dense weight", "R@1", "R@5", "MRR@20"], tuning)
    if partial:
        body += "\n\nPARTIAL INDEX (the build did not finish): " + "; ".join(partial) + "."
    notes = (
        "A hit is any chunk of the question's own document. apple: all 1000 documents indexed, "
        "the held-out questions (documents on 0-based lines % 5 == 0). pydoc: Python's "
        "documentation topics up to 9000 characters, 70 hand-written questions naming their "
        "topic. Latency: Collection.retrieve (k=20) with the question already encoded, "
        "one question at a time; the default model (smollm2-135m + shipped adapters)."
        + (
            f" collections {args.split}: the set's documents dealt round-robin into "
            f"{args.split} collections searched as one (retrieve_from: each term's BM25 "
            "reweighed by its rarity over all of them), the same chunks and memories as the "
            "one collection's."
            if args.split > 1
            else ""
        )
    )
    if args.no_append:
        print(body)
    else:
        append_report(
            "Retrieval: dense vs lexical vs hybrid (bench/bench_retrieval.py)", body, notes
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
