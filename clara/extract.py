"""The text model inside a multimodal checkpoint, as a plain Hugging Face folder.

HyperCLOVA X SEED Omni 8B ships one `vlm` checkpoint: `config.json` nests the Llama text
model's settings under `text_config`, and its weights are named `model.language_model.*` beside
the audio and vision towers. `mlx_lm.convert` reads neither, so this writes the text model
alone (config, `model.*` / `lm_head.*` weights, tokenizer files) for `mlx_lm.convert` to take.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlx.core as mx

from clara.errors import ClaraError, ModelNotFoundError

PREFIX = "model.language_model."
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


def _text_name(key: str) -> str | None:
    """`model.language_model.model.X` -> `model.X`, `model.language_model.lm_head.X` -> `lm_head.X`."""
    return key[len(PREFIX) :] if key.startswith(PREFIX) else None


def extract_text_model(src: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the text model of multimodal checkpoint `src` to `out` (which must not exist)."""
    src, out = Path(src).expanduser(), Path(out).expanduser()
    cfg_file = src / "config.json"
    if not src.is_dir():  # (it said "has no config.json")
        what = "is a file" if src.exists() else "not found"
        raise ModelNotFoundError(
            f"{src} {what}: give the folder of the multimodal checkpoint (its config.json and "
            "weights)"
        )
    if not cfg_file.exists():
        raise ModelNotFoundError(f"{src} has no config.json: not a model folder")
    config = json.loads(cfg_file.read_text())
    text = config.get("text_config")
    if not isinstance(text, dict) or "model_type" not in text:
        raise ModelNotFoundError(
            f"{cfg_file} has no text_config: if it is a text model already, convert it directly "
            "with mlx_lm.convert"
        )
    shards = sorted(src.glob("*.safetensors"))
    if not shards:
        raise ModelNotFoundError(f"{src} has no .safetensors weights")
    if out.exists():
        raise ClaraError(f"{out} exists; choose a new directory")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    found: dict[str, str] = {}  # weight -> shard file (the index transformers reads)
    for shard in shards:
        weights = mx.load(str(shard))
        kept = {n: v for k, v in weights.items() if (n := _text_name(k)) is not None}
        if kept:
            mx.save_safetensors(str(tmp / shard.name), kept, metadata={"format": "pt"})
            found.update(dict.fromkeys(kept, shard.name))
    index = {"metadata": {}, "weight_map": dict(sorted(found.items()))}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    if "model.embed_tokens.weight" not in found:
        shutil.rmtree(tmp)
        raise ModelNotFoundError(f"{src} has no {PREFIX}model.embed_tokens.weight")
    (tmp / "config.json").write_text(json.dumps(text, indent=2))
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, tmp / name)
    os.replace(tmp, out)
    return out
