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


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
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
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
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
