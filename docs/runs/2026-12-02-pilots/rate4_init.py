"""A 4x init from the 16x stage-1 checkpoint runs/long2/pretrain/step-000400: the same LoRA
adapters and embeddings, each of the 16 memory-token embeddings repeated 4 times (64 slots)."""

import json

import mlx.core as mx

src, dst = "runs/long2/pretrain/step-000400", "runs/rate4/init"
w = mx.load(f"{src}/adapters.safetensors")
w["mem_embeddings"] = mx.repeat(w["mem_embeddings"], 4, axis=0)
mx.save_safetensors(f"{dst}/adapters.safetensors", w)
cfg = json.load(open(f"{src}/clara_config.json"))
cfg["clara"]["compression_rate"] = 4
cfg["training"] = {"note": "converted from " + src + " (16x) by runs/rate4/make_init.py"}
json.dump(cfg, open(f"{dst}/clara_config.json", "w"), indent=2)
