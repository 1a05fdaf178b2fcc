"""Index benchmark: search latency and ANN recall at 10k / 100k / 1M vectors, add throughput,
disk and RAM per 1k chunks.

Part 1 (FAISS, as the store builds it: `VectorIndex.build`) on synthetic CLUSTERED vectors
(points = centre + noise, 100 points per centre; queries drawn the same way). Exact search is
IndexFlatIP; recall@10 of IVF / HNSW is measured against it on the same queries. One i.i.d.
Gaussian row shows the unstructured worst case.

Dimensions: the default model stores n_mem*d = 16*576 = 9216 dims per chunk. That is used up
to 100k vectors (a flat float32 index of 100k is 3.7 GB). At 1M it would be 37 GB of float32
index plus 18 GB of float16 memory file, more than this 24 GiB machine, so 1M uses 1152 dims:
the same base model at compression rate 128 (n_mem=2, d=576), a real supported config.

Part 3 (`Collection.retrieve`, what every surface calls): hybrid / dense / lexical latency over
100k chunks of real text (Python's documentation topics, cycled) with synthetic vectors and
the default index type (IVF from 50k); the issue's target is hybrid p50 < 60 ms.

Part 2 (the whole `Collection`) at the default shape (16 x 576): documents of 20 chunks added
one commit each (fsync'd memory rows + SQLite + FAISS save), end-to-end search latency (FAISS +
SQLite join), disk bytes per file and reader RAM per 1k chunks.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import clara  # noqa: F401  preloads OpenBLAS before anything else
import faiss
import numpy as np

from bench._common import add_no_append, append_report, markdown_table, rss_bytes, start_run
from indexing import vectors
from indexing.store import ChunkRecord, Collection
from clara.retrieval import flatten_normalize
from indexing.vectors import VectorIndex

SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
KINDS = ("flat", "ivf", "hnsw")  # the FAISS index kinds bench_size describes
DIMS = {"10k": 9216, "100k": 9216, "1m": 1152}


def synthetic(n: int, dim: int, seed: int, clustered: bool, centres: np.ndarray | None = None):
    """(n, dim) float16 (like the memory file): centre + N(0,1) noise, or plain N(0,1)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float16)
    for start in range(0, n, 8192):
        m = min(8192, n - start)
        x = rng.standard_normal((m, dim), dtype=np.float32)
        if clustered:
            x += centres[rng.integers(0, len(centres), m)]
        out[start : start + m] = x
    return out


def latency_ms(
    index: VectorIndex, queries: np.ndarray, budget_s: float
) -> tuple[float, float, int]:
    """Single-query search times (k=10): p50, p99, number of queries timed."""
    index.search(queries[:1], 10)  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        index.search(q[None], 10)
        times.append(time.perf_counter() - t)
        if len(times) >= 10 and time.perf_counter() - start > budget_s:
            break
    arr = np.array(times) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), len(arr)


