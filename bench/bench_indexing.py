"""Indexing throughput end to end (read -> chunk -> compress -> commit) through `indexing.pipeline`,
the code `clara-index add` runs, on the default model at compressor forward-pass batch sizes
1, 4 and 8 (`CLARA_COMPRESS_BATCH`; `clara-index add` uses `clara.model.compress_batch()`).

Corpus: Python's documentation topics (`pydoc_data.topics`, on every machine) written as .txt
files, taken in sorted order until about `--chunks` chunks. Each batch size indexes the same
files into a fresh collection. Also reports the time split between stages, disk use per 1k
chunks (memory file, FAISS, SQLite) and the RAM a flat FAISS index needs per 1k chunks.
`--lanes 1,2` also compares CPU lanes (`CLARA_CPU_LANES`: compressor passes side by side on
the cores, clara/lanes.py), alternating in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import clara  # noqa: F401  preloads OpenBLAS before mlx
import mlx.core as mx

from bench._common import (
    add_no_append,
    append_report,
    markdown_table,
    peak_rss_bytes,
    rss_bytes,
    start_run,
)
from clara import lanes
from clara.checkpoint import load_clara
from indexing import pipeline
from indexing.chunking import chunk_document
from indexing.pipeline import FileResult, Indexer, IndexOptions
from indexing.readers import read_document
from indexing.store import Collection


def rss_mib() -> float:
    return rss_bytes() / 2**20


def write_corpus(folder: Path, cm, want_chunks: int, overlap: int) -> tuple[list[Path], int]:
    """Topic files in sorted order until about `want_chunks` chunks (as the pipeline cuts them)."""
    from pydoc_data.topics import topics

    paths, total = [], 0
    for name in sorted(topics):
        path = folder / f"{name}.txt"
        path.write_text(topics[name], encoding="utf-8")
        n = len(
            chunk_document(read_document(path), cm.tokenizer, cm.config.doc_max_tokens, overlap)
        )
        if total and total + n > want_chunks * 1.1:
            path.unlink()
            continue
        paths.append(path)
        total += n
        if total >= want_chunks:
            break
    return paths, total


class Timed:
    """Wraps a function and adds up the seconds spent in it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def index_once(cm, paths: list[Path], root: Path, batch_size: int, overlap: int) -> dict:
    col = Collection.open(root, "bench", pipeline.model_manifest(cm), create=True)
    compress = pipeline.compress = Timed(pipeline.compress)  # what Indexer.run calls
    col.add_document = Timed(col.add_document)
    rss0 = rss_mib()
    start = time.perf_counter()
    results = [
        e
        for e in Indexer(cm, col, IndexOptions(None, overlap, batch_size)).run(paths)
        if isinstance(e, FileResult)
    ]
    seconds = time.perf_counter() - start
    rss1 = rss_mib()
    commit_s = col.add_document.seconds
    pipeline.compress = compress.fn
    stats = col.stats()
    col.close()
    failed = [r for r in results if r.status != "added"]
    if failed:  # a file skipped or failed would make chunks/s describe another corpus
        raise RuntimeError(
            f"{len(failed)} of {len(results)} files were not added: "
            + "; ".join(
                f"{r.path.name}: {r.status} {r.error or r.detail}".rstrip() for r in failed[:5]
            )
        )
    files = stats["files"]
    return {
        "chunks": stats["chunks"],
        "seconds": seconds,
        "compress_s": compress.seconds,
        "commit_s": commit_s,
        "read_chunk_s": seconds - compress.seconds - commit_s,
        "rss_growth_mib": rss1 - rss0,
        "dim": stats["dim"],
        "disk": {
            "memory": sum(v for k, v in files.items() if k.startswith("memory-")),
            "faiss": sum(v for k, v in files.items() if k.startswith("faiss-")),
            "sqlite": sum(v for k, v in files.items() if k.startswith("meta.sqlite")),
            "total": stats["bytes_on_disk"],
        },
    }


