"""Average adapters into one ("model soup"), keeping every other tensor of the first.

    python docs/runs/2026-12-04-query-soup/soup.py OUT CKPT [CKPT ...] [--weights w1,w2,...]
        [--adapters query[,compressor]]

Each checkpoint's adapter is a low-rank update a @ b per layer. The soup averages those
updates exactly (weighted), then cuts the average back to the adapters' rank by SVD, so the
result loads like any checkpoint. By default only the query adapter is averaged: the
compressor, generator and memory-token rows are the first checkpoint's, so a collection
compressed by it is reused. With `compressor` in --adapters, the compressor and the rows it
reads and writes (memory-token embeddings, `<ENC>`, the memory center) are averaged too.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

import clara  # noqa: F401  # isort: skip  (BLAS before mlx)
import mlx.core as mx


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("checkpoints", type=Path, nargs="+")
    p.add_argument("--weights", help="comma-separated mixing weights (default: equal)")
    p.add_argument("--adapters", default="query", help="adapters to average (default: query)")
    args = p.parse_args()
    ws = [float(w) for w in args.weights.split(",")] if args.weights else None
    ws = ws or [1.0] * len(args.checkpoints)
    if len(ws) != len(args.checkpoints):
        p.error("one weight per checkpoint")
    ws = [w / sum(ws) for w in ws]
    loaded = [mx.load(str(c / "adapters.safetensors")) for c in args.checkpoints]
    out = dict(loaded[0])
    names = args.adapters.split(",")
    prefixes = sorted(k[: -len(".a")] for k in out for n in names if k.endswith(f"lora_{n}.a"))
    if "compressor" in names:
        for key in ("mem_embeddings", "enc_embedding", "memory_center"):
            out[key] = sum(w * d[key].astype(mx.float32) for w, d in zip(ws, loaded)).astype(
                out[key].dtype
            )
    err = 0.0
    for pre in prefixes:
        delta = sum(
            w * np.array(d[pre + ".a"], dtype=np.float64) @ np.array(d[pre + ".b"], np.float64)
            for w, d in zip(ws, loaded)
        )
        rank = out[pre + ".a"].shape[1]
        u, s, vt = np.linalg.svd(delta, full_matrices=False)
        root = np.sqrt(s[:rank])
        out[pre + ".a"] = mx.array((u[:, :rank] * root).astype(np.float32))
        out[pre + ".b"] = mx.array((root[:, None] * vt[:rank]).astype(np.float32))
        err = max(err, float(np.sqrt((s[rank:] ** 2).sum() / (s**2).sum())))
    args.out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(args.out / "adapters.safetensors"), out)
    shutil.copy(args.checkpoints[0] / "clara_config.json", args.out / "clara_config.json")
    note = {"soup": [str(c) for c in args.checkpoints], "weights": ws, "adapters": names}
    note["svd_rel_error"] = err
    (args.out / "soup.json").write_text(json.dumps(note, indent=1) + "\n")
    print(f"{len(prefixes)} adapter layers averaged; worst rank cut loses {err:.2%}")


if __name__ == "__main__":
    main()