def bench_size(label: str, n: int, dim: int, kinds: list[str], args, clustered=True) -> list[list]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(1, n // 100), dim), dtype=np.float32) if clustered else None
    t = time.perf_counter()
    data = synthetic(n, dim, 1, clustered, centres)
    queries = flatten_normalize(synthetic(args.queries, dim, 2, clustered, centres))
    print(f"[{label}] generated {n} x {dim} in {time.perf_counter() - t:.1f}s", flush=True)
    ids = np.arange(1, n + 1, dtype=np.int64)

    def fetch(pos: np.ndarray) -> np.ndarray:
        return flatten_normalize(data[pos])

    rows, truth = [], None
    for kind in kinds:
        before = rss_bytes()
        t = time.perf_counter()
        index = VectorIndex.build(kind, dim, ids, fetch)
        build_s = time.perf_counter() - t
        ram = rss_bytes() - before
        _, found = index.search(queries, 10)  # batched: (Q, 10)
        if kind == "flat":
            truth = found
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
        p50, p99, n_lat = latency_ms(index, queries, args.latency_budget)
        params = {
            "flat": "exact",
            "ivf": f"nlist {getattr(index.inner, 'nlist', 0)}, nprobe "
            f"{getattr(index.inner, 'nprobe', 0)}",
            "hnsw": f"M {vectors.HNSW_M}, efC {vectors.HNSW_EF_CONSTRUCTION}, "
            f"efS {vectors.HNSW_EF_SEARCH}",
        }[kind]
        data_kind = "clustered" if clustered else "iid gaussian"
        rows.append(
            [f"{n:,}", dim, data_kind, kind, params, f"{build_s:.1f}", f"{n / build_s:,.0f}"]
            + [f"{p50:.2f}", f"{p99:.2f}", n_lat, f"{recall:.3f}", f"{ram / 2**20:,.0f}"]
        )
        print(f"[{label}] {rows[-1]}", flush=True)
        del index
    return rows


def bench_store(n_chunks: int, chunk_len: int, root: Path) -> tuple[str, str]:
    """The whole Collection at the default model's shape."""
    n_mem, d, per_doc = 16, 576, 20
    manifest = {"fingerprint": "bench", "n_mem": n_mem, "hidden_size": d}
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(1, n_chunks // 100), n_mem * d), dtype=np.float32)
    data = synthetic(n_chunks, n_mem * d, 1, True, centres).reshape(-1, n_mem, d)
    text = ("lorem ipsum dolor sit amet " * (chunk_len // 27 + 1))[:chunk_len]
    col = Collection.open(root, "bench", manifest=manifest, create=True, index_type="flat")
    commit_times = []
    t0 = time.perf_counter()
    for start in range(0, n_chunks, per_doc):
        part = data[start : start + per_doc]
        chunks = [ChunkRecord(text, 1, 1, 256) for _ in part]
        t = time.perf_counter()
        col.add_document(None, f"doc{start}", f"sha{start}", chunks, part)
        commit_times.append(time.perf_counter() - t)
    add_s = time.perf_counter() - t0
    col.close()
    files = Collection.open(root, "bench", readonly=True).stats()["files"]
    before = rss_bytes()
    reader = Collection.open(root, "bench", readonly=True)
    queries = synthetic(200, n_mem * d, 2, True, centres).reshape(-1, n_mem, d)
    reader.search(queries[0], k=5)
    lat = []
    for q in queries:
        t = time.perf_counter()
        reader.search(q, k=5)
        lat.append((time.perf_counter() - t) * 1000)
    reader_ram = rss_bytes() - before
    per_k = 1000 / n_chunks

    def group(prefix: str) -> int:
        return sum(v for k, v in files.items() if k.startswith(prefix))

    rows = [
        [
            "add throughput",
            f"{n_chunks / add_s:,.0f} chunks/s ({len(commit_times)} commits of "
            f"{per_doc} chunks, median commit {np.median(commit_times) * 1000:.0f} ms)",
        ],
        [
            "search p50 / p99 (k=5, FAISS + SQLite)",
            f"{np.percentile(lat, 50):.2f} / {np.percentile(lat, 99):.2f} ms",
        ],
        ["disk: memory file (float16)", f"{group('memory-') * per_k / 2**20:.1f} MiB / 1k chunks"],
        [
            "disk: FAISS file (float32 flat)",
            f"{group('faiss-') * per_k / 2**20:.1f} MiB / 1k chunks",
        ],
        [
            f"disk: meta.sqlite (+WAL), {chunk_len} chars/chunk",
            f"{group('meta.sqlite') * per_k / 2**20:.2f} MiB / 1k chunks",
        ],
        ["disk: total", f"{sum(files.values()) * per_k / 2**20:.1f} MiB / 1k chunks"],
        [
            "RAM: reader (RSS after open + search)",
            f"{reader_ram * per_k / 2**20:.1f} MiB / 1k chunks",
        ],
    ]
    reader.close()
    title = f"{n_chunks:,} chunks, 16 x 576 = 9216 dims (default model), index_type flat"
    return title, markdown_table(["Collection", "value"], rows)


def chunk_texts(n: int, chars: int = 1000) -> list[str]:
    """n chunk texts cut from Python's documentation topics (cycled, each with its own id)."""
    from bench._common import sample_texts

    pieces = []
    for topic in sample_texts():
        for start in range(0, len(topic), chars):
            if piece := topic[start : start + chars].strip():
                pieces.append(piece)
    return [f"{pieces[i % len(pieces)]} (part {i})" for i in range(n)]


def bench_hybrid(n_chunks: int, root: Path, queries: int = 200) -> tuple[str, str]:
    """Collection.retrieve at the default shape over `n_chunks` real-text chunks (synthetic
    clustered vectors, index_type auto: IVF from 50k): latency per mode. A collection of that
    size already under `root` (--keep) is reused."""
    from bench.retrieval_sets import PYDOC_QUESTIONS
    from clara.retrieval import RETRIEVAL_MODES

    n_mem, d, per_commit = 16, 576, 2000
    manifest = {"fingerprint": "bench", "n_mem": n_mem, "hidden_size": d}
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(1, n_chunks // 100), n_mem * d), dtype=np.float32)
    texts = chunk_texts(n_chunks)
    t0 = time.perf_counter()
    with Collection.open(root, "hybrid", manifest=manifest, create=True) as col:
        done = col.stats()["chunks"]
        if done not in (0, n_chunks):
            raise SystemExit(f"{root}/hybrid holds {done} chunks, not {n_chunks}: delete it")
        for start in range(done, n_chunks, per_commit):
            m = min(per_commit, n_chunks - start)
            part = synthetic(m, n_mem * d, 10 + start, True, centres).reshape(-1, n_mem, d)
            records = [ChunkRecord(t, 1, 1, 256) for t in texts[start : start + m]]
            col.add_document(None, f"doc{start}", f"sha{start}", records, part)
    build_s = time.perf_counter() - t0
    built = f"built in {build_s:.0f}s" if not done else "reused from --keep"
    reader = Collection.open(root, "hybrid", readonly=True)
    vecs = synthetic(queries, n_mem * d, 2, True, centres).reshape(-1, n_mem, d)
    asks = [q for _, q in PYDOC_QUESTIONS]
    rows = []
    for mode in RETRIEVAL_MODES:
        reader.retrieve(asks[0], vecs[0], 5, mode)  # warm-up
        lat = []
        for i, vec in enumerate(vecs):
            t = time.perf_counter()
            reader.retrieve(asks[i % len(asks)], vec, 5, mode)
            lat.append((time.perf_counter() - t) * 1000)
        rows.append([mode, f"{np.percentile(lat, 50):.1f}", f"{np.percentile(lat, 99):.1f}",
                     len(lat)])  # fmt: skip
    stats = reader.stats()
    reader.close()
    title = (
        f"{n_chunks:,} chunks of Python-docs text (~1000 chars), 16 x 576 dims, "
        f"index {stats['index_kind']} (auto), {built}"
    )
    return title, markdown_table(["mode (k=5)", "p50 ms", "p99 ms", "queries"], rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="10k,100k,1m", help="comma list of 10k, 100k, 1m ('': none)")
    p.add_argument("--dims", default="", help="override dims, e.g. '1m=512,100k=4608'")
    p.add_argument(
        "--types",
        default="flat,ivf,hnsw",
        help="index kinds to compare: flat, ivf, hnsw (flat always runs)",
    )
    p.add_argument(
        "--hnsw-max",
        type=int,
        default=10_000,
        help="build HNSW only up to this many vectors (slow to build at 9216 dims)",
    )
    p.add_argument("--queries", type=int, default=200, help="queries for recall")
    p.add_argument(
        "--latency-budget",
        type=float,
        default=10.0,
        help="seconds per index for single-query timing (at least 10 queries)",
    )
    p.add_argument("--no-iid", action="store_true", help="skip the 10k i.i.d. Gaussian rows")
    p.add_argument(
        "--iid-hnsw", action="store_true", help="HNSW on i.i.d. data too (~2 min more to build)"
    )
    p.add_argument("--store-chunks", type=int, default=2000, help="Collection part; 0 skips")
    p.add_argument(
        "--chunk-chars", type=int, default=1000,
        help="characters of text per chunk in the Collection part (SQLite's share of the disk; "
        "default: 1000)",
    )  # fmt: skip
    p.add_argument(
        "--hybrid-chunks", type=int, default=100_000,
        help="Collection.retrieve latency per mode (hybrid/dense/lexical) at this size; 0 skips",
    )  # fmt: skip
    p.add_argument("--keep", default=None, metavar="DIR",
                   help="build that collection in DIR and reuse it on later runs")  # fmt: skip
    p.add_argument("--tmp", default=None, help="folder for the Collection part (on real disk)")
    add_no_append(p)
    args = p.parse_args(argv)
    # every input checked before minutes of vector generation
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    if bad := [s for s in sizes if s not in SIZES]:
        p.error(f"--sizes: unknown {bad}; choose from {', '.join(SIZES)}")
    dims = dict(DIMS)
    for item in filter(None, args.dims.split(",")):
        key, _, value = item.partition("=")
        if key.strip().lower() not in SIZES or not value.strip().isdigit() or not int(value):
            p.error(f"--dims: {item!r} is not SIZE=DIMS with SIZE one of {', '.join(SIZES)}")
        dims[key.strip().lower()] = int(value)
    kinds = [k.strip() for k in args.types.split(",") if k.strip()]
    if bad := [k for k in kinds if k not in KINDS]:
        p.error(f"--types: unknown {bad}; choose from {', '.join(KINDS)}")
    if args.queries < 1 or args.latency_budget <= 0 or args.chunk_chars < 1:
        p.error("--queries and --chunk-chars must be 1 or more, --latency-budget above 0")
    if args.store_chunks < 0 or args.hybrid_chunks < 0:
        p.error("--store-chunks and --hybrid-chunks take a count, or 0 to skip that part")
    if not (sizes or args.store_chunks or args.hybrid_chunks):
        p.error("nothing to measure: --sizes is empty and --store-chunks and --hybrid-chunks are 0")
    start_run()
    if "flat" not in kinds:
        kinds.insert(0, "flat")  # recall needs the exact answer

    t0 = time.perf_counter()
    rows = []
    for label in sizes:
        n = SIZES[label]
        use = [k for k in kinds if k != "hnsw" or n <= args.hnsw_max]
        rows += bench_size(label, n, dims[label], use, args)
        if label == "10k" and not args.no_iid:
            iid = [k for k in use if k != "hnsw" or args.iid_hnsw]
            rows += bench_size("10k-iid", n, dims[label], iid, args, clustered=False)
    headers = ["vectors", "dims", "data", "index", "params", "build s", "build vec/s"]
    headers += ["p50 ms", "p99 ms", "timed q", "recall@10", "index RAM MiB"]
    body = ""
    if rows:
        body = "Single-query search (k=10), FAISS as built by the store:\n\n"
        body += markdown_table(headers, rows)
    if args.store_chunks:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            title, table = bench_store(args.store_chunks, args.chunk_chars, Path(tmp))
        body += f"\n\nWhole collection, {title}:\n\n{table}"
    if args.hybrid_chunks and args.keep:
        title, table = bench_hybrid(args.hybrid_chunks, Path(args.keep))
        body += f"\n\nRetrieval modes, {title}:\n\n{table}"
    elif args.hybrid_chunks:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            title, table = bench_hybrid(args.hybrid_chunks, Path(tmp))
        body += f"\n\nRetrieval modes, {title}:\n\n{table}"
    notes = (
        f"faiss {faiss.__version__}, numpy {np.__version__}, {faiss.omp_get_max_threads()} "
        f"OpenMP threads; total bench time {time.perf_counter() - t0:.0f}s. Dims: 9216 = "
        "n_mem 16 x d 576 (default model, 16x); 1M uses 1152 = 2 x 576 (same model at 128x) "
        "because 1M x 9216 float32 is 37 GB. Clustered data: 100 points per centre, noise "
        "as large as the centre spread; queries are fresh points from the same centres. "
        f"'index RAM' is the RSS growth while building. Latency is measured on a "
        f"{os.cpu_count()}-core machine (its load in the machine line); p99 from few samples "
        "(see 'timed q') is rough."
    )
    body = body.lstrip("\n")  # (a run without the FAISS part starts at a later one)
    if args.no_append:
        print(body + "\n\n" + notes)
    else:
        append_report("Index search and storage (bench/bench_search.py)", body, notes)


if __name__ == "__main__":
    main()
