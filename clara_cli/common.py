"""Plumbing shared by every clara CLI: the error convention (`run_main`), argument types,
model options, progress bars. A command's `main` is

    def main(argv=None) -> int:
        args = build_parser().parse_args(argv)
        return run_main("clara-index", lambda: args.func(args))

The HTTP services' options and their uvicorn runner are in `clara_cli.serve`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

from clara.errors import ClaraError, CollectionLockedError
from clara.paths import (
    COLLECTION_NAME,
    COLLECTION_NAME_ANY_LENGTH,
    MAX_COLLECTION_NAME,
    RESERVED_NAMES,
)

T = TypeVar("T")

DTYPE_CHOICES = ("auto", "stored", "float32", "bfloat16", "float16")


def _whole(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


def whole_between(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer from `low` to `high` (no upper bound: None)."""

    def whole(value: str) -> int:
        n = _whole(value)
        if n < low or (high is not None and n > high):
            if high is not None:
                span = f"from {low} to {high}"
            else:
                span = "0 or more" if low == 0 else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {n}")
        return n

    return whole


#: argparse types: an integer of at least 1, of at least 0
positive_int = whole_between(1)
non_negative_int = whole_between(0)


def collection_arg(folder_flag: str) -> Callable[[str], str]:
    """argparse type of a collection name; a value that looks like a folder is pointed at
    `folder_flag`, the option that takes the folder of collections."""

    def collection(value: str) -> str:
        if len(value) > MAX_COLLECTION_NAME and re.fullmatch(COLLECTION_NAME_ANY_LENGTH, value):
            raise argparse.ArgumentTypeError(
                f"a name of at most {MAX_COLLECTION_NAME} characters, not {len(value)}"
            )
        if not re.fullmatch(COLLECTION_NAME, value):
            hint = f"; a folder of collections goes to {folder_flag}" if "/" in value else ""
            raise argparse.ArgumentTypeError(
                f"{value!r}: use letters, digits, '.', '_' or '-' (starting with a letter or "
                f"digit){hint}"
            )
        if value in RESERVED_NAMES:  # (other cases: refused when created, by Collection)
            raise argparse.ArgumentTypeError(
                f"{value!r} is reserved (the indexing service keeps its uploaded files there): "
                "pick another collection name"
            )
        return value

    return collection


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None


def positive_float(value: str) -> float:
    """argparse type: a finite number above 0."""
    x = _number(value)
    if not 0 < x < float("inf"):
        raise argparse.ArgumentTypeError(f"{value}: must be a number above 0")
    return x


def non_negative_float(value: str) -> float:
    """argparse type: a finite number, 0 or more."""
    x = _number(value)
    if not 0 <= x < float("inf"):
        raise argparse.ArgumentTypeError(f"{value}: must be a finite number, 0 or more")
    return x


def fraction(value: str) -> float:
    """argparse type: a share, 0 or more and below 1 (a warm-up, a dropout probability)."""
    x = _number(value)
    if not 0 <= x < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be 0 or more and below 1")
    return x


def ratio(value: str) -> float:
    """argparse type: a number from 0 to 1."""
    x = _number(value)
    if not 0 <= x <= 1:
        raise argparse.ArgumentTypeError(f"{value}: must be from 0 to 1")
    return x


def port_arg(value: str) -> int:
    """argparse type: a TCP port, 0-65535 (0: any free one)."""
    n = _whole(value)
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {n}")
    return n


def root_path_arg(value: str) -> str:
    """argparse type: a URL path a reverse proxy serves a server under ('/clara', or '' for
    none), without its last slash."""
    path = value.strip().rstrip("/")
    if not path:
        return ""
    segments = path.split("/")[1:]
    if not _ROOT_PATH.fullmatch(path) or any(s in ("", ".", "..") for s in segments):
        raise argparse.ArgumentTypeError(
            f"{value!r}: give the path the proxy serves this server under, e.g. /clara "
            "(letters, digits and - . _ ~ between slashes; %XX for others)"
        )
    return path


#: A URL path (RFC 3986 segments: unreserved characters and %-escapes; not the sub-delims,
#: which the links it starts are not escaped for)
_ROOT_PATH = re.compile(r"(?:/(?:[A-Za-z0-9\-._~]|%[0-9A-Fa-f]{2})+)+")


