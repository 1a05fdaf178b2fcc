"""Retrieval benchmark: dense vs lexical vs hybrid on two real document sets nobody here wrote.

Both sets (bench/retrieval_sets.py) are written out as files and indexed through the real
`clara-index add` (default model and shipped checkpoint, contextual chunks, full-text table)
into a cache folder outside the repo; `clara-index add` is incremental, so a rerun only
re-asks the questions. A hit is any chunk of the question's document: R@1, R@5, MRR (over the
top 20) per mode, and search latency p50/p99 per mode (Collection.retrieve with the question's
vector already encoded; query encoding is timed separately).

    python bench/bench_retrieval.py --cache /work/cache/clara-retrieval          # build + table
    python bench/bench_retrieval.py --cache DIR --build-only --sets apple        # index only
    python bench/bench_retrieval.py --cache DIR --tune                           # k / weights grid
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import clara  # noqa: F401  preloads OpenBLAS before anything else

from bench.retrieval_sets import write_set

SETS = ("apple", "pydoc")


def build(cache: Path, which: str, batch_size: int) -> list[tuple[str, str]]:
    """Write the set's files and index them with `clara-index add` (skips unchanged files)."""
    from indexing.cli import main as clara_index

    questions = write_set(which, cache / which)
    argv = ["add", str(cache / which), "--index", str(cache / "index"), "--collection", which]
    rc = clara_index([*argv, "--batch-size", str(batch_size), "-q"])
    if rc != 0:
        raise SystemExit(f"clara-index add failed for {which} (exit {rc})")
    return questions


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache/clara/bench-retrieval")
    p.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--build-only", action="store_true")
    args = p.parse_args(argv)
    for which in args.sets:
        build(args.cache, which, args.batch_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
