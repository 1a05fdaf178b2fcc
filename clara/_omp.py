"""Two OpenMP runtimes on macOS: faiss-cpu's and torch's wheels each bundle a `libomp.dylib`,
and the second one loaded aborts the process ("OMP: Error #15", faiss-wheels issue 73), or,
let through, may crash faiss's parallel search. clara needs no torch, but a development install
has it (the reference tests; transformers then imports it whenever a tokenizer loads). There,
and only on macOS, the second runtime is let through and faiss searches on one thread, as
other projects that load both do. Elsewhere nothing changes."""

from __future__ import annotations

import importlib.util
import os
import sys

#: Whether both runtimes may be loaded in this process (macOS with torch installed).
TWO_RUNTIMES = False


def enable() -> None:
    global TWO_RUNTIMES
    if sys.platform != "darwin" or importlib.util.find_spec("torch") is None:
        return
    TWO_RUNTIMES = True
    os.environ.setdefault("KMP_DUPLICATE_LIB_OK", "TRUE")


def settle_faiss(faiss) -> None:
    """Right after `import faiss`: one OpenMP thread where two runtimes may be loaded."""
    if TWO_RUNTIMES:
        faiss.omp_set_num_threads(1)
