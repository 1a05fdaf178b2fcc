"""Shared bits for benchmarks: machine description and appending a table to BENCHMARKS.md."""

from __future__ import annotations

import argparse

import contextlib
import datetime as _dt
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
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


def load_average() -> float | None:
    """The 1-minute load average, or None where the OS keeps none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# The load as the run started (`start_run`; a report that only merges earlier results has
# none) and its repetition count: other work on the machine slows every figure, and one
# repetition gives no median to damp it, so reports say both.
_RUN: dict = {"load": None, "repeats": None}


def start_run(repeats: int | None = None) -> list[str]:
    """Note the load as a run starts (and, for a script with a repeats option, its count);
    warn on stderr when the figures will be noisy. `append_report` adds the same warnings to
    the report's notes. Returns them."""
    _RUN.update(load=load_average(), repeats=repeats, started=_now(), commit=_commit())
    found = run_warnings()
    for line in found:
        print(f"warning: {line}", file=sys.stderr, flush=True)
    return found


def run_warnings() -> list[str]:
    """Why this run's figures may mislead: a busy machine at the start, a single repetition."""
    out = []
    load, cores = _RUN["load"], os.cpu_count() or 1
    if load is not None and load > cores / 2:
        out.append(
            f"the 1-minute load average was {load:.2f} on {cores} cores as the run started: "
            "other work shared the machine, so timings are slower and noisier than its own"
        )
    if _RUN["repeats"] == 1:
        out.append(
            "one repetition per figure (--repeats 1): no median damps a slow moment, so "
            "compare such figures with care"
        )
    return out


def machine() -> str:
    cpu = cpu_name()
    mem = ram_gib()
    import mlx.core as mx

    from clara import cpu as clara_cpu

    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, "
        f"{mem:.0f} GiB RAM, Python {platform.python_version()}, mlx {mx.__version__}, "
        f"device {mx.default_device()}, {clara_cpu.describe()}, load average "
        + (f"{_load_text(_RUN['load'])} at the start, " if _RUN["load"] is not None else "")
        + f"{_load_text(load_average())} at the end (1 min, {os.cpu_count()} cores)"
    )


def _load_text(load: float | None) -> str:
    return "?" if load is None else f"{load:.2f}"


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


def add_old_report_flag(p) -> None:
    """`--report`, which bench_cloze, bench_joint and bench_train once needed to append (the
    others appended unless told not to; now all do): still accepted, so the commands
    BENCHMARKS.md records with it run as they did."""
    p.add_argument("--report", action="store_true", help=argparse.SUPPRESS)


def add_no_append(p, help: str = "print only; leave BENCHMARKS.md unchanged") -> None:
    """The opt-out of appending, under both spellings the scripts have used (`--no-append`,
    `--no-report`), so commands recorded with either still run: `args.no_append`."""
    p.add_argument("--no-append", "--no-report", dest="no_append", action="store_true", help=help)


def _commit() -> str:
    """The checkout's commit, with "+changes" when tracked files differ from it
    (BENCHMARKS.md aside: the scripts append to it themselves)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no", "--", ".",
                      ":!BENCHMARKS.md"):  # fmt: skip
        commit += "+changes"
    return commit or "unknown"


def run_record() -> dict[str, str]:
    """How this run was made, for a later report that merges runs (`--report DIR`): its
    command, machine, start date and commit (as `start_run` found them: a checkout during a
    run is not its code). The report's own header names only the merging step."""
    return {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "date": _RUN.get("started") or _now(),
        "commit": _RUN.get("commit") or _commit(),
        **({"warnings": "; ".join(run_warnings())} if run_warnings() else {}),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def runs_made(records: list[tuple[str, dict | None]]) -> str:
    """The "Runs merged" lines of a report: each run's tag and `run_record`."""
    lines = ["Runs merged here (each as it was made):", ""]
    for tag, r in records:
        if r is None:
            lines.append(f"- {tag}: made before runs recorded how (its command is not known)")
        else:
            warned = f"; {r['warnings']}" if r.get("warnings") else ""
            lines.append(f"- {tag}: `{r['command']}` at {r['commit']}, {r['date']}, "
                         f"{r['machine']}{warned}")  # fmt: skip
    return "\n".join(lines)


def append_report(title: str, body: str, notes: str = "") -> None:
    """Print `body` and append it to BENCHMARKS.md with command, machine and date (and the
    `run_warnings`, as notes)."""
    warned = [f"**Warning**: {w}." for w in run_warnings()]
    notes = "\n\n".join(x for x in (notes, *warned) if x)
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"\n## {title}\n\n- command: `{command}`\n- machine: {machine()}\n- date: {stamp}\n\n"
        f"{body}\n" + (f"\n{notes}\n" if notes else "")
    )
    print(text)
    try:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:  # (a read-only checkout: the run's figures are printed above)
        print(f"BENCHMARKS.md not appended to ({exc.strerror}): the table is above; "
              "--no-append prints only", file=sys.stderr)  # fmt: skip


@contextlib.contextmanager
def scratch_dir(prefix: str, keep_on_failure: str = ""):
    """A temporary folder for the block, removed when it ends (done or Ctrl-C). With
    `keep_on_failure` (what the folder holds that explains a failure, e.g. server logs) it is
    kept when the block raises, and its path said on stderr."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    failed = False
    try:
        yield path
    except Exception:
        failed = True
        raise
    finally:
        if failed and keep_on_failure:
            print(f"kept {path} ({keep_on_failure}); delete it when done", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def sample_texts() -> list[str]:
    """Real prose available on every machine: Python's documentation topics."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]
