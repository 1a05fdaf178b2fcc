"""CLaRa 16x memory vs uncompressed text on the same model: TTFT, decode speed, compression.

A question with K retrieved chunks of exactly `--chunk-tokens` tokens (default 5 x 256), answered
from memory vectors (the generator reads n_mem positions per chunk) and from the chunks' raw text
(the generator reads every token). Runs alternate so both see the same machine load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import clara  # noqa: F401  preloads OpenBLAS before mlx
import mlx.core as mx

from bench._common import add_no_append, append_report, markdown_table, sample_texts, start_run
from clara.checkpoint import DEFAULT_CHECKPOINT, load_clara, resolve_checkpoint
from clara.generate import stream_from_memory, stream_from_text
from clara.prompt import memory_prompt, text_prompt
from clara.model import ClaraConfig


def exact_chunks(cm, n: int, tokens: int) -> list[str]:
    ids = [t for text in sample_texts()[:20] for t in cm.tokenize([text[:4000]])[0]]
    out = []
    for i in range(n):
        piece = ids[i * tokens : (i + 1) * tokens]
        out.append(cm.tokenizer.decode(piece))
    return out


def adapters(model: str, checkpoint: str | None) -> str:
    """What `load_clara(model, checkpoint)` loads, in words, for the report."""
    path = resolve_checkpoint(model, checkpoint)
    if path is None:
        return "fresh (untrained)"
    return "the shipped ones" if path == DEFAULT_CHECKPOINT else f"`{checkpoint}`"


def run(stream) -> tuple[float, float, int]:
    start = time.perf_counter()
    ttft = None
    n = 0
    for chunk in stream:
        if ttft is None and chunk.token is not None:
            ttft = time.perf_counter() - start
        n = chunk.generation_tokens
    total = time.perf_counter() - start
    decode = (n - 1) / (total - ttft) if ttft is not None and n > 1 else float("nan")
    return ttft or float("nan"), decode, n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="smollm2-135m", help="base model (default: smollm2-135m)")
    p.add_argument(
        "--checkpoint", default=None,
        help="CLaRa adapters to load (default: the shipped ones for the default model, fresh "
        "ones for another; 'none': fresh): speed does not depend on them",
    )  # fmt: skip
    p.add_argument(
        "--dtype", default="auto", help="weights' dtype, as clara-serve's (default: auto)"
    )
    p.add_argument(
        "--chunks", type=int, default=5, help="retrieved chunks per question (default: 5)"
    )
    p.add_argument("--chunk-tokens", type=int, default=256, help="tokens per chunk (default: 256)")
    p.add_argument("--max-tokens", type=int, default=32, help="new tokens per answer (default: 32)")
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed runs per input, alternating (median; default: 5)",
    )
    p.add_argument(
        "--compress-n", type=int, default=32,
        help="chunks compressed for the throughput figure, at batch 1 and 8 (default: 32)",
    )  # fmt: skip
    add_no_append(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    for name in ("chunks", "chunk_tokens", "max_tokens", "repeats", "compress_n"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be 1 or more")
    start_run(args.repeats)

    cm = load_clara(
        args.model,
        args.checkpoint,
        dtype=args.dtype,
        config=ClaraConfig(doc_max_tokens=args.chunk_tokens),
    )
    chunks = exact_chunks(cm, args.chunks, args.chunk_tokens)
    question = "How does Python evaluate this construct, in one sentence?"
    mem = cm.compress(chunks)
    mx.eval(mem)
    kw = dict(max_tokens=args.max_tokens, ignore_eos=True)  # equal decode lengths
    positions = {
        "memory": memory_prompt(cm, question, list(mem)).positions,
        "text": text_prompt(cm, question, chunks).positions,
    }
    run(stream_from_memory(cm, question, list(mem), **kw))  # warm-up both paths
    run(stream_from_text(cm, question, chunks, **kw))
    res: dict[str, list[tuple[float, float, int]]] = {"memory": [], "text": []}
    for _ in range(args.repeats):
        res["memory"].append(run(stream_from_memory(cm, question, list(mem), **kw)))
        res["text"].append(run(stream_from_text(cm, question, chunks, **kw)))

    texts = (chunks * (args.compress_n // len(chunks) + 1))[: args.compress_n]
    comp = {}
    for bs in (1, 8):
        cm.compress(texts[:bs], batch_size=bs)
        t = time.perf_counter()
        mx.eval(cm.compress(texts, batch_size=bs))
        comp[bs] = len(texts) / (time.perf_counter() - t)

    med = {
        k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
        for k, v in res.items()
    }
    rows = [
        [
            f"CLaRa {cm.config.compression_rate}x memory" if k == "memory" else "uncompressed text",
            positions[k],
            f"{med[k][0] * 1000:.0f}",
            f"{med[k][1]:.1f}",
        ]
        for k in ("memory", "text")
    ]
    table = markdown_table(
        ["generator input", "prompt positions", "TTFT ms (median)", "decode tok/s"], rows
    )
    notes = (
        f"{args.repeats} alternating runs after warm-up, {args.max_tokens} new tokens each (EOS "
        f"ignored); adapters: {adapters(args.model, args.checkpoint)} (speed does not depend "
        "on them)."
    )
    ratio = med["text"][0] / med["memory"][0]
    table += (
        f"\n\nTTFT ratio text/memory: **{ratio:.1f}x** (positions ratio "
        f"{positions['text'] / positions['memory']:.1f}x). Compression throughput "
        f"({args.chunk_tokens}-token chunks): batch 1 **{comp[1]:.1f} chunks/s**, batch 8 **{comp[8]:.1f} chunks/s**."
    )
    if args.no_append:
        print(table + "\n\n" + notes)
        return 0
    append_report(
        f"Core: CLaRa memory vs text, {args.chunks} x {args.chunk_tokens}-token chunks ({args.model}, dtype {cm.info.extras['dtype']})",
        table,
        notes,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
