"""Prefill/decode speed of the default model: OpenBLAS vs reference BLAS, 4-bit vs float weights.

    .venv/bin/python bench/bench_model.py            # prints a table, appends it to BENCHMARKS.md

The BLAS library is chosen when clara is first imported, so each BLAS setting runs in its own
subprocess (`CLARA_BLAS=off` keeps MLX's reference BLAS). Each subprocess loads the model in every
`--dtypes` setting, times prefill of a ~512-token chat prompt (time to first token) and decode of
`--decode` tokens (greedy), and reports the median of `--repeats` runs plus the greedy tokens, so
the parent can check that BLAS on/off generate the same text.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, UTC
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import add_no_append, run_warnings, start_run  # noqa: E402

BLAS_SETTINGS = {"openblas": None, "reference": "off"}  # name -> CLARA_BLAS value
DTYPE_LABELS = {"stored": "4-bit (stored)", "float32": "float32", "bfloat16": "bfloat16"}

_DOC = (
    "The harbour town of Velden grew around a salt market in the twelfth century. Merchants "
    "from the river valleys brought grain, wool and timber, and left with salt, dried fish and "
    "news. In 1473 a fire destroyed most of the wooden warehouses; the council rebuilt them in "
    "stone and paid for a lighthouse with a tax on every barrel that crossed the quay. "
)
_ASK = "\n\nSummarize the history of Velden in two sentences."


def _prompt_ids(tokenizer, n_tokens: int) -> list[int]:
    """A chat-templated prompt of at most `n_tokens` tokens (as close as whole words allow)."""
    words = (_DOC * (n_tokens // 40 + 2)).split()

    def ids(n_words: int) -> list[int]:
        content = " ".join(words[:n_words]) + _ASK
        messages = [{"role": "user", "content": content}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True)

    lo, hi = 0, len(words)
    while lo < hi:  # largest word count that still fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if len(ids(mid)) <= n_tokens else (lo, mid - 1)
    return ids(lo)


def _time_once(model, prompt, n_decode: int) -> tuple[float, float, list[int]]:
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    tokens: list[int] = []
    start = time.perf_counter()
    first = start
    for i, (token, _) in enumerate(generate_step(mx.array(prompt), model, max_tokens=n_decode)):
        if i == 0:
            first = time.perf_counter()
        tokens.append(int(token))
    end = time.perf_counter()
    prefill_tps = len(prompt) / (first - start)
    decode_tps = (len(tokens) - 1) / (end - first)
    return prefill_tps, decode_tps, tokens


def worker(args: argparse.Namespace) -> None:
    """Run in a subprocess: time every dtype under this process's BLAS, print one JSON line."""
    from clara import _blas  # noqa: F401  imported first: decides the BLAS
    from clara.loader import load_base

    results = []
    for dtype in args.dtypes:
        t0 = time.perf_counter()
        base = load_base("smollm2-135m", dtype=None if dtype == "stored" else dtype)
        load_s = time.perf_counter() - t0
        prompt = _prompt_ids(base.tokenizer, args.prompt)
        _time_once(base.model, prompt[:32], 4)  # warm-up
        runs = [_time_once(base.model, prompt, args.decode) for _ in range(args.repeats)]
        print(
            f"  {dtype}: prefill {[round(r[0], 1) for r in runs]} tok/s, "
            f"decode {[round(r[1], 1) for r in runs]} tok/s",
            file=sys.stderr,
            flush=True,
        )
        results.append(
            {
                "dtype": dtype,
                "load_s": load_s,
                "prompt_tokens": len(prompt),
                "prefill_tps": statistics.median(r[0] for r in runs),
                "decode_tps": statistics.median(r[1] for r in runs),
                "tokens": runs[0][2],
                "stable": all(r[2] == runs[0][2] for r in runs),  # greedy repeats agree
                "text": base.tokenizer.decode(runs[0][2]),
            }
        )
        del base
    print(json.dumps({"blas": _blas.loaded, "reason": _blas.reason, "results": results}))


