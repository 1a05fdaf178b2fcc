"""`make demo` (`clara-demo`): index sample documents, start the server, ask through the official openai SDK.

Sample documents are ones every machine has (a few of Python's documentation topics) plus a
small PDF this script writes, so nothing is downloaded. Everything lives under
`$CLARA_HOME/demo`; a second run reuses the index (unchanged files are skipped). The
server takes a free port, or `--port` (`$CLARA_DEMO_PORT`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import clara  # noqa: F401  preloads OpenBLAS before anything imports mlx
from clara.paths import home
from clara_cli.process import (
    ServerExitedError,
    ServerProcess,
    ServerTimeoutError,
    free_port,
    port_free,
)

TOPICS = ("assert", "lambda", "pass", "continue", "while", "global", "del", "return")
QUESTION = "What does the assert statement do in Python?"
MAX_TOKENS = 64
PDF_FACTS = [
    "The Clara demo handbook.",
    "The demo index lives under the CLARA_HOME folder, in demo/index.",
    "Each chunk of 256 tokens is compressed into 16 memory vectors, a compression rate of 16x.",
    "The generation server speaks the OpenAI chat completions protocol on port 8000 by default.",
]


def write_documents(folder: Path) -> Path:
    from pydoc_data.topics import topics

    folder.mkdir(parents=True, exist_ok=True)
    for name in TOPICS:
        f = folder / f"python-{name}.txt"
        text = f"Python reference: the {name} statement\n\n{topics[name].strip()}\n"
        if not f.exists() or f.read_text() != text:
            f.write_text(text)
    pdf = folder / "clara-handbook.pdf"
    if not pdf.exists():
        from fpdf import FPDF

        doc = FPDF()
        doc.add_page()
        doc.set_font("Helvetica", size=12)
        for line in PDF_FACTS:
            doc.multi_cell(0, 8, line, new_x="LMARGIN", new_y="NEXT")
        doc.output(str(pdf))
    return folder


def drop_stale_index(index: Path) -> None:
    """The demo index is ours to rebuild: drop it when it was made by other adapters
    (e.g. before the shipped default adapters were installed)."""
    import json
    import shutil

    from clara.checkpoint import DEFAULT_CHECKPOINT, index_fingerprints

    manifest = index / "default" / "manifest.json"
    if not manifest.exists() or not DEFAULT_CHECKPOINT.exists():
        return
    if json.loads(manifest.read_text()).get("fingerprint") not in index_fingerprints(
        DEFAULT_CHECKPOINT
    ):
        print("==> The demo index was built by other adapters; rebuilding it", flush=True)
        shutil.rmtree(index)


def answer(resp) -> str:
    """The reply's text, marked where the token limit cut it."""
    choice = resp.choices[0]
    text = choice.message.content.strip()
    return text + f" [cut at {MAX_TOKENS} tokens]" if choice.finish_reason == "length" else text


