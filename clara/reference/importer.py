"""Turn an Apple reference CLaRa checkpoint folder into a clara checkpoint.

A reference folder (e.g. `CLaRa-7B-Instruct/compression-16`) holds `config.json`,
`adapters.pth` (PEFT LoRA state per adapter: `encoder_adapter`, `decoder_adapter`, and for E2E
`query_reasoner_adapter`) and `decoder_first_last_layers.pth` (the resized `embed_tokens` and
`lm_head` matrices, whose last rows belong to the added special tokens). The base model is
checked against the embedding rows the reference saved, so a wrong base is refused.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from clara.checkpoint import write_checkpoint
from clara.errors import CheckpointError
from clara.loader import fingerprint_weights, resolve_model_path
from clara.lora import TARGETS
from clara.model import FORMAT_VERSION, ClaraConfig
from clara.reference import runtime
from clara.reference.pth import load_pth

KINDS = ("base", "instruct", "e2e")
# reference adapter -> clara adapter
ADAPTER_NAMES = {
    "encoder_adapter": "compressor",
    "decoder_adapter": "generator",
    "query_reasoner_adapter": "query",
}
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[\w-]+)?\.weight$")
MIN_ROW_COSINE = 0.98  # a 4-bit base keeps ~0.995; another model's rows are near 0


@dataclass
class Reference:
    """The tensors and settings of one reference checkpoint folder."""

    path: Path
    config: dict
    adapters: dict[str, dict[str, mx.array]]
    embed: mx.array  # (V0 + added, d)
    head: mx.array | None  # (V0 + added, d), None when tied to `embed`


def read_reference(src: str | os.PathLike) -> Reference:
    """Read `config.json`, `adapters.pth` and `decoder_first_last_layers.pth` from `src`."""
    src = Path(src).expanduser()
    subdirs = sorted(p.name for p in src.glob("compression-*") if p.is_dir())
    if subdirs and not (src / "adapters.pth").exists():
        raise CheckpointError(
            f"{src} holds several checkpoints ({', '.join(subdirs)}); pass one of them, "
            f"e.g. {src / subdirs[0]}"
        )
    missing = [
        f
        for f in ("config.json", "adapters.pth", "decoder_first_last_layers.pth")
        if not (src / f).exists()
    ]
    if missing:
        raise CheckpointError(
            f"{src} is not a reference CLaRa checkpoint folder (missing {', '.join(missing)})"
        )
    try:
        config = json.loads((src / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{src}/config.json is not valid JSON: {exc}") from exc
    if not config.get("lora", False) or config.get("compr_model_name"):
        raise CheckpointError(
            f"{src}: only the reference's LoRA-on-decoder checkpoints (lora=true, no separate "
            "compressor model) are supported"
        )
    adapters = load_pth(src / "adapters.pth")
    layers = load_pth(src / "decoder_first_last_layers.pth")
    if not isinstance(adapters, dict) or "encoder_adapter" not in adapters:
        raise CheckpointError(f"{src}/adapters.pth has no encoder_adapter")
    if "decoder_adapter" not in adapters:
        raise CheckpointError(f"{src}/adapters.pth has no decoder_adapter")
    embed = next((v for k, v in layers.items() if k.endswith("embed_tokens.weight")), None)
    head = next((v for k, v in layers.items() if k.endswith("lm_head.weight")), None)
    if embed is None:
        raise CheckpointError(f"{src}/decoder_first_last_layers.pth has no embed_tokens.weight")
    return Reference(src, config, adapters, embed, head)


def _doc_max(config: dict) -> int:
    return int(config.get("doc_max_length", 128))  # the reference config's defaults


def _rate(config: dict) -> int:
    return int(config.get("compr_rate", 64))


def reference_tokens(config: dict) -> tuple[list[str], list[str], int]:
    """(tokens the reference adds in id order, memory token per slot, n_mem) from its config."""
    n_mem = _doc_max(config) // _rate(config)
    if config.get("different_mem_tokens", False):
        mem = [f"<MEM{i}>" for i in range(n_mem)]
        added = [*mem, "<AE>", runtime.ENC_TOKEN, runtime.SEP_TOKEN]
    else:
        mem = ["<MEM>"] * n_mem
        added = ["<MEM>", "<AE>", runtime.ENC_TOKEN, runtime.SEP_TOKEN]
    if config.get("kbtc_training", False):
        added.append("<KBTC>")
    return added, mem, n_mem


def _base_embedding(path: Path, config: dict) -> mx.array:
    """The base model's input embedding matrix, read alone (dequantized if stored quantized)."""
    for shard in sorted(path.glob("*.safetensors")):
        weights = mx.load(str(shard))
        key = next((k for k in weights if k.endswith("embed_tokens.weight")), None)
        if key is None:
            continue
        w = weights[key]
        prefix = key[: -len("weight")]
        if f"{prefix}scales" in weights:
            q = config.get("quantization") or config.get("quantization_config") or {}
            q = q.get(prefix.rstrip("."), q) if isinstance(q.get(prefix.rstrip(".")), dict) else q
            w = mx.dequantize(
                w,
                weights[f"{prefix}scales"],
                weights.get(f"{prefix}biases"),
                group_size=q.get("group_size", 64),
                bits=q.get("bits", 4),
                mode=q.get("mode", "affine"),
            )
        return w
    raise CheckpointError(f"{path} has no embed_tokens weights in its safetensors files")


