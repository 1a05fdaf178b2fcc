"""Package a trained checkpoint as clara's shipped default adapters (small, float16)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx

from clara.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_checkpoint_config

#: What clara-serve reads by default with the shipped adapters: on the 200 held-out questions
#: (end to end, hybrid top 2) they answered at F1 51.6 / cover-EM 32.5 "mixed" against 22.0 /
#: 4.0 from memory alone (BENCHMARKS.md, "Held-out real-prose evaluation", 2026-12-04 20:00).
SHIPPED_MODE = "mixed"


def install(src: Path, dst: Path, default_mode: str = SHIPPED_MODE) -> Path:
    """Copy `src` to `dst` with float16 tensors, naming `default_mode` as the mode clara-serve
    reads with them; an untrained query adapter (B = 0) becomes a copy of the compressor, as
    CLaRa initialises the query reasoner."""
    config = read_checkpoint_config(src)
    weights = mx.load(str(src / WEIGHTS_FILE))
    query_b = [v for k, v in weights.items() if ".lora_query.b" in k]
    if query_b and all(float(mx.abs(v).max()) == 0.0 for v in query_b):
        for k in [k for k in weights if ".lora_compressor." in k]:
            weights[k.replace(".lora_compressor.", ".lora_query.")] = weights[k]
    # float16 halves the size; the memory center (576 values) stays float32: it is subtracted
    # from states of norm ~54 whose document-specific part is ~6.5
    weights = {k: v if "memory_center" in k else v.astype(mx.float16) for k, v in weights.items()}
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mx.save_safetensors(str(tmp / WEIGHTS_FILE), weights)
    config["installed_from"] = str(src)
    config["clara"]["default_mode"] = default_mode
    if (src / "soup.json").exists():  # averaged from several runs (docs/runs/*-query-soup)
        config["soup"] = json.loads((src / "soup.json").read_text())
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst
