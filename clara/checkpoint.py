"""CLaRa checkpoints: adapters + memory-token embeddings (safetensors) + a JSON config.

A checkpoint directory holds `clara_config.json` and `adapters.safetensors`. The config
records the base model it was trained on (id and weight fingerprint); loading it on another
base model is refused with a message naming both.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from clara.errors import CheckpointError, ClaraError
from clara.loader import DEFAULT_ALIASES, DEFAULT_MODEL, BaseModel, load_base
from clara.model import FORMAT_VERSION, ClaraConfig, ClaraModel, memory_settings
from clara.paths import temp_sibling

CONFIG_FILE = "clara_config.json"
WEIGHTS_FILE = "adapters.safetensors"
_COPY_AGAIN = "copy the checkpoint again, or train it again (clara-train ... --resume goes on)"
#: Trained adapters shipped with clara for the embedded default model (16x).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "smollm2-135m-16x"
#: `checkpoint=` values that mean "fresh, untrained adapters" (e.g. before training).
FRESH = ("none", "fresh")


def _clara_weights(cm: ClaraModel) -> dict[str, mx.array]:
    """Only what CLaRa adds: LoRA matrices and the learned special embeddings."""
    keep = (
        "lora_",
        "mem_embeddings",
        "enc_embedding",
        "sep_embedding",
        "memory_center",
        "added_rows",
    )
    return {k: v for k, v in tree_flatten(cm.parameters()) if any(p in k for p in keep)}


def _file_fingerprint(weights: Path, config: dict) -> str:
    """The whole checkpoint's identity: every adapter and the config (but not how it is used)."""
    if "clara" in config:  # how the checkpoint is used does not change what it computes
        config = {**config, "clara": memory_settings(config["clara"])}
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    h.update(weights.read_bytes())
    return h.hexdigest()[:16]


#: Tensors no compression reads: a collection stays valid when only they change.
_NOT_MEMORY = ("lora_query", "lora_generator", "sep_embedding")
#: Config key of checkpoints listing older fingerprints whose collections they read: those of
#: earlier checkpoints with the same memory tensors, from before collections recorded
#: `memory_fingerprint`s (they recorded the whole checkpoint's).
COMPATIBLE_KEY = "index_compatible"


def _memory_fingerprint(tensors: dict[str, mx.array], config: dict) -> str:
    """What a collection must match: the base model, the memory settings and the tensors a
    compression reads. Not the query or generator adapters, nor notes in the config: a
    checkpoint that changes only those reads the collections of the one before it."""
    ident = {k: config.get(k) for k in ("base_model", "base_fingerprint", "hidden_size")}
    ident["clara"] = memory_settings(config.get("clara", {}))
    h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode())
    for name in sorted(tensors):
        if any(p in name for p in _NOT_MEMORY):
            continue
        v = tensors[name]
        h.update(f"{name} {v.dtype} {tuple(v.shape)}".encode())
        h.update(bytes(memoryview(mx.view(v, mx.uint8))))
    return h.hexdigest()[:16]


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """The fingerprint a model loaded from this checkpoint will have (no model needed)."""
    path = Path(path)
    return _file_fingerprint(path / WEIGHTS_FILE, read_checkpoint_config(path))


def index_fingerprints(path: str | os.PathLike, config: dict | None = None) -> tuple[str, ...]:
    """The collection fingerprints a model loaded from this checkpoint reads (no model needed):
    its memory fingerprint, what collections of it record, then older ones it accepts.
    `config`: the checkpoint's, when the caller has read it already."""
    weights = Path(path) / WEIGHTS_FILE
    config = config or read_checkpoint_config(path)
    whole = _file_fingerprint(weights, config)
    return _index_fingerprints(read_weights(weights, _COPY_AGAIN), config, whole)


