"""The wheel `pip install .` builds (and the Dockerfile installs) holds every file clara
reads at run time besides its Python modules: the C/C++ kernel sources it compiles for the
machine, the shipped adapters and the web chat."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_what_clara_reads_at_run_time(tmp_path: Path) -> None:
    """Built from the files alone, as from a release tarball or a Docker build context
    without .git (with .git, a setuptools VCS plugin may add every tracked file)."""
    src = tmp_path / "src"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.splitlines()  # fmt: skip
    for name in listed:
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)],
        check=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("clara_rag-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in ("_thinmm.c", "_attention.c", "_mlx_attention.cpp"):
        assert f"clara/{source}" in names, source
    shipped = REPO / "clara" / "checkpoints"
    for f in shipped.rglob("*"):
        if f.is_file():
            assert f.relative_to(REPO).as_posix() in names, f
    for f in (REPO / "server" / "web").iterdir():
        assert f"server/web/{f.name}" in names, f
    entry_points = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith(".dist-info/entry_points.txt")))
        .decode()
    )
    assert "clara-demo = clara_cli.demo:main" in entry_points  # (a package user's demo)
    # the license's text goes with it (Apache-2.0 asks so); type checkers read the library
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)[-8:]
    for package in ("clara", "clara_cli", "indexing", "server", "training"):
        assert f"{package}/py.typed" in names, package


def test_the_demo_says_what_it_needs_before_it_writes_anything(tmp_path, monkeypatch) -> None:
    """A package user's audit: without fpdf2 (a dev extra) the demo wrote its sample texts,
    then ended in a ModuleNotFoundError traceback. It says what to install first."""
    import pytest

    from clara_cli import demo

    monkeypatch.setenv("CLARA_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(sys.modules, "fpdf", None)  # (its import fails: not installed)
    with pytest.raises(SystemExit, match=r"it needs fpdf2: pip install 'clara-rag\[demo\]'"):
        demo.main([])
    assert not (tmp_path / "home" / "demo").exists()


def test_the_demo_answers_help_and_version_without_running(tmp_path) -> None:
    """A docs audit: `clara-demo --help` and `--version` ran the whole demo (it read no
    arguments), writing its index and starting a server."""
    env = {**os.environ, "CLARA_HOME": str(tmp_path / "home")}
    run = [sys.executable, "-P", "-m", "clara_cli.demo"]
    helped = subprocess.run(run + ["--help"], env=env, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: clara-demo"), helped
    assert "--port" in helped.stdout and "CLARA_DEMO_PORT" in helped.stdout
    version = subprocess.run(run + ["--version"], env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("clara-demo 0."), version
    wrong = subprocess.run(run + ["--port", "70000"], env=env, capture_output=True, text=True)
    assert wrong.returncode == 2 and "--port 70000: a port is 1-65535" in wrong.stderr, wrong
    env["CLARA_DEMO_PORT"] = "abc"  # (a traceback, even for --help: a review)
    wrong = subprocess.run(run, env=env, capture_output=True, text=True)
    assert wrong.returncode == 2 and "CLARA_DEMO_PORT='abc': give a port" in wrong.stderr, wrong
    with socket.socket() as taken:  # (another server there answered as the demo's: a re-audit)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        busy = subprocess.run(run + ["--port", port], env=env, capture_output=True, text=True)
    assert busy.returncode == 1 and f"port {port} is in use" in busy.stderr, busy
    assert not (tmp_path / "home").exists()


def test_a_server_on_this_machine_is_waited_for_past_an_http_proxy(tmp_path, monkeypatch) -> None:
    """An air-gapped audit: with HTTP_PROXY set and NO_PROXY naming only localhost, clara-demo
    asked the proxy for its own 127.0.0.1 server and said it never became healthy."""
    from clara_cli.process import free_port, stop, wait_healthy

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "localhost")
    port = free_port()
    (tmp_path / "health").write_text("ok")
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", server, timeout=30, interval=0.2)
    finally:
        stop(server)
