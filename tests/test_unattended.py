"""clara run unattended (cron, systemd, `docker stop`): what its exit status and its log say.

Folders clara may not read are errors and their documents stay; SIGTERM stops a command as
Ctrl-C does; a partial run, a locked collection and a failure exit differently; the server
logs in one timestamped format on stderr, leaves health checks out, and stops gracefully on
SIGHUP. Permissions are tested as an unprivileged process (root reads everything)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_index_cli import CHUNKING, after_the_first_file, docs_of, run, write_corpus
from tests.test_server_harness import ROOT, free_port, lock_held_elsewhere


def _unprivileged() -> list[str]:
    """A prefix that runs a command without root's right to read anything."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: cannot run a command that obeys file permissions")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]


def _add(*argv: object) -> subprocess.CompletedProcess:
    cmd = [*_unprivileged(), sys.executable, "-m", "indexing.cli", "add", *map(str, argv)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_folder_clara_may_not_read_is_an_error_and_prune_keeps_its_documents(
    capsys, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """`add --prune` on a folder made unreadable removed every document under it (they looked
    "gone"), and exited 0; an unreadable subfolder was skipped without a word."""
    docs, index = tmp_path / "docs", tmp_path / "index"
    (docs / "sub").mkdir(parents=True)
    for path in (docs / "top.txt", docs / "notes.txt", docs / "sub" / "vault.txt"):
        path.write_text(f"{path.stem}: the combination is written in this file.")
    args = ["--model", tiny_llama_dir, "--index", index, *CHUNKING]
    assert run(capsys, "add", docs, *args)[0] == 0
    assert len(docs_of(index)) == 3
    try:
        (docs / "sub").chmod(0)
        out = _add(docs, "--prune", "--json", *args)
        report = json.loads(out.stdout)
        assert out.returncode == 3, out.stderr  # some files failed, the others indexed
        assert (report["unchanged"], report["failed"], report["pruned"]) == (2, 1, 0)
        assert f"{docs / 'sub'}: permission denied: clara may not read this folder" in out.stderr
        docs.chmod(0)
        out = _add(docs, "--prune", *args)
        assert out.returncode == 1, out.stderr  # nothing could be read
        assert "permission denied" in out.stderr and "removed" not in out.stderr
    finally:
        docs.chmod(0o755)
        (docs / "sub").chmod(0o755)
    assert len(docs_of(index)) == 3  # all still indexed


def test_a_folder_listed_but_not_searchable_stops_nothing_else(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """A folder with read but not search permission (644) made `add` stop at once, with a hint
    about writing, before indexing anything."""
    docs, index = tmp_path / "docs", tmp_path / "index"
    (docs / "sub").mkdir(parents=True)
    (docs / "lost+found").mkdir()  # (a mount's top: root's own, never readable)
    (docs / "top.txt").write_text("The top file is read.")
    (docs / "sub" / "inner.txt").write_text("The inner file may not be.")
    (docs / "sub" / "photo.jpg").write_bytes(b"\xff\xd8\xff")  # not read anyway: skipped
    try:
        (docs / "sub").chmod(0o644)
        (docs / "lost+found").chmod(0)  # (as root's is to everyone else)
        out = _add(docs, "--model", tiny_llama_dir, "--index", index, *CHUNKING)
    finally:
        (docs / "sub").chmod(0o755)
        (docs / "lost+found").chmod(0o755)
    assert out.returncode == 3, out.stderr
    assert "inner.txt: permission denied: clara may not read it" in out.stderr
    assert "photo.jpg: permission" not in out.stderr and "lost+found" not in out.stderr
    assert "write" not in out.stderr
    assert list(docs_of(index)) == ["top.txt"]


def test_sigterm_during_add_says_what_is_kept(
    capsys, tmp_path: Path, tiny_llama_dir: Path, monkeypatch
) -> None:
    """SIGTERM (systemd, `timeout`, `docker stop`) killed `add` without a line in its log."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:  # (a runner that handles it:
        pytest.skip("SIGTERM is handled by the test runner here")  # the kill would hit it)
    folder, index = tmp_path / "docs", tmp_path / "index"
    write_corpus(folder, n=3)

    def sigterm():
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, to this process
        time.sleep(5)  # (its handler raises here)

    after_the_first_file(monkeypatch, sigterm)
    rc, _, err = run(capsys, "add", folder, "--model", tiny_llama_dir, "--index", index, *CHUNKING)
    assert rc == 143 and "the 1 file indexed in this run stay indexed" in err
    assert err.rstrip().endswith("clara-index: terminated (SIGTERM)")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back
    assert len(docs_of(index)) == 1


def test_add_json_stopped_still_reports_what_it_did(
    capsys, tmp_path: Path, tiny_llama_dir: Path, monkeypatch
) -> None:
    """`add --json` stopped by Ctrl-C (or SIGTERM) printed nothing: a script could not tell
    which files went in."""
    folder, index = tmp_path / "docs", tmp_path / "index"
    write_corpus(folder, n=3)

    def ctrl_c():
        raise KeyboardInterrupt

    after_the_first_file(monkeypatch, ctrl_c)
    args = ["--model", tiny_llama_dir, "--index", index, *CHUNKING, "--json"]
    rc, out, _ = run(capsys, "add", folder, *args)
    report = json.loads(out)
    assert rc == 130 and report["stopped"] == "interrupted"
    assert report["added"] == 1 and [f["status"] for f in report["files"]] == ["added"]
    assert report["chunks"] > 0 and report["chunks_per_s"] > 0 and len(docs_of(index)) == 1

    def stopped_loading(args):  # before any file: while the model loads (or --wait waits)
        raise KeyboardInterrupt

    monkeypatch.setattr("indexing.commands._load_model", stopped_loading)
    (tmp_path / "new.txt").write_text("A file no run has indexed yet, about tide tables.")
    rc, out, _ = run(capsys, "add", tmp_path / "new.txt", *args)
    report = json.loads(out)
    assert rc == 130 and report["stopped"] == "interrupted" and report["files"] == []


def test_a_locked_collection_exits_75_to_try_again(capsys, tmp_path: Path) -> None:
    from indexing.store import Collection
    from tests.tiny import STORE_MANIFEST

    index = tmp_path / "index"
    (tmp_path / "a.txt").write_text("Some text to index.")
    with Collection.open(index, "default", manifest=STORE_MANIFEST, create=True):
        out = subprocess.run(
            [sys.executable, "-m", "indexing.cli", "add", str(tmp_path / "a.txt"),
             "--index", str(index)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert out.returncode == 75 and "is being written by pid" in out.stderr


def test_wait_waits_out_the_writer_then_writes(capsys, tmp_path: Path, tiny_llama_dir) -> None:
    """A cron `add` beside the indexing service's upload job could only exit 75 and try again
    on its next run: --wait SECONDS waits for the writer, and gives up after that long."""
    import threading

    folder, index = tmp_path / "docs", tmp_path / "index"
    write_corpus(folder, n=2)
    args = ["--model", tiny_llama_dir, "--index", index, *CHUNKING]
    assert run(capsys, "add", folder / "doc00.txt", *args)[0] == 0
    with lock_held_elsewhere(index / "default"):
        rc, _, err = run(capsys, "add", folder, *args, "--wait", "0.5")
        assert rc == 75 and "waiting for pid" in err and "is being written by pid" in err
        rc, _, err = run(capsys, "rebuild", "--index", index, "--wait", "0.5")
        assert rc == 75 and "waiting for pid" in err
    holder = lock_held_elsewhere(index / "default")
    holder.__enter__()
    threading.Timer(1.5, holder.__exit__, (None, None, None)).start()
    rc, out, err = run(capsys, "remove", "doc00.txt", "--index", index, "--wait", "60")
    assert rc == 0 and "waiting for pid" in err, err
    assert docs_of(index) == {}


def _serve(tmp_path: Path, tiny_llama_dir: Path) -> tuple[subprocess.Popen, str, Path, Path]:
    """clara-serve on the tiny model, stdout and stderr in files of their own: (process,
    its URL, stdout's file, stderr's file), once /health says ready."""
    port = free_port()
    out_path, err_path = tmp_path / "out.log", tmp_path / "err.log"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "--port", str(port), "--model",
             str(tiny_llama_dir), "--index", str(tmp_path / "index")],
            cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            env={**os.environ, "CLARA_HOME": str(tmp_path / "home")},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(err_path.read_text())
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return proc, url, out_path, err_path


def test_the_server_logs_one_way_on_stderr_and_stops_on_sighup(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """Access lines went to stdout without a time, in uvicorn's own format; health checks
    filled them; SIGHUP (a closed terminal, a logrotate postrotate) killed the server at once."""
    proc, url, out_path, err_path = _serve(tmp_path, tiny_llama_dir)
    try:
        assert httpx.get(f"{url}/v1/models").status_code == 200
        assert httpx.get(f"{url}/v1/nothing").status_code == 404
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = err_path.read_text()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO "
    assert re.search(
        stamp + r'uvicorn\.access: 127\.0\.0\.1:\d+ - "GET /v1/models HTTP/1\.1" 200', log
    )
    assert re.search(stamp + r'uvicorn\.access: .*"GET /v1/nothing HTTP/1\.1" 404', log)
    assert '"GET /health HTTP/1.1" 200' not in log  # (polled above until ready; 503s stay)
    assert re.search(stamp + r"clara: stopped on SIGHUP, as on SIGTERM", log)
    assert out_path.read_text() == ""


def test_a_second_ctrl_c_cuts_answers_off_and_says_so(tmp_path: Path, tiny_llama_dir: Path):
    """It exited 0, as a graceful stop does, though the answer in progress was cut; and a
    stored Responses stream it cut was kept as "cancelled", as if its client had left (a
    crash audit): it now reads "failed" with the reason, as one a crash cut."""
    from server.responses.store import INTERRUPTED, ResponseStore

    proc, url, _, err_path = _serve(tmp_path, tiny_llama_dir)
    body = {"messages": [{"role": "user", "content": "count"}], "retrieval": False,
            "max_tokens": 4000, "stream": True}  # fmt: skip
    asked = {"input": "count", "max_output_tokens": 4000, "stream": True}  # (no tool: no search)
    try:
        with (
            httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r,
            httpx.stream("POST", f"{url}/v1/responses", json=asked, timeout=60) as stored,
        ):
            lines, events = r.iter_lines(), stored.iter_lines()
            created = next(line for line in events if '"response.created"' in line)
            rid = json.loads(created.removeprefix("data: "))["response"]["id"]
            next(line for line in events if "output_text.delta" in line)
            next(line for line in lines if '"content": "' in line)  # decoding
            proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            for cut in (lines, events):
                with pytest.raises(httpx.HTTPError):
                    for _ in cut:
                        pass
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = err_path.read_text()
    assert "forced to stop: answers in progress were cut off" in log
    assert "Traceback" not in log and "CancelledError" not in log  # (uvicorn's, of each cut)
    store = ResponseStore(tmp_path / "home" / "responses.sqlite")
    try:
        kept = store.get(rid)
    finally:
        store.close()
    assert kept["status"] == "failed" and kept["error"] == INTERRUPTED, kept


def test_the_lock_says_this_process_only_for_this_process(tmp_path: Path) -> None:
    """In containers every service is pid 1: a lock held by another process whose pid reads as
    ours was called "already open for writing in this process"."""
    from clara.errors import CollectionLockedError
    from indexing.durable import WriterLock

    with lock_held_elsewhere(tmp_path):
        fd = os.open(tmp_path / "writer.lock", os.O_WRONLY)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # its pid reads as ours
        os.close(fd)
        with pytest.raises(CollectionLockedError, match=f"being written by pid {os.getpid()}"):
            WriterLock(tmp_path, "collection 'x'")
    mine = WriterLock(tmp_path, "collection 'x'")
    with pytest.raises(CollectionLockedError, match="already open for writing in this process"):
        WriterLock(tmp_path, "collection 'x'")
    mine.release()
    WriterLock(tmp_path, "collection 'x'").release()


def test_serving_from_a_thread_that_is_not_the_main_one(tmp_path: Path) -> None:
    """A program that runs the server in a thread of its own: SIGHUP's handler made it fail
    with "signal only works in main thread"."""
    import argparse
    import threading

    from fastapi import FastAPI

    from clara_cli.serve import serve_http

    app = FastAPI()
    app.get("/ping")(lambda: {"ok": True})

    class Worker:  # what serve_http asks of the MLX worker: a way to stop, its error
        on_fatal = None
        error = None

    worker, port = Worker(), free_port()
    args = argparse.Namespace(host="127.0.0.1", port=port, log_level="warning", api_key=None)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(serve_http(app, worker, args)))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and thread.is_alive():
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert thread.is_alive()
    finally:
        if worker.on_fatal is not None:
            worker.on_fatal(RuntimeError("stop"))  # (how the worker stops it)
        thread.join(30)
    assert result == [0]


def test_paths_under_a_folder_that_may_not_be_searched(
    capsys, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """`add` of a glob or file under such a folder crashed after indexing the others (no
    report, exit 1), and `remove` of one removed nothing: Path.is_dir() raised there."""
    docs, index = tmp_path / "docs", tmp_path / "index"
    (docs / "sub").mkdir(parents=True)
    (docs / "top.txt").write_text("The top file is read.")
    (docs / "sub" / "vault.txt").write_text("The vault file was indexed before.")
    args = ["--model", tiny_llama_dir, "--index", index, *CHUNKING]
    assert run(capsys, "add", docs, *args)[0] == 0
    try:
        (docs / "sub").chmod(0)
        out = _add(f"{docs}/sub/*.txt", docs / "top.txt", "--json", *args)
        assert out.returncode == 3, out.stderr
        assert json.loads(out.stdout)["unchanged"] == 1
        cmd = [*_unprivileged(), sys.executable, "-m", "indexing.cli", "remove",
               f"{docs}/sub/*.txt", "--index", str(index)]  # fmt: skip
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    finally:
        (docs / "sub").chmod(0o755)
    assert list(docs_of(index)) == ["top.txt"]


def test_exclude_leaves_files_and_folders_out(capsys, tmp_path: Path, tiny_llama_dir: Path):
    """A file that can never be indexed (an empty one, a scan) made every nightly run exit 3,
    with no way to leave it out but naming every other file."""
    docs, index = tmp_path / "docs", tmp_path / "index"
    for rel in ("a.md", "c.draft.md", "empty.txt", "drafts/b.md", "node_modules/pkg/x.md",
                "archive/2020/old.md", "keep/archive.md"):  # fmt: skip
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_text("" if rel == "empty.txt" else f"The text of {rel}.")
    args = ["--model", tiny_llama_dir, "--index", index, *CHUNKING]
    rc, _, err = run(capsys, "add", docs, *args, "--exclude", "*.draft.md", "--exclude",
                     "drafts", "--exclude", "node_modules", "--exclude", "archive/*",
                     "--exclude", "empty.txt")  # fmt: skip
    assert rc == 0, err
    assert sorted(docs_of(index)) == ["a.md", "archive.md"]
    assert run(capsys, "add", docs / "empty.txt", *args, "--exclude", "*.txt")[0] == 1  # named


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX open-files limits")
def test_a_low_or_high_open_files_limit_is_kept_as_it_is() -> None:
    """A concurrency audit: mlx-lm sets the open-files limit to (2048, 4096) when imported,
    so under systemd's LimitNOFILE=1024 or `docker --ulimit nofile=1024` every clara command
    stopped with a ValueError traceback, and a higher hard limit was lowered to 4096 for good
    (below what the servers raise their limit to for client connections)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    code = (
        "import clara, mlx_lm.utils, resource; print(*resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    limits = [(512, 1024)]
    if hard == resource.RLIM_INFINITY or hard > 8192:
        limits.append((1024, 8192))
    for low, high in limits:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
            preexec_fn=lambda low=low, high=high: resource.setrlimit(
                resource.RLIMIT_NOFILE, (low, high)
            ),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [str(min(2048, high)), str(high)]  # (mlx-lm's 2048)