def _row_cosine(a: mx.array, b: mx.array) -> float:
    """Median cosine similarity of matching rows."""
    a, b = np.array(a.astype(mx.float32)), np.array(b.astype(mx.float32))
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12
    return float(np.median((a * b).sum(axis=-1) / den))


def _lora_weights(ref: Reference, n_layers: int, rank: int) -> dict[str, mx.array]:
    """clara's LoRA tensors (`a`: (in, r), `b`: (r, out)) from the reference's PEFT state."""
    names = [(r, c) for r, c in ADAPTER_NAMES.items() if r in ref.adapters]
    if "query_reasoner_adapter" not in ref.adapters:  # the compressor encodes queries
        names.append(("encoder_adapter", "query"))
    out: dict[str, mx.array] = {}
    expected = {
        f"model.layers.{i}.{part}.{t}"
        for i in range(n_layers)
        for part, ts in (("self_attn", TARGETS[:4]), ("mlp", TARGETS[4:]))
        for t in ts
    }
    for ref_name, name in names:
        state = ref.adapters[ref_name]
        seen: dict[str, dict[str, mx.array]] = {}
        for key, value in state.items():
            m = _LORA_KEY.match(key)
            if m is None:
                raise CheckpointError(f"{ref.path}/adapters.pth: unexpected key {key!r}")
            seen.setdefault(m.group(1), {})[m.group(2)] = value
        if set(seen) != expected:
            odd = sorted(set(seen) ^ expected)
            raise CheckpointError(
                f"{ref.path}/adapters.pth: {ref_name} does not cover this base model's "
                f"{n_layers} layers x {len(TARGETS)} linear layers (e.g. {odd[0]})"
            )
        for module, ab in seen.items():
            if set(ab) != {"A", "B"}:
                raise CheckpointError(f"{ref.path}/adapters.pth: {module} lacks lora_A or lora_B")
            if ab["A"].shape[0] != rank or ab["B"].shape[1] != rank:
                raise CheckpointError(f"{ref.path}: {module} has LoRA rank != {rank}")
            out[f"lm.{module}.lora_{name}.a"] = ab["A"].T  # (in, r)
            out[f"lm.{module}.lora_{name}.b"] = ab["B"].T  # (r, out)
    return out


def _guess_hub_id(name: str) -> str:
    base = Path(str(name)).name
    return f"mistralai/{base}" if base.lower().startswith("mistral-") else base


