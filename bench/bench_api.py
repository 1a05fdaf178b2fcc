"""The HTTP API's own latency: small requests, a short streamed chat, listing many stores.

Starts clara-serve (the default model) on a temporary home with `--stores` empty vector
stores and times, through the OpenAI SDK (httpx for /health), this checkout and (with
`--baseline REV`) an older revision serving the same state, side by side in one run:

- `GET /health` and `GET /v1/models` on a kept-alive connection;
- a streamed chat of `--max-tokens` tokens: time to its first content and to its end;
- one page of `limit` stores, the newest first (a store picker), per `--limits`;
- every store, paged 100 at a time by the SDK's auto-paging; one store by id.

    python bench/bench_api.py [--stores 400] [--limits 5,20,100] [--baseline 02d9649]

Prints a table and appends it to BENCHMARKS.md. Needs a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402,F401  (OpenBLAS before mlx)
from bench._common import (  # noqa: E402
    add_no_append,
    append_report,
    markdown_table,
    scratch_dir,
    start_run,
)
from clara.paths import models_dir  # noqa: E402
from clara_cli.process import ServerProcess, free_port  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--stores", type=int, default=400, help="vector stores made (default: 400)")
    p.add_argument(
        "--limits", default="5,20,100", help="page sizes timed, comma-separated (default: 5,20,100)"
    )
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="a git revision of this repository to time beside this checkout, on the same state",
    )
    p.add_argument("--seconds", type=float, default=3.0, help="time spent per figure (default: 3)")
    p.add_argument(
        "--max-tokens", type=int, default=8, help="tokens of the streamed chat (default: 8)"
    )
    add_no_append(p)
    return p


def serve(code: Path, home: Path, log: Path) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "-m", "server.cli", "--port", str(port), "--index",
            str(home / "indexes"), "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "CLARA_HOME": str(home), "PYTHONPATH": str(code)}
    return ServerProcess(argv, port=port, cwd=code, env=env, log=log).wait_ready(timeout=600)


def make_stores(client, count: int) -> None:
    start = time.perf_counter()
    for i in range(count):
        client.vector_stores.create(name=f"store {i}", metadata={"n": str(i)})
        if (i + 1) % 50 == 0 or i + 1 == count:
            rate = (i + 1) / (time.perf_counter() - start)
            print(f"  {i + 1}/{count} stores made ({rate:.0f}/s)", file=sys.stderr, flush=True)


def requests(url: str, client, limits: list[int], stores: int, max_tokens: int) -> dict:
    """The timed requests, each checked once for what it returns."""
    import httpx

    plain = httpx.Client(base_url=url)
    out: dict = {
        "GET /health": lambda: plain.get("/health").raise_for_status(),
        "GET /v1/models": lambda: client.models.list(),
    }
    model = client.models.list().data[0].id
    firsts: list[float] = []  # each chat's time to its first content

    def chat() -> None:
        start = time.perf_counter()
        first = None
        stream = client.chat.completions.create(
            model=model, stream=True, max_tokens=max_tokens, temperature=0,
            messages=[{"role": "user", "content": "Name three colours."}],
        )  # fmt: skip
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
        assert first is not None, "the chat streamed no content"
        firsts.append(first)

    out[f"chat of {max_tokens} tokens, streamed"] = chat
    out["firsts"] = firsts
    for limit in limits:
        page = client.vector_stores.list(limit=limit, order="desc")
        assert len(page.data) == min(limit, stores), (limit, len(page.data))
        out[f"one page of {limit} stores"] = lambda n=limit: client.vector_stores.list(
            limit=n, order="desc"
        )

    def everything() -> None:
        seen = [s.id for s in client.vector_stores.list(limit=100)]
        assert len(seen) == len(set(seen)) == stores, (len(seen), stores)

    everything()
    out[f"all {stores} stores, 100 a page"] = everything
    one = client.vector_stores.list(limit=1).data[0].id
    out["one store by id"] = lambda: client.vector_stores.retrieve(one)
    return out


def alternate(calls: dict[str, object], seconds: float) -> dict[str, float]:
    """Median seconds of each revision's call, taken in turns (A, B, A, B, ...) so that other
    work on the machine slows both alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        fn()  # warm-up
    end = time.perf_counter() + seconds * len(calls)
    while time.perf_counter() < end or min(len(t) for t in times.values()) < 5:
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@contextlib.contextmanager
def baseline_tree(rev: str, where: Path):
    """A detached worktree of `rev` at `where`, removed on leaving."""
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run([*git, "add", "-q", "--detach", str(where), rev], check=True)
    try:
        yield where
    finally:
        subprocess.run([*git, "remove", "--force", str(where)], check=False)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import openai

    limits = [int(x) for x in args.limits.split(",")]
    start_run()
    results: dict[str, dict[str, float]] = {}
    with scratch_dir("clara-bench-api-", keep_on_failure="server logs") as tmp:
        home = tmp / "home"
        home.mkdir()
        (home / "models").symlink_to(models_dir())
        with contextlib.ExitStack() as stack:
            codes = {"this checkout": ROOT}
            if args.baseline:
                base = stack.enter_context(baseline_tree(args.baseline, tmp / "baseline"))
                codes = {f"baseline {args.baseline}": base, **codes}
            # made by a server of their own, stopped before the timed ones start: neither of
            # those then holds the stores open from making them
            print(f"making {args.stores} stores ...", file=sys.stderr, flush=True)
            with serve(ROOT, home, tmp / "server-setup.log") as server:
                make_stores(
                    openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0),
                    args.stores,
                )
            calls: dict[str, dict] = {}
            for n, (name, code) in enumerate(codes.items()):
                print(f"[{name}] starting clara-serve ...", file=sys.stderr, flush=True)
                server = stack.enter_context(serve(code, home, tmp / f"server-{n}.log"))
                client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
                calls[name] = requests(server.url, client, limits, args.stores, args.max_tokens)
            firsts = {name: c.pop("firsts") for name, c in calls.items()}
            for what in calls[name]:
                print(f"timing {what} ...", file=sys.stderr, flush=True)
                for f in firsts.values():
                    f.clear()
                took = alternate({n: calls[n][what] for n in calls}, args.seconds)
                for n, t in took.items():
                    results.setdefault(n, {})[what] = t
                    if firsts[n]:  # the chat: its first content, apart
                        first = statistics.median(firsts[n][1:] or firsts[n])
                        results[n][f"{what}: first content"] = first
    names = list(results)
    rows = []
    for what in results[names[-1]]:
        row = [what] + [f"{results[n][what] * 1000:.1f} ms" for n in names]
        if len(names) == 2:
            row.append(f"{results[names[0]][what] / results[names[1]][what]:.1f}x")
        rows.append(row)
    headers = ["request"] + names + (["speed-up"] if len(names) == 2 else [])
    body = markdown_table(headers, rows)
    notes = (
        f"Median wall time of each request, the revisions' servers running at once on the same "
        f"state ({args.stores} empty vector stores with names and metadata, no documents) and "
        f"asked in turns, about {args.seconds:g} s each per figure and at least 5 times, after "
        "a warm-up. The chat's first content is the median of the same chats' first streamed "
        "text."
    )
    if args.no_append:
        print(body + "\n\n" + notes)
    else:
        append_report("The HTTP API's own latency (bench/bench_api.py)", body, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
