"""Independent forward passes side by side on the CPU: one MLX stream ("lane") per core.

On MLX's CPU backend every op of a stream runs on that stream's thread, and every op but
the BLAS matmuls runs on one core. A forward pass of a few hundred rows therefore keeps the
second core idle for about 40% of its time (norms, rope, softmax, elementwise ops, the
scheduling of ~1000 small ops), even with the matmuls on all cores. Graphs built on
separate streams are evaluated by separate threads at the same time, so `run` builds each
independent pass on its own lane and evaluates them together, with the matmuls on one
thread per lane. Measured here (2 cores, in one process, alternating): eight 256-token chunks
compress in 0.75x the time of one after the other with two-thread matmuls, and memory prompts
of ~125 positions prefill (`Decoder.add_many`: the requests split into one part per lane) in
0.85x the time of one batched pass for 4 prompts, 0.81x for 8 (bench/bench_burst.py); inside
clara-serve a pass of 2 prompts of 141 positions went from 238 to 189 ms. (An earlier try in the server, when each lane's KV caches were
evaluated with its tokens, made time to first token longer: MLX then took 1.7x as long for
the same work, so only the tokens are asked for.) Small passes do not gain: two
query-adapter passes of ~36 rows took 1.2x as long side by side, and decode steps (a few rows)
are slower split in two, so callers use lanes only for passes of `MIN_ROWS` rows or more
(`worth`).

The arithmetic of each pass does not change: OpenBLAS splits a product by rows and columns,
never along the summed axis, so one thread gives the bits of two (the tests compare).

`CLARA_CPU_LANES=N` sets the number of lanes (default: the cores; 1 turns this off). On a
GPU there is one lane: its kernels already use the whole device.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import mlx.core as mx

from clara import _blas

T = TypeVar("T")
_local = threading.local()  # each thread's streams (MLX streams belong to their thread)


def count() -> int:
    """How many passes `run` evaluates at once."""
    if mx.default_device() != mx.cpu:
        return 1
    return _blas._env_int("CLARA_CPU_LANES") or max(1, os.cpu_count() or 1)


#: Rows (token positions) per pass below which lanes do not pay (measured: see above).
MIN_ROWS = 128


def worth(rows: int) -> int:
    """Lanes for `rows` token positions of independent passes: each lane gets at least
    MIN_ROWS, at most `count()` lanes."""
    return max(1, min(count(), rows // MIN_ROWS))


def splitting() -> bool:
    """True while this thread builds passes that `run` evaluates side by side (a step that
    waits for its inputs, like the fused attention, would make them one after the other)."""
    return getattr(_local, "splitting", False)


def _streams(n: int) -> list[mx.Stream]:
    have: list[mx.Stream] = getattr(_local, "streams", [])
    while len(have) < n:
        have.append(mx.new_stream(mx.cpu))
    _local.streams = have
    return have[:n]


def run(passes: Sequence[Callable[[], T]], width: int | None = None) -> list[T]:
    """Call each of `passes` (each builds an MLX graph and returns its arrays) and evaluate
    the results, `width` (default `count()`) passes at a time, each on its own stream;
    returns the results in order, evaluated. With one lane (or one pass) this is plain
    sequential evaluation on the current stream."""
    lanes = min(count() if width is None else width, len(passes))
    if lanes <= 1:
        out = []
        for build in passes:
            result = build()
            mx.eval(result)
            out.append(result)
        return out
    streams = _streams(lanes)
    threads = _blas.current_threads()
    _blas.set_threads(1)
    _blas.set_thin_threads(1)
    out = []
    _local.splitting = True
    try:
        for start in range(0, len(passes), lanes):
            group = []
            for stream, build in zip(streams, passes[start : start + lanes]):
                with mx.stream(stream):
                    group.append(build())
            mx.eval(group)
            out.extend(group)
    finally:  # back to what was set (never set: OpenBLAS's all cores, the thin kernel's one)
        _local.splitting = False
        _blas.set_threads(threads[0] or os.cpu_count())
        _blas.set_thin_threads(threads[1] or 1)
    return out
