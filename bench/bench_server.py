"""End-to-end serving benchmark through HTTP: clara-serve vs llama.cpp and mlx_lm.server.

Four systems answer the same questions from the same retrieved chunks (top 5 of a small index
of ~256-token chunks of Python's documentation topics), streaming, greedy, 32 new tokens each
(EOS ignored so every answer has the same length):

- clara memory: clara-serve, the generator reads the chunks' compressed memories (CLaRa, 16x)
- clara memory prefill 1 / 4 / 8: the same, prefilling requests that arrive together one at
  a time or 4 or 8 to a batch whatever their length (`--prefill-batch N --prefill-tokens 0`;
  the default cuts passes at 320 prompt positions: 2 of these prompts)
- clara memory int8: the same, decoding from int8 weight copies (CLARA_DECODE_WEIGHTS=int8)
- clara memory openblas: the same with every product through OpenBLAS (CLARA_THIN=off), as
  before the thin-matmul kernel
- clara memory bf16 queries: the same with `--query-precision bfloat16` (the query adapter's
  base products on AMX tiles in bfloat16; opt-in, float32 on CPUs without AMX)
- clara mixed:  clara-serve `mode: "mixed"`, the best chunk's text and the others' memories
  (a best chunk seen before is prefilled from the prefix cache: with `--chunks 12` every
  chunk repeats within the default `--prefix-cache-mb`, with 24 the cycle is longer than it)
- clara mixed no reuse: the same with `--prefix-cache-mb 0`: only the newest prefix is kept,
  so consecutive questions (about different chunks) reuse the chat template alone
- clara text:   clara-serve `mode: "text"`, the chunks' raw text in the base model's prompt
- llama.cpp:    llama-cpp-python's OpenAI server on the same GGUF, given that text prompt
                (built into its own venv, `--llama-cpp-venv`, when missing: a compile of up
                to an hour; skipped if it cannot be built)
- mlx_lm.server: `python -m mlx_lm.server` given that text prompt, same float32 weights

Per system and number of concurrent clients (closed loop: each client sends its next request
when the last one ends): time to first token p50/p99, single-stream decode tokens/s (per
request: tokens after the first / time after the first), end-to-end latency p50, aggregate
generated tokens/s over the wall time. Then the issue's four targets as ratios of this run,
and, for clara-serve, where its model thread spent each level (its /metrics: query encoding,
prefill and decode steps per request, and how busy it was), with the aggregate ratio that
thread's work allows: one client's latency over 8 clients' model-thread seconds per request.
With `--repeats N` each system's client counts run in N rounds (every count once per round),
and the 8-client ratios are the median of the rounds' own ratios, printed with their range:
this machine's speed drifts by up to 2x within minutes, which a ratio of two figures
measured minutes apart would take for a difference between client counts.

    python bench/bench_server.py                 # appends the tables to BENCHMARKS.md
    python bench/bench_server.py --systems 'clara memory,llama.cpp' --repeats 4 --min-requests 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import clara  # noqa: F401  # isort: skip  (first: preloads OpenBLAS before mlx loads)
from clara import _blas, _native, paths  # noqa: E402

import httpx

from clara_cli import process
from clara_cli.process import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py
from _common import (  # noqa: E402
    ROOT,
    add_no_append,
    append_report,
    markdown_table,
    scratch_dir,
    start_run,
)

CHUNK_TOKENS = 256
SYSTEMS = (
    "clara memory",
    "clara memory prefill 1",
    "clara memory prefill 4",
    "clara memory prefill 8",
    "clara memory int8",
    "clara memory openblas",
    "clara memory bf16 queries",
    "clara mixed",
    "clara mixed no reuse",
    "clara text",
    "llama.cpp",
    "mlx_lm.server",
)
MEMORY_SYSTEMS = (
    "clara memory",
    "clara memory prefill 1",
    "clara memory prefill 4",
    "clara memory prefill 8",
    "clara memory int8",
    "clara memory openblas",
    "clara memory bf16 queries",
)
# measured at every --levels; the others at --other-levels
FULL_LEVELS = (*MEMORY_SYSTEMS[:5], "clara memory bf16 queries")
VARIANT_ENV = {  # clara-serve variants: the same server with one setting changed
    "clara memory int8": {"CLARA_DECODE_WEIGHTS": "int8"},
    "clara memory openblas": {"CLARA_THIN": "off"},  # as before the thin-matmul kernel
}
VARIANT_ARGS = {  # clara-serve variants: one command-line setting changed
    "clara memory prefill 1": ["--prefill-batch", "1"],  # one at a time, as before batching
    "clara memory prefill 4": ["--prefill-batch", "4", "--prefill-tokens", "0"],
    "clara memory prefill 8": ["--prefill-batch", "8", "--prefill-tokens", "0"],
    "clara memory bf16 queries": ["--query-precision", "bfloat16"],  # opt-in, AMX CPUs
    "clara mixed no reuse": ["--prefix-cache-mb", "0"],  # the newest prefix kept, no more
}
LLAMA_CPP = "0.3.36"
#: llama.cpp's vector code for this CPU (a build with AVX-512 dies of an illegal instruction
#: on AVX2-only CPUs); one venv per instruction set
LLAMA_ISA = "avx512" if "avx512f" in _native.cpu_flags() else "avx2"
LLAMA_VENV = paths.home() / "bench" / f"llama-cpp-venv-{LLAMA_ISA}"  # --llama-cpp-venv
LLAMA_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    f"-DGGML_AVX512={'ON' if LLAMA_ISA == 'avx512' else 'OFF'}"
)
EOS_BIAS = {"0": -1e9, "2": -1e9}  # SmolLM2's <|endoftext|>, <|im_end|>: 32 tokens for all


def build_index(root: Path, docs: Path, n_chunks: int, n_questions: int, top_k: int):
    """Index ~256-token chunks of Python's doc topics; return (questions, retrieved texts)."""
    import numpy as np
    from pydoc_data.topics import topics

    from clara.checkpoint import load_clara
    from indexing.chunking import chunk_document
    from indexing.readers import read_document
    from indexing.store import ChunkRecord, Collection

    cm = load_clara("smollm2-135m")
    docs.mkdir(parents=True, exist_ok=True)
    picked = []  # (path, document, its first full-size chunks)
    for name in sorted(topics):
        have = sum(len(c) for _, _, c in picked)
        if have >= n_chunks:
            break
        path = docs / f"{name}.txt"
        path.write_text(topics[name])
        doc = read_document(path)
        chunks = chunk_document(doc, cm.tokenizer, CHUNK_TOKENS, 32)[:2]
        chunks = [c for c in chunks if c.n_tokens >= CHUNK_TOKENS * 3 // 4][: n_chunks - have]
        if chunks:
            picked.append((path, doc, chunks))
    texts = [c.text for _, _, chunks in picked for c in chunks]
    print(f"compressing {len(texts)} chunks of ~{CHUNK_TOKENS} tokens ...", flush=True)
    start = time.perf_counter()
    memories = np.array(cm.compress(texts))  # (N, n_mem, d)
    print(f"  {time.perf_counter() - start:.0f}s", flush=True)
    row = 0
    with Collection.open(root, "default", cm.manifest(), create=True) as coll:
        for path, doc, chunks in picked:
            records = [ChunkRecord(c.text, c.page_start, c.page_end, c.n_tokens) for c in chunks]
            mem = memories[row : row + len(chunks)]
            coll.add_document(str(path), path.name, doc.sha256, records, mem)
            row += len(chunks)
        step = max(1, len(texts) // n_questions)
        questions = []
        for i in range(n_questions):
            words = " ".join(texts[(i * step) % len(texts)].split()[:10])
            questions.append(f"What does the Python documentation say about this: {words}?")
        vectors = np.array(cm.encode_queries(questions))  # (Q, n_mem, d)
        # dense top-k, no rerank: the baselines' prompts (retrieval is not timed here)
        retrieved = [
            [h.text for h in coll.retrieve(q, v, top_k, mode="dense")]
            for q, v in zip(questions, vectors)
        ]
    return questions, retrieved


def float32_copy(out: Path) -> Path:
    """The default model's weights dequantized to float32 (what clara-serve runs on CPU)."""
    from clara.gguf import prepare_default_model

    cmd = [sys.executable, "-m", "mlx_lm.convert", "--hf-path", str(prepare_default_model())]
    cmd += ["--mlx-path", str(out), "-d", "--dtype", "float32"]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def start(cmd: list[str], health: str, log: Path, env: dict | None = None) -> subprocess.Popen:
    """`cmd` running, its output in `log`, once `health` answers 200 (5 minutes at most)."""
    proc = process.start_server(cmd, env=env, cwd=ROOT, log=log)
    try:
        process.wait_healthy(health, proc, timeout=300)
    except process.ServerExitedError as e:
        raise RuntimeError(f"{cmd[:3]} exited ({e.how}):\n{log.read_text()[-3000:]}") from None
    except process.ServerTimeoutError:
        proc.terminate()
        raise RuntimeError(f"{cmd[:3]} did not start:\n{log.read_text()[-3000:]}") from None
    return proc


def stop(proc: subprocess.Popen) -> None:
    process.stop(proc, grace=30)


async def one(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    t0 = time.perf_counter()
    ttft, usage, pieces = None, None, 0
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if any((c.get("delta") or {}).get("content") for c in data.get("choices") or []):
                ttft = ttft or time.perf_counter() - t0
                pieces += 1
            usage = data.get("usage") or usage
    usage = usage or {"completion_tokens": pieces}  # llama-cpp-python: one chunk per token
    return {"ttft": ttft, "latency": time.perf_counter() - t0, "usage": usage}


PHASES = ("query_encode", "prefill", "decode_step")  # clara-serve's model-thread histograms


def model_seconds(port: int) -> dict[str, float] | None:
    """Seconds clara-serve's model thread has spent so far in each of `PHASES` (the sums of
    its /metrics histograms over every label); None for a server without them."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    except httpx.HTTPError:
        return None
    out = dict.fromkeys(PHASES, 0.0)
    for line in text.splitlines():
        m = re.match(r"clara_(\w+)_seconds_sum(?:\{[^}]*\})? (\S+)$", line)
        if m and m.group(1) in out:
            out[m.group(1)] += float(m.group(2))
    return out if "clara_decode_step_seconds" in text else None


def phases(before: dict[str, float], after: dict[str, float], r: dict) -> dict[str, float]:
    """Model-thread seconds per request in each phase between two `model_seconds` readings,
    their total, and the share of the level's wall time that thread was busy."""
    spent = {k: after[k] - before[k] for k in PHASES}
    out = {f"{k}_s": v / r["requests"] for k, v in spent.items()}
    out["model_s"] = sum(spent.values()) / r["requests"]
    out["busy"] = sum(spent.values()) / r["wall"]
    return out


async def level(url: str, bodies: list[dict], concurrency: int) -> dict:
    """Send `bodies` with `concurrency` clients at a time; return the summary row."""
    todo = list(bodies)
    results: list[dict] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        while todo:
            results.append(await one(client, url, todo.pop(0)))

    async with httpx.AsyncClient(timeout=1800) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    completion = [r["usage"].get("completion_tokens", 0) for r in results]
    ttfts = sorted(r["ttft"] for r in results)
    decode = [
        (n - 1) / (r["latency"] - r["ttft"])
        for r, n in zip(results, completion)
        if n > 1 and r["latency"] > r["ttft"]
    ]
    return {
        "requests": len(results),
        "ttft": statistics.median(ttfts),
        "ttft_p99": ttfts[min(len(ttfts) - 1, round(0.99 * (len(ttfts) - 1)))],
        "decode": statistics.median(decode) if decode else float("nan"),
        "latency": statistics.median(r["latency"] for r in results),
        # (llama-cpp-python streams no usage: unknown, not 0)
        "prompt": statistics.mean(
            [r["usage"]["prompt_tokens"] for r in results if "prompt_tokens" in r["usage"]]
            or [float("nan")]
        ),
        "completion": statistics.mean(completion),
        "rps": len(results) / wall,
        "tps": sum(completion) / wall,
        "wall": wall,
    }


def median_run(runs: list[dict]) -> dict:
    """Each figure's median over repeated runs of one level (requests: their total)."""
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["requests"] = sum(r["requests"] for r in runs)
    return out


def bodies_for(system: str, questions, retrieved, max_tokens: int, top_k: int) -> list[dict]:
    from clara.prompt import answer_messages

    common = {"max_tokens": max_tokens, "temperature": 0.0, "stream": True}
    common["stream_options"] = {"include_usage": True}
    out = []
    for q, chunks in zip(questions, retrieved):
        if system in ("mlx_lm.server", "llama.cpp"):  # clara's text-mode prompt, as messages
            messages = answer_messages(q, "\n".join(chunks))
            out.append({**common, "messages": messages, "logit_bias": EOS_BIAS})
        else:
            mode = "memory" if system in MEMORY_SYSTEMS else system.split()[1]  # mixed, text
            messages = [{"role": "user", "content": q}]
            out.append(
                {**common, "messages": messages, "mode": mode, "top_k": top_k, "ignore_eos": True}
            )
    return out


def llama_cpp_python(venv: Path) -> Path | None:
    """The llama-cpp-python venv's interpreter, built (it compiles llama.cpp) when missing;
    None, said aloud, if it cannot be built."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import llama_cpp.server"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(
        f"building llama-cpp-python[server]=={LLAMA_CPP} into {venv} for the llama.cpp rows: pip "
        "downloads it and compiles llama.cpp, 10 to 60 minutes (leave llama.cpp out of "
        "--systems to skip it)",
        file=sys.stderr,
        flush=True,
    )
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--no-cache-dir"]
        pip.append(f"llama-cpp-python[server]=={LLAMA_CPP}")  # no wheel built for another CPU
        # A -march=native build enabled AMX tiles this VM reports but faults on (general
        # protection fault in libggml-cpu at the first request): build for AVX2/AVX-512 instead.
        env = {**os.environ, "CMAKE_ARGS": LLAMA_CMAKE_ARGS}
        subprocess.run(pip, check=True, timeout=3600, env=env)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"llama.cpp skipped: could not build llama-cpp-python ({exc})")
        return None
    return python


def server_command(system: str, port: int, index: Path, f32: Path, gguf: Path, python):
    if system == "mlx_lm.server":
        # `import clara` first: the same OpenBLAS fast path clara-serve gets (the wheel's
        # reference BLAS is ~50x slower); prompt cache off: every request prefills it all.
        run = "import clara; from mlx_lm.server import main; main()"
        cmd = [sys.executable, "-c", run, "--model", str(f32), "--port", str(port)]
        return cmd + ["--prompt-cache-size", "0"], f"http://127.0.0.1:{port}/health"
    if system == "llama.cpp":
        cmd = [str(python), "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port)]
        cmd += ["--n_ctx", "4096", "--n_threads", str(os.cpu_count())]
        return cmd, f"http://127.0.0.1:{port}/v1/models"
    cmd = [sys.executable, "-m", "server.cli", "--index", str(index), "--port", str(port)]
    cmd += ["--queue-size", "64", "--log-level", "warning", *VARIANT_ARGS.get(system, [])]
    return cmd, f"http://127.0.0.1:{port}/health"


def targets(rows: dict, compression: float | None) -> str:
    """The issue's four targets as measured in this run: only the rows whose systems and
    client counts ran (a ratio to a baseline left out of --systems is no figure)."""

    def get(system, clients, key):
        return rows[(system, clients)][key]

    def ran(*levels) -> bool:
        return all(level in rows for level in levels)

    def ratio(system: str, at: int, medians: float) -> str:
        """8 clients over 1: the median of the rounds' ratios, with their range, when the
        levels ran in several rounds; else the ratio of the two medians."""
        rounds = (rows.get((system, 8)) or {}).get("rounds") or []
        if len(rounds) < 2:
            return f"{medians:.2f}x"
        each = sorted(r[at] for r in rounds)
        return f"{statistics.median(each):.2f}x (rounds {each[0]:.2f}-{each[-1]:.2f})"

    mem, llama = ("clara memory", 1), ("llama.cpp", 1)
    lines = []
    if ran(mem):
        mem1 = get(*mem, "decode")
        lines.append(["single-stream decode (clara memory)", f"{mem1:.1f} tok/s", ">= 20 tok/s"])
        if ran(llama):
            llama1 = get(*llama, "decode")
            lines.append(
                ["  vs llama.cpp's", f"{mem1 / llama1:.2f}x ({llama1:.1f} tok/s)", ">= 0.4x"]
            )
    for system, label in (("clara memory int8", "  with int8 decode weights"),
                          ("clara memory openblas", "  every product through OpenBLAS")):  # fmt: skip
        if ran((system, 1)):
            tps = get(system, 1, "decode")
            vs = f", {tps / get(*llama, 'decode'):.2f}x" if ran(llama) else ""
            lines.append([label, f"{tps:.1f} tok/s{vs}", ""])
    bq = "clara memory bf16 queries"
    for i, (key, label, goal) in enumerate(
        (("tps", "8 clients aggregate vs 1 client", ">= 5x"),
         ("ttft", "8 clients TTFT p50 vs 1 client", "<= 3x"))
    ):  # fmt: skip
        if ran(mem, ("clara memory", 8)):
            text = ratio("clara memory", i, get("clara memory", 8, key) / get(*mem, key))
            lines.append([label, text, goal])
        if ran((bq, 1), (bq, 8)):  # the opt-in beside the default, same run
            text = ratio(bq, i, get(bq, 8, key) / get(bq, 1, key))
            lines.append(["  with --query-precision bfloat16", text, ""])
    if ran(mem, llama):
        ratio_e2e = get(*mem, "latency") / get(*llama, "latency")
        lines.append(["memory e2e latency vs llama.cpp text RAG", f"{ratio_e2e:.2f}x", "<= 0.5x"])
    if compression is not None:
        lines.append(["compression (256-token chunks)", f"{compression:.2f} chunks/s", ">= 2.5"])
    return markdown_table(["target", "measured", "goal"], lines) if lines else ""


def thread_table(rows: dict) -> str:
    """Where clara-serve's model thread spent each level, per request, and the aggregate
    ratio over one client that its work at 8 clients allows (if it were never idle)."""
    lines = []
    for (system, clients), r in rows.items():
        if "model_s" not in r:
            continue
        lines.append(
            [system, clients] + [f"{r[k + '_s'] * 1000:.0f}" for k in PHASES]
            + [f"{r['model_s'] * 1000:.0f}", f"{100 * r['busy']:.0f}%"]
        )  # fmt: skip
    for system in sorted({s for s, _ in rows}):
        one, eight = rows.get((system, 1), {}), rows.get((system, 8), {})
        if "model_s" in eight and "latency" in one:
            bound = one["latency"] / eight["model_s"]
            lines.append([system, "8 vs 1", "", "", "", f"aggregate at most {bound:.2f}x", ""])
    if not lines:  # no clara-serve system in this run
        return ""
    headers = ["system", "clients", "query encoding ms", "prefill ms", "decode steps ms",
               "model thread ms", "busy"]  # fmt: skip
    return "Per request, on clara-serve's model thread (its /metrics):\n\n" + markdown_table(
        headers, lines
    )


def compression_speed(n: int = 8) -> float:
    """Compressor chunks/s on `n` chunks of 256 tokens at the default batch setting."""
    from pydoc_data.topics import topics

    from clara.checkpoint import load_clara

    cm = load_clara("smollm2-135m")
    cm.pack_base_weights(compressor=True)  # as clara-index add does
    texts = []
    for name in sorted(topics):
        ids = cm.tokenize([topics[name]])[0]
        if len(ids) >= CHUNK_TOKENS:
            texts.append(cm.tokenizer.decode(ids[:CHUNK_TOKENS]))
        if len(texts) == n:
            break
    cm.compress(texts[:2])
    start = time.perf_counter()
    cm.compress(texts)
    return n / (time.perf_counter() - start)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", type=int, default=24, help="chunks to index (default: 24)")
    p.add_argument(
        "--top-k", type=int, default=5, help="chunks retrieved per question (default: 5)"
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=32,
        help="new tokens per answer, EOS ignored (default: 32)",
    )
    p.add_argument("--levels", default="1,4,8,16", help="clara memory's clients (1,4,8,16)")
    p.add_argument(
        "--other-levels", default="1,8", help="clients for the other systems (default: 1,8)"
    )
    p.add_argument("--min-requests", type=int, default=3, help="requests per level at least")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run each system's levels this many rounds (default: 1; every level once per round) and "
        "report each figure's median, and the 8-client ratios as the median of the rounds' "
        "ratios (this machine's speed moved up to 2x between runs minutes apart)",
    )
    p.add_argument(
        "--systems", default=",".join(SYSTEMS),
        help="comma-separated subset of: " + ", ".join(SYSTEMS) + " (default: all; llama.cpp "
        "needs llama-cpp-python, built into --llama-cpp-venv on first use)",
    )  # fmt: skip
    p.add_argument(
        "--llama-cpp-venv", type=Path, default=LLAMA_VENV, metavar="DIR",
        help="venv with llama-cpp-python[server] for the llama.cpp system; when it has none, "
        f"it is created there and llama.cpp compiled for this CPU ({LLAMA_ISA}; 10 to 60 "
        f"minutes). Default: $CLARA_HOME/bench/llama-cpp-venv-{LLAMA_ISA}, here {LLAMA_VENV}",
    )  # fmt: skip
    add_no_append(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if not systems or unknown:
        p.error(f"--systems: unknown {unknown or 'none given'}; choose from: {', '.join(SYSTEMS)}")
    levels = {}
    for name in ("levels", "other_levels"):
        try:
            levels[name] = [int(x) for x in getattr(args, name).split(",") if x.strip()]
        except ValueError:
            levels[name] = []
        if not levels[name] or min(levels[name]) < 1:
            p.error(f"--{name.replace('_', '-')}: comma-separated client counts of 1 or more")
    for name in ("chunks", "top_k", "max_tokens", "min_requests", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be 1 or more")
    start_run()  # (its figures are medians over many requests, whatever --repeats)
    load_before = os.getloadavg()
    plan = {s: levels["levels" if s in FULL_LEVELS else "other_levels"] for s in systems}
    most = args.repeats * max(
        sum(max(c, args.min_requests) for c in counts) for counts in plan.values()
    )
    with scratch_dir("clara-bench-server-", "the servers' logs") as tmp:
        return measure(args, systems, plan, most, tmp, load_before)


def measure(args, systems: list[str], plan: dict, most: int, tmp: Path, load_before) -> int:
    """Index, start each system's server in turn, measure it, report."""
    from clara.gguf import default_gguf_path

    questions, retrieved = build_index(
        tmp / "index", tmp / "docs", args.chunks, most + 1, args.top_k
    )
    f32 = float32_copy(tmp / "smollm2-f32") if "mlx_lm.server" in systems else None
    python = llama_cpp_python(args.llama_cpp_venv) if "llama.cpp" in systems else None
    results: dict = {}
    rows = []
    for system in systems:
        if system == "llama.cpp" and python is None:
            continue
        port = free_port()
        cmd, health = server_command(system, port, tmp / "index", f32, default_gguf_path(), python)
        env = {**os.environ, **VARIANT_ENV[system]} if system in VARIANT_ENV else None
        proc = start(cmd, health, tmp / f"{system.replace(' ', '-')}.log", env)
        try:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            bodies = bodies_for(system, questions, retrieved, args.max_tokens, args.top_k)
            asyncio.run(level(url, [{**bodies[0], "max_tokens": 2}], 1))  # warm-up, not measured
            used = 1
            # llama-cpp-python's server runs one request at a time and dropped concurrent
            # streams mid-answer here (RemoteProtocolError): 1 client only
            levels = [c for c in plan[system] if system != "llama.cpp" or c == 1]
            runs: dict[int, list[dict]] = {c: [] for c in levels}
            # Rounds: every level once per round, so the levels of one round are measured
            # within a minute or two of each other and their ratios share the machine's speed
            # (it moved by up to 2x between runs minutes apart here).
            for _ in range(args.repeats):
                for concurrency in levels:
                    n = max(concurrency, args.min_requests)
                    before = model_seconds(port)
                    r = asyncio.run(level(url, bodies[used : used + n], concurrency))
                    after = model_seconds(port) if before else None
                    runs[concurrency].append({**r, **phases(before, after, r)} if after else r)
                    used += n
            for concurrency in levels:
                r = median_run(runs[concurrency])
                results[(system, concurrency)] = r
                if 1 in runs and concurrency > 1:  # this level over one client, round by round
                    r["rounds"] = [
                        (many["tps"] / one["tps"], many["ttft"] / one["ttft"])
                        for one, many in zip(runs[1], runs[concurrency])
                    ]
                print(system, concurrency, r, flush=True)
                rows.append(
                    [system, concurrency, r["requests"], f"{r['prompt']:.0f}" if r["prompt"] == r["prompt"] else "unknown", f"{r['completion']:.0f}",
                     f"{r['ttft']:.2f}", f"{r['ttft_p99']:.2f}", f"{r['decode']:.1f}",
                     f"{r['latency']:.2f}", f"{r['tps']:.1f}"]
                )  # fmt: skip
        finally:
            stop(proc)
    compression = compression_speed()
    load_after = os.getloadavg()
    headers = ["system", "clients", "requests", "prompt positions", "new tokens", "TTFT p50 s",
               "TTFT p99 s", "decode tok/s (per request)", "latency p50 s",
               "aggregate tok/s"]  # fmt: skip
    table = markdown_table(headers, rows)
    if goals := targets(results, compression):
        table += "\n\n" + goals
    if thread := thread_table(results):
        table += "\n\n" + thread
    notes = (
        f"Index: {args.chunks} chunks of ~{CHUNK_TOKENS} tokens (Python doc topics), top-{args.top_k} "
        f"retrieval, {args.max_tokens} new tokens per answer (EOS ignored), greedy, streaming over "
        "HTTP on localhost, closed-loop clients. clara-serve decodes concurrent requests as one "
        "continuous batch; llama-cpp-python's server answers one request at a time; "
        "mlx_lm.server batches (its prompt cache off, as every request has new chunks) with the "
        "same OpenBLAS as clara. llama.cpp runs the GGUF's 4-bit weights, mlx_lm float32; "
        + (
            f"clara's generator products (prefill and decode) run in bfloat16 ({_blas.bf16_engine}) "
            "from a packed copy of the decode-only weights, its query encodings and compression "
            "in float32. "
            if _blas.bf16
            else "clara prefills in float32 and decodes from float16 copies of the decode-only "
            "weights (int8 in the int8 row) through its thin-matmul kernel. "
        )
        + f"Load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1 min): "
        "the machine is shared with other jobs, so absolute figures are pessimistic and noisy; "
        "the ratios compare systems measured minutes apart in one run."
        + (
            f" Each system's levels ran in {args.repeats} rounds (every level once per round, "
            "so a round's levels are measured minutes apart at most); every figure is the "
            "median of the rounds (requests: their total), and the 8-client ratios are the "
            "median of the rounds' own ratios, with their range."
            if args.repeats > 1
            else ""
        )  # fmt: skip
    )
    if args.no_append:
        print(table + "\n\n" + notes)
    else:
        append_report(
            "Serving: clara-serve vs llama.cpp and mlx_lm.server, end to end", table, notes
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
