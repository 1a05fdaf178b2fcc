"""A rank-64 init from the 16x rank-16 stage-1 checkpoint runs/long2/pretrain/step-000400 that
computes the same function: each LoRA pair (A: in x 16, B: 16 x out) gets 48 more dimensions,
A's new columns drawn like a fresh adapter's, B's new rows zero; alpha 32 -> 128 keeps the
scale alpha / rank at 2."""

import json
import math

import mlx.core as mx

src, dst, rank = "runs/long2/pretrain/step-000400", "runs/rank64/init", 64
mx.random.seed(0)
w = mx.load(f"{src}/adapters.safetensors")
for k in list(w):
    v = w[k]
    if ".lora_" in k and k.endswith(".a"):
        bound = 1.0 / math.sqrt(v.shape[0])
        extra = mx.random.uniform(-bound, bound, (v.shape[0], rank - v.shape[1]))
        w[k] = mx.concatenate([v, extra], axis=1)
    elif ".lora_" in k and k.endswith(".b"):
        w[k] = mx.concatenate([v, mx.zeros((rank - v.shape[0], v.shape[1]))], axis=0)
mx.save_safetensors(f"{dst}/adapters.safetensors", w)
cfg = json.load(open(f"{src}/clara_config.json"))
cfg["clara"]["lora_rank"], cfg["clara"]["lora_alpha"] = rank, 2.0 * rank
cfg["training"] = {"note": f"converted from {src} (rank 16) by runs/rank64/make_init.py"}
json.dump(cfg, open(f"{dst}/clara_config.json", "w"), indent=2)