def checkpoint_manifest(path: str | os.PathLike) -> dict:
    """`ClaraModel.manifest()` of a model loaded from this checkpoint, without loading one:
    what a collection it wrote records, to check a collection against it before a load."""
    config = read_checkpoint_config(path)
    clara = ClaraConfig.from_dict(config["clara"])
    fingerprints = index_fingerprints(path, config)
    return {
        "fingerprint": fingerprints[0],
        "accepts": list(fingerprints[1:]),
        "base_model": config["base_model"],
        "base_fingerprint": config["base_fingerprint"],
        "compression_rate": clara.compression_rate,
        "doc_max_tokens": clara.doc_max_tokens,
        "n_mem": clara.n_mem,
        "hidden_size": config["hidden_size"],
    }


def _index_fingerprints(tensors: dict[str, mx.array], config: dict, whole: str) -> tuple[str, ...]:
    """(memory fingerprint of the checkpoint's `tensors` as stored, `whole` checkpoint's, the
    ones its config lists as compatible)."""
    return (_memory_fingerprint(tensors, config), whole, *config.get(COMPATIBLE_KEY, []))


def resolve_checkpoint(model: object, checkpoint: str | os.PathLike | None) -> Path | None:
    """None means the shipped default adapters for the default model (fresh ones otherwise);
    "none"/"fresh" always means fresh adapters."""
    if checkpoint is None:
        is_default = isinstance(model, str) and model.lower() in DEFAULT_ALIASES
        return DEFAULT_CHECKPOINT if is_default and DEFAULT_CHECKPOINT.exists() else None
    if str(checkpoint).lower() in FRESH:
        return None
    return Path(checkpoint).expanduser()


def checkpoint_doc_max_tokens(model: object, checkpoint: str | os.PathLike | None) -> int:
    """The doc_max_tokens a load of `model` with `checkpoint` gets (`resolve_checkpoint`), read
    from the checkpoint's config without loading anything: for checks made before a load."""
    where = resolve_checkpoint(model, checkpoint)
    if where is None:
        return ClaraConfig().doc_max_tokens
    return ClaraConfig.from_dict(read_checkpoint_config(where)["clara"]).doc_max_tokens


def write_checkpoint(path: str | os.PathLike, config: dict, weights: dict[str, mx.array]) -> Path:
    """Write a checkpoint directory atomically (temp dir, then rename over any older one)."""
    path = Path(path)
    tmp = temp_sibling(path)
    mx.save_safetensors(str(tmp / WEIGHTS_FILE), weights)
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if path.exists():  # replace an older checkpoint at the same place
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)  # (a crash between the two replaces left it)
        os.replace(path, old)
        os.replace(tmp, path)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        os.replace(tmp, path)
    return path


def save_checkpoint(cm: ClaraModel, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write `cm`'s adapters and config to `path` atomically (temp dir, then rename)."""
    config = {
        "format_version": FORMAT_VERSION,
        "base_model": cm.info.model_id,
        "base_fingerprint": cm.info.fingerprint,
        "hidden_size": cm.hidden_size,
        "clara": cm.config.to_dict(),
        **(extra or {}),
    }
    weights = _clara_weights(cm)
    path = write_checkpoint(path, config, weights)
    cm._fingerprint = _file_fingerprint(path / WEIGHTS_FILE, config)
    cm._index_fingerprints = _index_fingerprints(weights, config, cm._fingerprint)
    return path


def read_weights(file: Path, fix: str) -> dict[str, mx.array]:
    """`mx.load` of a safetensors file; one that is damaged or cut short (an interrupted copy
    or download) is a `CheckpointError` saying so and what to do (`fix`), not MLX's traceback
    ("[load_safetensors] Invalid json header length")."""
    try:
        return mx.load(str(file))
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{file} is damaged or incomplete ({exc}): {fix}") from None


def read_checkpoint_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    cfg = path / CONFIG_FILE
    if not cfg.exists() or not (path / WEIGHTS_FILE).exists():
        if not path.exists():
            raise CheckpointError(f"{path}: no such checkpoint folder")
        hint = ""
        if (path / "final" / CONFIG_FILE).exists():  # a clara-train run folder
            hint = f"; a training run's checkpoint is its {path / 'final'}"
        raise CheckpointError(
            f"{path} is not a CLaRa checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE}){hint}"
        )
    try:
        config = json.loads(cfg.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg} is not valid JSON: {exc}") from exc
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {config.get('format_version')}, this clara reads "
            f"{FORMAT_VERSION}; re-train or convert it"
        )
    return config