def path_arg(value: str) -> str:
    """argparse type: a path, not empty (an unset shell variable read as the current folder:
    `clara-index remove "$DOC"` removed the documents under it)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(
            "an empty path (an unset variable?): name a file, folder or glob; '.' is the "
            "current folder"
        )
    return value


#: Exit statuses every clara command shares (README, "Exit status").
EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL, EXIT_LOCKED = 1, 2, 3, 75  # 75: BSD's EX_TEMPFAIL
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE, EXIT_TERMINATED = 130, 141, 143  # 128 + SIGINT, SIGPIPE..


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd, `docker stop`, `timeout`): a command stops as on Ctrl-C (what it
    finished is kept, and says so) and exits with 143."""


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def parse_command_line(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> argparse.Namespace:
    """`parser.parse_args(argv)` for a CLI of subcommands, an argument the subcommand does
    not take reported with that subcommand's usage (argparse gives the top level's, which
    lists no options: `clara-index add --colection x` showed `clara-index COMMAND ...`)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The parser of the subcommand `args` were parsed for (`parser` itself if none): its
    `error` shows that command's usage."""
    commands = next(
        (a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {}
    )
    return commands.get(getattr(args, "command", None), parser)


def run_main(prog: str, fn: Callable[[], int | None]) -> int:
    """Run a command; a `ClaraError` becomes one `prog: error: ...` line and exit status 1
    (75 when another process is writing the collection: try again later).

    `CLARA_DEBUG=1` also prints the traceback. Ctrl-C exits with 130 without a traceback,
    SIGTERM the same way with 143. Text that is not valid UTF-8 (a file name from a Latin-1
    disk) is printed escaped.
    """
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    term = None
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            term = signal.signal(signal.SIGTERM, _terminated)
    try:
        return fn() or 0
    except ClaraError as exc:
        if os.environ.get("CLARA_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_LOCKED if isinstance(exc, CollectionLockedError) else EXIT_ERROR
    except Terminated:
        print(f"{prog}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:  # `clara-index list | head`: the reader has what it wanted
        with contextlib.suppress(OSError):  # (and Python's exit flush must not fail again)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # the machine's, not clara's: a full disk, a read-only folder
        if os.environ.get("CLARA_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        print(f"{prog}: error: {os_error_text(exc)}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if term is not None:
            signal.signal(signal.SIGTERM, term)


def exit_now(code: int) -> NoReturn:
    """End a serving process with `code`, its logs flushed, skipping Python's and C++'s exit
    teardown: there MLX's stream threads, used from the model worker's thread, sometimes made
    `std::terminate` abort a cleanly stopped server (exit 134, "terminate called without an
    active exception"), which init systems report as a crash. A graceful stop has closed
    what the server holds (collections, stores) by then; after a forced one (a second Ctrl-C)
    their SQLite journals and an unfinished upload are recovered at the next start, as after
    a crash."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


#: What to do about the OSErrors a user can fix
_OS_HINTS = {
    errno.ENOSPC: "free disk space there and run it again (what was finished is kept)",
    errno.EDQUOT: "free space within your disk quota and run it again",
    errno.EROFS: "that file system is read-only: use a writable folder",
    errno.EACCES: "fix its permissions (or run as a user who may use it), or use another folder",
}


def os_error_text(exc: OSError) -> str:
    """An OSError as one line: what failed, where, and what to do when we know."""
    where = f" ({exc.filename})" if exc.filename else ""
    hint = _OS_HINTS.get(exc.errno or 0)
    return f"{exc.strerror or exc}{where}" + (f": {hint}" if hint else "")


def add_model_args(
    parser: argparse.ArgumentParser,
    checkpoint_help: str | None = None,
    *,
    model_use: str | None = None,
    checkpoint: bool = True,
    dtype: bool = True,
) -> argparse._ArgumentGroup:
    """--model, --checkpoint and --dtype, with the same meaning in every CLI, in a "model"
    group (returned). `checkpoint_help` says what --checkpoint means there (training: where
    it starts from); `model_use` what the command does with the model; `checkpoint=False`
    leaves --checkpoint out, for commands that read no adapters; `dtype=False` --dtype, for
    those that load no weights."""
    group = parser.add_argument_group("model")
    use = f"; {model_use}" if model_use else ""
    group.add_argument(
        "--model",
        default="smollm2-135m",
        help="base model: 'smollm2-135m' (the embedded default), a local mlx-lm directory, "
        "or a Hugging Face id (from the local hub cache; fetched when not there and online)"
        f"{use} (default: %(default)s)",
    )
    if checkpoint:
        group.add_argument(
            "--checkpoint",
            default=None,
            metavar="DIR",
            help=checkpoint_help
            or "CLaRa checkpoint directory (compressor/query/generator adapters) made by "
            "clara-train; default: the adapters shipped for smollm2-135m (untrained ones for "
            "other models); 'none' forces untrained adapters",
        )
    if dtype:
        add_dtype_arg(group)
    return group


def add_dtype_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--dtype (read it with `model_dtype`), for commands whose other model options differ."""
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPE_CHOICES,
        help="weight precision: 'auto' picks the fastest for this machine, 'stored' keeps the "
        "weights as saved (e.g. 4-bit), others dequantize and cast (default: %(default)s)",
    )


def add_query_precision_arg(parser) -> None:
    """--query-precision, for the commands that encode questions (a parser or a group)."""
    parser.add_argument(
        "--query-precision",
        default="float32",
        choices=("float32", "bfloat16"),
        help="the query adapter's products through the base weights: 'float32' (exact) or "
        "'bfloat16' on CPUs with AMX tiles or AVX-512 BF16 (Intel Sapphire Rapids and later, "
        "AMD Zen 4 and later): 1.6-1.8x faster query encoding (0.61x the time for one "
        "question, 0.56x for eight), the same retrieval on our held-out questions, "
        "~0.2 GB more memory for the default model; elsewhere it stays float32. Compression "
        "is float32 either way (default: %(default)s)",
    )


def model_dtype(args: argparse.Namespace) -> str | None:
    """`--dtype` as `clara.loader.load_base` takes it ('stored' -> None)."""
    return None if args.dtype == "stored" else args.dtype


def add_version_arg(parser: argparse.ArgumentParser) -> None:
    """`--version`: the program and clara's version (which an upgrade changes)."""
    from clara import __version__

    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the "
        "version and exit"
    )  # fmt: skip


def add_quiet_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


LOG_EVERY_S = 30.0  # a log's progress line, at most this often (stderr not a terminal)


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    *,
    quiet: bool = False,
    lines: bool = True,
) -> Iterable[T]:
    """Wrap `iterable` in a tqdm bar on stderr. When stderr is not a terminal (cron, nohup, a
    service's log) and `lines`, a plain line every LOG_EVERY_S seconds instead (none for a
    shorter run); nothing when `quiet`."""
    return _bar(iterable, total, desc, unit, quiet, lines)


def progress_bar(
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    *,
    quiet: bool = False,
    lines: bool = True,
):
    """A bar to `update()` by hand, on the same rules as `progress`; its `write()` prints a
    line without breaking the bar."""
    return _bar(None, total, desc, unit, quiet, lines)


def _bar(iterable, total, desc, unit, quiet: bool, lines: bool):
    """`progress`'s and `progress_bar`'s choice: plain lines for a log, else tqdm (disabled
    when `quiet` or stderr is not a terminal)."""
    from tqdm import tqdm

    terminal = sys.stderr.isatty()
    if not quiet and lines and not terminal:
        return LogProgress(total, desc, unit, iterable=iterable)
    disable = quiet or not terminal
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable)


class LogProgress:
    """Progress for a log file: "indexing: 12/40 (30%) in 1m05s, 0.18 file/s; 120 chunks" on
    stderr at most every `every` seconds and once at the end if any was printed before; no
    carriage returns or escapes. The part of tqdm's interface clara's commands use."""

    def __init__(
        self,
        total: int | None,
        desc: str | None,
        unit: str = "it",
        *,
        iterable: Iterable[Any] | None = None,
        every: float | None = None,
    ) -> None:
        self._iterable = iterable
        self.total, self.desc, self.unit = total, desc or "progress", unit
        self.every = LOG_EVERY_S if every is None else every
        self.n, self.postfix = 0, ""
        self._said: int | None = None  # the count the last line gave (None: none yet)
        self._start = self._last = time.monotonic()

    def __iter__(self):
        with self:
            for item in self._iterable if self._iterable is not None else ():
                yield item
                self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.every:
            self._line()

    def set_postfix(self, **values: Any) -> None:
        self.set_postfix_str(", ".join(f"{k}={v}" for k, v in values.items()))

    def set_postfix_str(self, text: str) -> None:
        """What goes after the count; it is said when its time comes too, as tqdm shows it
        at once: one big file being indexed was hours without a line."""
        self.postfix = text
        if time.monotonic() - self._last >= self.every:
            self._line()

    def refresh(self) -> None:
        pass

    def write(self, text: str, file: Any = None) -> None:
        print(text, file=file or sys.stderr, flush=True)

    def close(self) -> None:
        if self._said is not None and self.n != self._said:  # (a line before, not saying it)
            self._line()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self) -> None:
        self._last = time.monotonic()
        elapsed = self._last - self._start
        seconds = int(elapsed)
        took = f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100 * self.n // self.total}%)" if self.total else ""
        rate = f", {self.n / max(elapsed, 1e-9):.2f} {self.unit}/s"
        extra = f"; {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done}{share} in {took}{rate}{extra}", file=sys.stderr, flush=True)
        self._said = self.n