def import_reference(
    src: str | os.PathLike,
    base: str | os.PathLike,
    out: str | os.PathLike,
    kind: str | None = None,
) -> Path:
    """Write a clara checkpoint at `out` for reference checkpoint `src` on mlx-lm model `base`."""
    ref = read_reference(src)
    cfg = ref.config
    path, model_id = resolve_model_path(base)
    base_cfg = json.loads((path / "config.json").read_text())
    text_cfg = base_cfg.get("text_config", base_cfg)
    added, mem_tokens, n_mem = reference_tokens(cfg)
    rows, d = ref.embed.shape
    vocab_base = rows - len(added)
    trained_on = cfg.get("decoder_model_name", "?")
    fix = (
        f"convert the model it was trained on ({trained_on}) with `mlx_lm.convert --hf-path "
        f"{_guess_hub_id(trained_on)} --mlx-path DIR` and pass --base DIR"
    )
    if int(text_cfg["hidden_size"]) != d:
        raise CheckpointError(
            f"{ref.path} has hidden size {d} but {base} has {text_cfg['hidden_size']}: {fix}"
        )
    from mlx_lm.utils import load_tokenizer

    tokenizer = runtime.hf_tokenizer(load_tokenizer(path))
    clash = [t for t in added if t in tokenizer.get_vocab()]
    if clash:
        raise CheckpointError(
            f"the tokenizer of {base} already has {clash}, which the reference adds: {fix}"
        )
    if len(tokenizer) != vocab_base:
        raise CheckpointError(
            f"{ref.path} extends a {vocab_base}-token vocabulary but the tokenizer of {base} has "
            f"{len(tokenizer)} tokens: {fix}"
        )
    if tokenizer.bos_token is None or tokenizer.eos_token is None:
        raise CheckpointError(f"the tokenizer of {base} lacks a BOS or EOS token")
    base_embed = _base_embedding(path, base_cfg)
    n = min(vocab_base, base_embed.shape[0])
    idx = mx.array(sorted({(i * (n - 1)) // 511 for i in range(512)}))
    cos = _row_cosine(ref.embed[idx], base_embed[idx])
    if cos < MIN_ROW_COSINE:
        raise CheckpointError(
            f"{ref.path} was trained on a different base model than {base} (median cosine of "
            f"their embedding rows {cos:.3f}, need >= {MIN_ROW_COSINE}): {fix}"
        )

    if kind is None:
        has_query = "query_reasoner_adapter" in ref.adapters
        kind = (
            "e2e" if has_query else "base" if cfg.get("training_stage") == "stage1" else "instruct"
        )
    if kind not in KINDS:
        raise CheckpointError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if kind == "e2e" and "query_reasoner_adapter" not in ref.adapters:
        raise CheckpointError(f"{ref.path}/adapters.pth has no query_reasoner_adapter (E2E)")
    rank = int(cfg.get("lora_r", 16))
    clara_cfg = ClaraConfig(
        compression_rate=_rate(cfg),
        doc_max_tokens=_doc_max(cfg),
        lora_rank=rank,
        lora_alpha=2.0 * rank,  # the reference's LoraConfig: lora_alpha = 2 * r
        lora_dropout=0.1,
        prompt_template="apple-paraphrase" if kind == "base" else "apple-qa",
        added_tokens=added,
        mem_tokens=mem_tokens,
        vocab_base=vocab_base,
        reference_sep=bool(cfg.get("sep", False)),
    )
    weights = _lora_weights(ref, int(text_cfg["num_hidden_layers"]), rank)
    row = {t: ref.embed[vocab_base + i] for i, t in enumerate(added)}
    weights["mem_embeddings"] = mx.stack([row[t] for t in mem_tokens])  # (n_mem, d)
    weights["enc_embedding"] = row[runtime.ENC_TOKEN][None]
    weights["sep_embedding"] = row[runtime.SEP_TOKEN][None]
    weights["lm.model.embed_tokens.added_rows"] = ref.embed[vocab_base:]
    if ref.head is not None:
        if base_cfg.get("tie_word_embeddings", False):
            raise CheckpointError(f"{ref.path} has an lm_head but {base} ties its embeddings")
        weights["lm.lm_head.added_rows"] = ref.head[vocab_base:]
    elif not base_cfg.get("tie_word_embeddings", False):
        raise CheckpointError(f"{ref.path} has no lm_head rows but {base} has an untied head")
    config = {
        "format_version": FORMAT_VERSION,
        "base_model": model_id,
        "base_fingerprint": fingerprint_weights(path),
        "hidden_size": d,
        "clara": clara_cfg.to_dict(),
        "imported_from": {
            "source": str(ref.path),
            "kind": kind,
            "trained_on": trained_on,
            "generation_top_k": cfg.get("generation_top_k"),
            "query_encoder": "query_reasoner_adapter"
            if kind == "e2e"
            else "encoder_adapter (no query reasoner in this checkpoint)",
        },
    }
    mx.eval(weights)
    return write_checkpoint(out, config, weights)