def default_reading_mode(model: object, checkpoint: str | None, mode: str | None = None) -> str:
    """The reading mode requests get by default: `mode` (--mode) if set, else the one the
    checkpoint serving `model` names (`ClaraConfig.default_mode`); "memory" for fresh
    adapters, older checkpoints, and a checkpoint that cannot be read (the model load reports
    that one). "mixed" is refused for checkpoints in their reference's prompt layout."""
    path = resolve_checkpoint(model, checkpoint)
    config = ClaraConfig()
    if path is not None:
        try:
            config = ClaraConfig.from_dict(read_checkpoint_config(path).get("clara", {}))
        except ClaraError:
            pass
    if mode == "mixed" and config.reference:
        raise ClaraError(
            "--mode mixed needs clara's own prompt layout, and this checkpoint uses its "
            "reference's (imported): use memory or text"
        )
    return mode or config.default_mode


def load_checkpoint(cm: ClaraModel, path: str | os.PathLike) -> ClaraModel:
    """Load adapters into `cm` after checking the checkpoint was made for its base model."""
    path = Path(path)
    config = read_checkpoint_config(path)
    if config["base_fingerprint"] != cm.info.fingerprint:
        fix = f"load it with --model {config['base_model']} or train a checkpoint for this model"
        if config["base_model"] == cm.info.model_id:  # (it said: load it with the model loaded)
            fix = (
                "the model of that name here has other weights (another conversion or "
                "download of it): give --model the folder it was trained on, or its base/ "
                "if the checkpoint has one, or train a checkpoint for these weights"
            )
        raise CheckpointError(
            f"checkpoint {path} was trained on base model {config['base_model']!r} "
            f"(fingerprint {config['base_fingerprint']}), but the loaded base model is "
            f"{cm.info.model_id!r} (fingerprint {cm.info.fingerprint}); {fix}"
        )
    weights = read_weights(path / WEIGHTS_FILE, _COPY_AGAIN)
    expected = _clara_weights(cm)
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {len(missing)} tensors, e.g. {missing[0]}")
    for k, v in weights.items():
        if k in expected and expected[k].shape != v.shape:
            raise CheckpointError(
                f"checkpoint {path}: {k} has shape {v.shape}, expected {expected[k].shape}"
            )
    # Stored small (the shipped default is float16), run in the model's own dtypes: a float16
    # adapter in a float32 model was cast back at every use (two casts per layer per forward).
    cast = [(k, v.astype(expected[k].dtype) if k in expected else v) for k, v in weights.items()]
    cm.load_weights(cast, strict=False)
    mx.eval(cm.parameters())
    cm._fingerprint = _file_fingerprint(path / WEIGHTS_FILE, config)
    cm._index_fingerprints = _index_fingerprints(weights, config, cm._fingerprint)
    return cm


def load_clara(
    model: str | os.PathLike | BaseModel = DEFAULT_MODEL,
    checkpoint: str | os.PathLike | None = None,
    *,
    dtype: str | None = "auto",
    config: ClaraConfig | None = None,
) -> ClaraModel:
    """The one loader: base model + CLaRa checkpoint.

    `checkpoint=None` loads the shipped default adapters when `model` is the default model
    (fresh ones for any other model); "none" forces fresh adapters. With a checkpoint, its
    `ClaraConfig` wins; `config` only shapes fresh adapters.
    """
    checkpoint = resolve_checkpoint(model, checkpoint)
    ck_config = read_checkpoint_config(checkpoint) if checkpoint is not None else None
    base = model if isinstance(model, BaseModel) else load_base(model, dtype=dtype)
    if ck_config is not None:
        config = ClaraConfig.from_dict(ck_config["clara"])
    cm = ClaraModel(base, config)
    if checkpoint is not None:
        load_checkpoint(cm, checkpoint)
    return cm
