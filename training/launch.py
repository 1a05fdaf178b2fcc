"""Data-parallel ranks on this machine without a launcher process: `clara-train --ranks N`.

MLX's ring backend needs each process to know its rank (`MLX_RANK`) and every rank's address
(`MLX_HOSTFILE`, a JSON list of `["host:port"]`). `mlx.launch` sets both, but then stays in
the foreground relaying the ranks' output, and that relay polls: on a 2-core machine it kept
one core about 100% busy, and two training ranks under it ran at half the speed of two
independent processes (measured with top and bench/bench_train.py). Here the ranks inherit
this terminal's stdout/stderr, and the parent just waits.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

#: Seconds the ranks get, together, to stop after the launcher is stopped (then killed): they
#: finish their step and rank 0 writes a checkpoint, which on a slow machine or with --full
#: (the base weights too) takes a while. A second Ctrl-C/SIGTERM to the launcher passes on
#: to them as theirs (stop at once, after any write in progress) and leaves them
#: HURRY_WAIT_S. A kill cuts a write short atomically: the older checkpoints stay as they were.
STOP_WAIT_S = 120.0
HURRY_WAIT_S = 5.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _free_ports(n: int, tries: int = 50) -> list[int]:
    """`n` consecutive loopback ports that are free now (the ring backend binds them), below
    the ranges Linux (32768+) and macOS (49152+) hand out for outgoing connections, which could
    take one between this check and the ranks' bind."""
    for _ in range(tries):
        start = random.randint(20000, 32000 - n)
        socks = []
        try:
            for port in range(start, start + n):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                socks.append(s)
            return list(range(start, start + n))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise OSError(f"no {n} consecutive free loopback ports found")


def run_ranks(argv: Sequence[str], ranks: int, env: dict[str, str] | None = None) -> int:
    """Run `argv` (a command line) as `ranks` ring-backend ranks on 127.0.0.1; returns 0 when
    every rank exits 0, else the first failing rank's code (the others are then stopped)."""
    ports = _free_ports(ranks)
    fd, hostfile = tempfile.mkstemp(prefix="clara-ranks-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump([[f"127.0.0.1:{p}"] for p in ports], fh)
    base = dict(os.environ if env is None else env)
    procs = []
    interrupted = False
    try:
        for rank in range(ranks):
            e = {**base, "MLX_RANK": str(rank), "MLX_HOSTFILE": hostfile}
            procs.append(subprocess.Popen(list(argv), env=e))
        code = 0
        while procs and any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed:
                code = failed[0]
                break
            time.sleep(0.5)
        if not code:
            code = next((p.returncode for p in procs if p.returncode), 0)
        return code
    except KeyboardInterrupt:
        interrupted = True
        return 130
    finally:
        # a second signal must not cut this short (the ranks would be left running): it
        # hurries them instead. After a rank failed, the others may wait for it in an
        # all_sum for good: they get HURRY_WAIT_S.
        deadline = [time.monotonic() + (STOP_WAIT_S if interrupted else HURRY_WAIT_S)]

        def hurry(signum: int, frame: object) -> None:
            _signal_all(procs)  # (theirs: stop at once, after any checkpoint write)
            deadline[0] = min(deadline[0], time.monotonic() + HURRY_WAIT_S)

        handlers = {sig: signal.signal(sig, hurry) for sig in STOP_SIGNALS}
        _signal_all(procs)  # SIGTERM: ranks stop on it as on Ctrl-C (a SIGINT they may ignore,
        # inherited from a shell that started us in the background)
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline[0]:
            time.sleep(0.05)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        os.unlink(hostfile)
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)


def _signal_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)


def is_rank() -> bool:
    """True inside a process started by `run_ranks` or mlx.launch."""
    return "MLX_RANK" in os.environ


def self_command(argv: Sequence[str]) -> list[str]:
    """This Python running `training.cli` with `argv`."""
    # -P: clara's own `training`, not a training.py in the folder it runs in (a package
    # user's audit: a project's own module of that name was run as each rank)
    return [sys.executable, "-P", "-m", "training.cli", *argv]
