"""What clara's compiled code depends on, for the modules that build it (`clara._blas`,
`clara._jit`, `clara._mlxext`): the CPU's features, the cache of built libraries, the
compiler flags, the environment switches that turn a fast path off."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path


def off(name: str) -> bool:
    """Whether environment variable `name` turns a fast path off ("off", "0", "no", ...)."""
    return os.environ.get(name, "").strip().lower() in ("off", "0", "no", "false", "none")


def cpuinfo(*keys: str) -> str:
    """The first line of /proc/cpuinfo that starts with one of `keys` ("" if none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line for line in lines if line.startswith(keys)), "")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty elsewhere)."""
    return frozenset(cpuinfo("flags").split())


def cpu_tag() -> str:
    """What -march=native depends on: the architecture and the CPU's feature flags."""
    return f"{platform.machine()} {cpuinfo('flags', 'Features')}"


@functools.cache
def cache_home() -> Path:
    """Where clara keeps what it compiles: $XDG_CACHE_HOME/clara (default ~/.cache/clara);
    where that cannot be written (a container run as another user, its home read-only),
    $CLARA_HOME/cache, then a folder of this user's in the temporary folder. A container
    audit: without a cache every kernel was off, and decoding 2-3x slower, with one INFO
    line. A folder another user owns, or that everyone may write, is never used: what is
    loaded from it runs in this process (one its group may write is: a umask of 002, a
    Kubernetes volume's fsGroup)."""
    try:
        user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clara"
    except RuntimeError:  # (no home: no HOME, and no passwd entry)
        user = None
    candidates = [user] if user is not None else []
    if os.environ.get("CLARA_HOME"):
        candidates.append(Path(os.environ["CLARA_HOME"]).expanduser() / "cache")
    candidates.append(Path(tempfile.gettempdir()) / f"clara-cache-{os.getuid()}")
    for place in candidates:
        try:
            place.mkdir(parents=True, exist_ok=True, mode=0o700)
            st = place.stat()
        except OSError:
            continue
        if st.st_uid == os.getuid() and not st.st_mode & 0o002 and os.access(place, os.W_OK):
            if place != candidates[0]:
                logging.getLogger("clara").warning(
                    "%s cannot be written: compiled kernels are kept in %s (set "
                    "XDG_CACHE_HOME to a writable folder to choose)",
                    candidates[0],
                    place,
                )
            return place
    return candidates[0]


def lib_cache() -> Path:
    """Where clara keeps the libraries it compiles (`cache_home`/lib)."""
    return cache_home() / "lib"


#: A built library unused this long is removed when a sibling (same name before the key) is
#: built: each clara or MLX version, CPU, and virtual environment path builds its own.
UNUSED_DAYS = 30
_MARK_EVERY_S = 86400


def cached(target: Path) -> bool:
    """Whether `target` is built; marks it used (its mtime, at most daily) so that pruning
    keeps it."""
    try:
        age = time.time() - target.stat().st_mtime
    except OSError:
        return False
    if age > _MARK_EVERY_S:
        with contextlib.suppress(OSError):  # a read-only cache still serves
            os.utime(target)
        return target.exists()  # (pruned by another process just now: build it again)
    return True


def prune_siblings(target: Path, days: float = UNUSED_DAYS) -> list[Path]:
    """Remove the libraries beside `target` with its prefix (`thinmm-`, `mlxattn-`) unused for
    `days`; the ones removed."""
    prefix = target.name.split("-", 1)[0] + "-"
    cutoff = time.time() - days * 86400
    removed = []
    for path in target.parent.glob(prefix + "*"):
        with contextlib.suppress(OSError):
            if path != target and path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
    return removed


def build_cached(cmd: list[str], target: Path, what: str, timeout: int = 120) -> str | None:
    """Run the compiler command `cmd` with `-o` a temporary file, then move that to `target`
    (atomically: concurrent first runs both end with one file). None when built, else why not.
    Siblings unused for UNUSED_DAYS go."""
    from clara.paths import make_private_dirs  # (the first folder under ~/.cache/clara)

    try:
        make_private_dirs(target.parent)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            out = Path(tmp) / target.name
            done = subprocess.run(
                [*cmd, "-o", str(out)], capture_output=True, text=True, timeout=timeout
            )
            if done.returncode != 0:
                return f"compiling {what} failed: {done.stderr.strip()[-300:]}"
            os.replace(out, target)
    except (OSError, subprocess.SubprocessError) as e:
        return f"could not build {what}: {e}"
    prune_siblings(target)
    return None


#: This CPU's instructions, generic scheduling: tuned for AMD Zen (-mtune=znver4/5, what
#: -march=native implies there), GCC splits fused multiply-adds in loop-carried chains into a
#: multiply and an add, in some unrollings and not others, so a row's products got other bits
#: in a batch than alone (caught by tests/test_thinmm.py on a Zen 5 CPU).
NATIVE = ("-march=native", "-mtune=generic")
