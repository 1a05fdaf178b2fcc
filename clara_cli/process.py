"""Start a local server as a child process and wait until its health URL answers: the one way
`make demo`, the serving benchmark and the server tests run clara-serve (or another server).

    port = free_port()
    with ServerProcess([sys.executable, "-m", "server.cli", "--port", str(port)], port=port) as s:
        s.wait_ready(timeout=300)  # ServerExitedError / ServerTimeoutError if it never answers
        ...                        # s.url is http://127.0.0.1:<port>
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx


class ServerStartError(RuntimeError):
    """A server process did not come up."""


class ServerExitedError(ServerStartError):
    """The process ended before its health URL answered 200."""

    def __init__(self, returncode: int):
        self.returncode = returncode
        super().__init__(f"the server exited early ({self.how})")

    @property
    def how(self) -> str:
        """'status N', or 'signal N' for a process a signal ended."""
        code = self.returncode
        return f"signal {-code}" if code < 0 else f"status {code}"


class ServerTimeoutError(ServerStartError):
    """The health URL did not answer 200 within the time allowed."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        super().__init__(f"the server did not become healthy in {timeout:g}s")


def free_port() -> int:
    """A localhost TCP port free right now (another process may take it before the server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port`: a server started there would fail to bind
    it, and a health check would take the other server's answer for its own."""
    with socket.socket() as probe:
        # (as a server binds: a port a stopped server left in TIME_WAIT is free to it)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_server(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    log: Path | int | None = None,
) -> subprocess.Popen:
    """`argv` as a child process. `log`: a file that gets its stdout and stderr; None leaves
    them on this terminal, and subprocess.DEVNULL drops them."""
    out = log.open("wb") if isinstance(log, Path) else log  # noqa: SIM115
    try:
        return subprocess.Popen(
            list(argv), cwd=cwd, env=env, stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
        )  # fmt: skip
    finally:
        if isinstance(log, Path):
            out.close()  # the child holds its own copy


def wait_healthy(
    url: str, proc: subprocess.Popen, timeout: float = 300, interval: float = 0.5
) -> None:
    """Poll `url` until it answers 200. Raises ServerExitedError as soon as `proc` ends and
    ServerTimeoutError after `timeout` seconds (the process is left running: stop it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerExitedError(proc.returncode)
        try:  # (never through HTTP_PROXY: a proxy cannot reach this machine's loopback, and
            # one was asked while the server was up: an air-gapped audit)
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(interval)
    raise ServerTimeoutError(timeout)


def stop(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM, then SIGKILL if `proc` has not ended within `grace` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ServerProcess:
    """`argv` started at once (`start_server`), serving on 127.0.0.1:`port`; a context manager
    that stops it on leaving. `health`: the URL `wait_ready` polls (default: its /health)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        health: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        log: Path | int | None = None,
    ):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.health = health or f"{self.url}/health"
        self.log_path = log if isinstance(log, Path) else None
        self.proc = start_server(argv, env=env, cwd=cwd, log=log)

    def log(self) -> str:
        """What the process wrote so far ('' without a log file)."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def wait_ready(self, timeout: float = 300, interval: float = 0.5) -> ServerProcess:
        """Wait until the health URL answers 200 (see `wait_healthy`); returns self."""
        wait_healthy(self.health, self.proc, timeout, interval)
        return self

    def wait_exit(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout)

    def stop(self, grace: float = 20) -> None:
        stop(self.proc, grace)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