def _run_setting(name: str, value: str | None, argv: list[str]) -> dict:
    env = dict(os.environ)
    env.pop("CLARA_BLAS", None)
    if value is not None:
        env["CLARA_BLAS"] = value
    env.setdefault("HF_HUB_OFFLINE", "1")
    print(f"[{name} BLAS] running...", file=sys.stderr, flush=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", *argv],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def _machine() -> str:
    from bench._common import cpu_name, ram_gib

    cpu, mem = cpu_name(), ram_gib()
    ram = "RAM unknown" if mem != mem else f"{mem:.1f} GiB RAM"
    uname = " ".join(part for part in platform.uname() if part)
    return f"{uname}; {cpu}; {os.cpu_count()} cores; {ram}"


def _report(
    settings: dict[str, dict], args: argparse.Namespace, command: str, loads: tuple[str, str]
) -> str:
    import mlx.core as mx

    ref = settings.get("openblas")
    lines = [
        "| BLAS | weights | prefill tok/s | decode tok/s | load s | greedy = OpenBLAS run |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, data in settings.items():
        label = f"{name} ({data['blas'] or data['reason']})"
        for r in data["results"]:
            same = "—"
            if ref is not None and name != "openblas":
                other = next(x for x in ref["results"] if x["dtype"] == r["dtype"])
                same = "yes" if other["tokens"] == r["tokens"] else _diverges(other, r)
            lines.append(
                f"| {label} | {DTYPE_LABELS.get(r['dtype'], r['dtype'])} | {r['prefill_tps']:.1f} "
                f"| {r['decode_tps']:.1f} | {r['load_s']:.1f} | {same} |"
            )
    prompt_tokens = settings[next(iter(settings))]["results"][0]["prompt_tokens"]
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"## Default model (SmolLM2-135M-Instruct) prefill/decode, {date}",
            "",
            f"Command: `{command}`  ",
            f"Machine: {_machine()}  ",
            f"Load average (1/5/15 min) before: {loads[0]}, after: {loads[1]} (shared machine)  ",
            f"mlx {mx.__version__}, mlx-lm {_version('mlx_lm')}; prompt {prompt_tokens} tokens "
            f"(prefill = time to first token), decode {args.decode} greedy tokens, "
            f"median of {args.repeats} runs.",
            "",
            *lines,
            "",
            *(f"**Warning**: {w}.\n" for w in run_warnings()),
        ]
    )


def _diverges(a: dict, b: dict) -> str:
    n = next((i for i, (x, y) in enumerate(zip(a["tokens"], b["tokens"])) if x != y), None)
    return f"no (first difference at token {n})"


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module.replace("_", "-"))
    except PackageNotFoundError:
        return "?"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompt", type=int, default=512, help="prompt tokens (default 512)")
    p.add_argument("--decode", type=int, default=64, help="decoded tokens (default 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median)")
    p.add_argument(
        "--dtypes", nargs="+", default=list(DTYPE_LABELS), choices=list(DTYPE_LABELS),
        help="weights to time: the stored 4-bit ones and/or dequantized copies (default: all)",
    )  # fmt: skip
    p.add_argument(  # (off Linux the BLAS is MLX's own: one setting, nothing to compare)
        "--blas", nargs="+", choices=list(BLAS_SETTINGS),
        default=list(BLAS_SETTINGS) if sys.platform.startswith("linux") else ["reference"],
        help="BLAS settings, each in its own process: openblas (clara's fast path) and/or "
        "reference (MLX's own, CLARA_BLAS=off); default: both on Linux, reference elsewhere",
    )  # fmt: skip
    add_no_append(p)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    start_run(args.repeats)
    worker_argv = ["--prompt", str(args.prompt), "--decode", str(args.decode)]
    worker_argv += ["--repeats", str(args.repeats), "--dtypes", *args.dtypes]
    load_before = _load()
    settings = {name: _run_setting(name, BLAS_SETTINGS[name], worker_argv) for name in args.blas}
    loads = (load_before, _load())

    import clara  # noqa: F401  for mlx's version in the report (after the workers ran)

    command = " ".join(["python", "bench/bench_model.py", *argv])
    report = _report(settings, args, command, loads)
    print(report)
    for data in settings.values():
        for r in data["results"]:
            print(
                f"{data['blas'] or 'reference'} {r['dtype']}: stable={r['stable']} "
                f"text={r['text'][:120]!r}"
            )
    if not args.no_append:
        with (ROOT / "BENCHMARKS.md").open("a", encoding="utf-8") as fh:
            fh.write("\n" + report)
        print(f"appended to {ROOT / 'BENCHMARKS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