#: What the demo needs beyond clara's own dependencies: module -> its package on PyPI
NEEDS = {"openai": "openai", "fpdf": "fpdf2"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from clara_cli.common import add_version_arg

    parser = argparse.ArgumentParser(
        prog="clara-demo",
        description="Index a few sample documents (Python's documentation of eight statements\n"
        "and a small PDF it writes; nothing is downloaded) under $CLARA_HOME/demo, start\n"
        "clara-serve on them, and ask one question through the openai SDK: as 16x memory,\n"
        "as raw text and mixed, with the sources. A second run reuses the index.",
        epilog="examples:\n  clara-demo\n  clara-demo --port 8000\n  CLARA_HOME=/tmp/c "
        "clara-demo                  # somewhere else than ~/.cache/clara",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="the port of the server it starts (default: $CLARA_DEMO_PORT, else a free one)",
    )
    add_version_arg(parser)
    args = parser.parse_args(argv)
    given = "--port"
    if args.port is None:
        given, env = "CLARA_DEMO_PORT", os.environ.get("CLARA_DEMO_PORT", "").strip()
        try:
            args.port = int(env or 0)
        except ValueError:
            parser.error(f"CLARA_DEMO_PORT={env!r}: give a port number (1-65535)")
    if not 0 <= args.port <= 65535:
        parser.error(f"{given} {args.port}: a port is 1-65535 (0: a free one)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [package for module, package in NEEDS.items() if find_spec(module) is None]
    if missing:  # (a package user had a traceback after the sample texts were written)
        raise SystemExit(
            f"demo: it needs {' and '.join(missing)}: pip install 'clara-rag[demo]' (in a "
            "checkout: pip install -e '.[demo]', or make install)"
        )
    if args.port and not port_free(args.port):  # (another server there answered for the demo's)
        raise SystemExit(
            f"demo: port {args.port} is in use (another clara-serve?): give another with "
            "--port, or leave it out for a free one"
        )
    root = home() / "demo"
    docs = write_documents(root / "docs")
    index = root / "index"
    drop_stale_index(index)
    py = sys.executable
    print(f"==> Indexing sample documents from {docs}", flush=True)
    # (-P: clara's own modules, not a user's server.py or indexing/ in the folder it runs in)
    argv = [py, "-P", "-m", "indexing.cli", "add", str(docs), "--index", str(index)]
    status = subprocess.call(argv)
    if status not in (0, 1):
        return status

    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"==> Starting clara-serve on {url}", flush=True)
    env = {**os.environ, "CLARA_QUIET_BLAS": "1"}
    # its output stays on the terminal (a failed start says why there), warnings only: its
    # access log would bury the answers
    argv = [py, "-P", "-m", "server.cli", "--index", str(index), "--port", str(port)]
    with ServerProcess(argv + ["--log-level", "warning"], port=port, env=env) as server:
        try:
            server.wait_ready(timeout=300, interval=1)
        except ServerExitedError as e:
            raise SystemExit(f"demo: the server exited early (status {e.returncode})") from None
        except ServerTimeoutError:
            raise SystemExit("demo: the server did not become healthy in time") from None

        import httpx
        from openai import OpenAI

        # (its own server: not through an HTTP_PROXY set for the outside world)
        client = OpenAI(
            base_url=f"{url}/v1", api_key="not-needed", http_client=httpx.Client(trust_env=False)
        )
        model = client.models.list().data[0].id
        print(f"==> Asking {model} through the openai SDK: {QUESTION}\n", flush=True)
        resp = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=MAX_TOKENS,
            # CLaRa itself: every chunk as memory (the shipped adapters' default is "mixed")
            extra_body={"retrieval_mode": "hybrid", "mode": "memory"},
        )
        from clara.checkpoint import DEFAULT_CHECKPOINT

        msg = resp.choices[0].message
        note = (
            "the shipped default adapters are small and briefly trained: memory answers find the "
            "topic but often miss the asked detail; see README, 'The shipped adapters'"
            if DEFAULT_CHECKPOINT.exists()
            else "no trained adapters are installed, so this answer comes from untrained ones"
        )
        print(f"Answer: {answer(resp)}\n({note})\n")
        mode = (resp.model_extra or {}).get("retrieval", {}).get("retrieval_mode", "hybrid")
        print(f"Sources ({mode} retrieval: memory vectors and words, fused by rank):")
        for s in (msg.model_extra or {}).get("sources", []):
            pages = f" p.{s['page_start']}-{s['page_end']}" if s.get("page_start") else ""
            snippet = " ".join(s.get("snippet", "").split())[:80]
            ranks = ", ".join(f"{n} #{r}" for n, r in (s.get("ranks") or {}).items() if r)
            print(f"  [{s['score']:.4f}] {s['filename']}{pages} ({ranks}): {snippet}...")
        u = resp.usage
        print(
            f"\nThe generator read {u.prompt_tokens} positions "
            f"({model} reads each retrieved chunk as 16x-compressed memory vectors)."
        )
        # The same retrieval with the chunks as raw text to the bare model (classic RAG): what
        # the compression saves, and how the two answers compare.
        text = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=MAX_TOKENS,
            extra_body={"mode": "text"},
        )
        mixed = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=MAX_TOKENS,
            extra_body={"mode": "mixed"},
        )
        print(
            f"\nSame retrieval, chunks as raw text ({text.usage.prompt_tokens} positions): "
            f"{answer(text)}"
        )
        print(
            f"\nMixed: the best chunk as text, the others as memory ({mixed.usage.prompt_tokens} "
            f"positions): {answer(mixed)}\n(clara-serve's default with these adapters: it "
            "answered held-out questions best; README, 'Which mode')"
        )
        print(
            f"\nNext: serve this index with `clara-serve --index {index}` and open "
            "http://127.0.0.1:8000/ for the web chat (the examples in clients/ ask about these "
            "documents), or index your own with `clara-index add PATH`."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
