"""Shared bits for benchmarks: machine description and appending a table to BENCHMARKS.md."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, sysctl on macOS)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        out = _sysctl("machdep.cpu.brand_string")
        if out:
            return out
    return platform.processor() or platform.machine()


def ram_gib() -> float:
    """The machine's memory in GiB (nan if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):  # macOS has no SC_PHYS_PAGES
        out = _sysctl("hw.memsize")
        return int(out) / 2**30 if out.isdigit() else float("nan")


def _sysctl(name: str) -> str:
    import subprocess

    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def rss_bytes() -> int:
    """This process's resident memory now (Linux: /proc; elsewhere psutil, else the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        pass
    import subprocess

    out = subprocess.run(
        ["ps", "-o", "rss=", "-p", str(os.getpid())], capture_output=True, text=True
    )
    return int(out.stdout.strip() or 0) * 1024  # (KiB, on macOS as on Linux)


def peak_rss_bytes() -> int:
    """This process's peak resident memory (ru_maxrss: KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def machine() -> str:
    cpu = cpu_name()
    mem = ram_gib()
    import mlx.core as mx

    from clara import cpu as clara_cpu

    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, "
        f"{mem:.0f} GiB RAM, Python {platform.python_version()}, mlx {mx.__version__}, "
        f"device {mx.default_device()}, {clara_cpu.describe()}"
    )


def median_seconds(fn, seconds: float) -> float:
    """Median wall time of `fn()` over about `seconds` (at least 3 runs), after one warm-up."""
    fn()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def append_report(title: str, body: str, notes: str = "") -> None:
    """Print `body` and append it to BENCHMARKS.md with command, machine and date."""
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"\n## {title}\n\n- command: `{command}`\n- machine: {machine()}\n- date: {stamp}\n\n"
        f"{body}\n" + (f"\n{notes}\n" if notes else "")
    )
    print(text)
    with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
        f.write(text)


def sample_texts() -> list[str]:
    """Real prose available on every machine: Python's documentation topics."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]