def run_baseline(args) -> dict[int, dict] | None:
    """The same measurement with clara's CPU attention, RoPE, RMSNorm, native JIT flags and
    lanes off (a child process: the flags are fixed at import; its own MLX JIT cache, so no
    native kernel)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "baseline.json"
        env = {**os.environ, "CLARA_JIT_NATIVE": "off", "CLARA_CPU_ATTENTION": "off",
               "CLARA_CPU_ROPE": "off", "CLARA_CPU_NORM": "off", "CLARA_CPU_LANES": "1",
               "TMPDIR": tmp}  # fmt: skip
        cmd = [sys.executable, __file__, "--model", args.model, "--dtype", args.dtype,
               "--chunks", str(args.chunks), "--batch-sizes", args.batch_sizes,
               "--overlap", str(args.overlap), "--json", str(out)]  # fmt: skip
        if args.checkpoint:
            cmd += ["--checkpoint", args.checkpoint]
        done = subprocess.run(cmd, env=env)
        if done.returncode or not out.exists():
            print("baseline run failed: skipped", file=sys.stderr)
            return None
        return {int(k): v for k, v in json.loads(out.read_text()).items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="smollm2-135m", help="base model (default: smollm2-135m)")
    p.add_argument(
        "--checkpoint", default=None,
        help="CLaRa adapters (default: the shipped ones for the default model)",
    )  # fmt: skip
    p.add_argument(
        "--dtype", default="auto", help="weights' dtype, as clara-index add's (default: auto)"
    )
    p.add_argument("--chunks", type=int, default=32, help="corpus size in chunks (default 32)")
    p.add_argument(
        "--batch-sizes", default="1,4,8",
        help="compressor forward-pass batch sizes to compare (CLARA_COMPRESS_BATCH; "
        "default: 1,4,8)",
    )  # fmt: skip
    p.add_argument(
        "--overlap", type=int, default=32, help="tokens shared by neighbouring chunks (default: 32)"
    )
    add_no_append(p)
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also index with clara's CPU paths off (CLARA_JIT_NATIVE, CLARA_CPU_ATTENTION, "
        "CLARA_CPU_ROPE, CLARA_CPU_NORM off, one lane, a fresh MLX JIT cache), in a child process "
        "before the main run: a before/after",
    )
    p.add_argument(
        "--lanes",
        default="",
        help="CLARA_CPU_LANES values to compare, e.g. 1,2 (default: the machine's default only)",
    )
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)  # a child's results
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or args.chunks < 1 or args.overlap < 0:
        p.error("--batch-sizes: counts of 1 or more; --chunks 1 or more; --overlap 0 or more")
    if not args.json:  # (a --baseline child: its parent warns)
        start_run()
    baseline = run_baseline(args) if args.baseline else None
    batch_sizes = sizes
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    cm = load_clara(args.model, args.checkpoint, dtype=args.dtype)
    # packed as clara-index add does (CLARA_PACK_GB=0: none)
    packed = cm.pack_base_weights(compressor=True)
    load_s = time.perf_counter() - t0
    mx.eval(cm.compress(["warm-up"] * max(batch_sizes), batch_size=max(batch_sizes)))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "corpus"
        folder.mkdir()
        paths, n_chunks = write_corpus(folder, cm, args.chunks, args.overlap)
        corpus_bytes = sum(f.stat().st_size for f in paths)
        runs, by_lanes = {}, {}
        lane_values = [int(x) for x in args.lanes.split(",") if x.strip()] or [None]
        for bs in batch_sizes:
            os.environ["CLARA_COMPRESS_BATCH"] = str(bs)  # chunks per forward pass
            for n in lane_values:
                if n is not None:
                    os.environ["CLARA_CPU_LANES"] = str(n)
                r = index_once(cm, paths, Path(tmp) / f"index-bs{bs}-{n}", 8, args.overlap)
                by_lanes[(n or lanes.count(), bs)] = runs[bs] = r
                print(
                    f"batch {bs}, lanes {n or lanes.count()}: "
                    f"{r['chunks'] / r['seconds']:.2f} chunks/s",
                    flush=True,
                )
    load_after = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in runs.items()}))
        return 0

    rows = []
    labelled = [(f"on, {n} lane(s)", bs, r) for (n, bs), r in by_lanes.items()]
    if baseline:
        labelled = [("off (before)", bs, r) for bs, r in baseline.items()] + labelled
    for paths_on, bs, r in labelled:
        rows.append([
            paths_on, bs, r["chunks"], f"{r['seconds']:.1f}", f"**{r['chunks'] / r['seconds']:.2f}**",
            f"{r['chunks'] / r['compress_s']:.2f}",
            f"{r['compress_s'] / r['seconds']:.0%}", f"{r['commit_s'] * 1000 / len(paths):.0f}",
            f"{r['read_chunk_s']:.2f}",
        ])  # fmt: skip
    table = markdown_table(
        ["clara CPU paths", "batch", "chunks", "seconds", "chunks/s (end to end)",
         "compressor chunks/s", "compressing",
         "commit ms/doc", "read+chunk s"],
        rows,
    )  # fmt: skip
    r = runs[batch_sizes[-1]]
    per_k = 1000 / r["chunks"]
    mib = 2**20
    disk = markdown_table(
        ["per 1k chunks", "MiB"],
        [
            ["memory file (float16)", f"{r['disk']['memory'] * per_k / mib:.1f}"],
            ["FAISS (flat, float32)", f"{r['disk']['faiss'] * per_k / mib:.1f}"],
            ["meta.sqlite (+WAL, chunk text)", f"{r['disk']['sqlite'] * per_k / mib:.1f}"],
            ["disk total", f"{r['disk']['total'] * per_k / mib:.1f}"],
            ["RAM to search it: FAISS flat index (n_mem x d x 4 B per chunk)",
             f"{r['dim'] * 4 * 1000 / mib:.1f}"],
        ],
    )  # fmt: skip
    peak = peak_rss_bytes() / 2**20
    body = (
        f"{table}\n\n{disk}\n\nCorpus: {len(paths)} pydoc topic files, {corpus_bytes / 1024:.0f} KiB, "
        f"{n_chunks} chunks of <= {cm.config.doc_max_tokens} tokens (overlap {args.overlap}); "
        f"indexing RSS growth {max(x['rss_growth_mib'] for x in runs.values()):.0f} MiB "
        "(mostly MLX buffers at this size); "
        f"model {args.model} (dtype {cm.info.extras.get('dtype')}, n_mem {cm.n_mem} x d "
        f"{cm.hidden_size}), loaded in {load_s:.1f}s (not counted); base weights packed "
        f"for the compressor: {packed} (CLARA_PACK_GB=0: none); peak process RSS "
        f"{peak:.0f} MiB."
    )
    notes = (
        f"Load average before {load_before[0]:.2f}/{load_before[1]:.2f}, after "
        f"{load_after[0]:.2f}/{load_after[1]:.2f} (1/5 min): the machine is shared with other "
        "work, so chunks/s is noisy and likely pessimistic. 'compressing' is the share of wall "
        "time inside the compressor; batches span documents. Disk and RAM are from the last "
        "batch size's collection (the same chunks each time)."
    )
    title = (
        f"Indexing throughput, clara-index add pipeline ({args.model}, batch {args.batch_sizes})"
    )
    if baseline:
        notes += (
            " 'clara CPU paths off (before)': the same pipeline in a child process with "
            "CLARA_JIT_NATIVE, CLARA_CPU_ATTENTION, CLARA_CPU_ROPE and CLARA_CPU_NORM off and "
            "CLARA_CPU_LANES=1 (mlx-lm's attention, MLX's RoPE and RMSNorm graphs, MLX's JIT "
            "kernels for baseline x86-64, one pass at a time), run first."
        )
    if args.no_append:
        print(body + "\n\n" + notes)
    else:
        append_report(title, body, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
