"""Tiny random models in mlx-lm format, for fast tests (see the fixtures in conftest.py).

`build_tiny_tokenizer(dir)` trains a ~512-token byte-level BPE with ChatML special tokens;
`build_tiny_model(dir, arch=...)` saves config.json + model.safetensors (+ that tokenizer) that
`clara.loader.load_base(dir)` and `mlx_lm.load(dir)` read like any downloaded model.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map_with_path

from training.tinymodel import llama_config, random_model, save_model

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = "<|endoftext|>", "<|im_end|>", "<pad>"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# muP / Peri-LN settings of `tiny_hcx_dir`: far enough from 1 that a missing multiplier shows.
TINY_HCX_EXTRAS: dict[str, Any] = {
    "embedding_multiplier": 3.0,
    "attention_multiplier": 0.3,
    "residual_multiplier": 0.6,
    "logits_scaling": 0.5,
    "use_post_norm": True,
}

_CORPUS = """\
The river runs past the old mill and under the stone bridge before it reaches the sea.
In the spring the water is high and cold, and the fishermen wait for the salmon to return.
A library is a quiet place where people read books, study maps and search for answers.
The capital of France is Paris. The capital of Japan is Tokyo. The capital of Italy is Rome.
Water boils at one hundred degrees Celsius at sea level and freezes at zero degrees.
The cat sat on the mat while the dog slept by the fire in the small wooden house.
Question: Who wrote the report? Answer: The committee wrote the report in September.
Background: the museum opened in 1902 and holds paintings, sculptures and ancient coins.
Retrieval augmented generation reads documents, compresses them and answers questions.
Memory tokens summarise a document so that the generator can read fewer positions.
She walked to the market on Monday, bought bread, apples, cheese and a bottle of milk.
The train leaves the station at seven o'clock and arrives in the city two hours later.
Scientists measure the temperature of the ocean to understand how the climate changes.
1, 2, 3, 4, 5, 6, 7, 8, 9, 10: numbers, dates (2024-05-01) and symbols like % $ # @ & * !
"Hello," he said. "How are you today?" She answered: "I am fine, thank you very much."
The system answers as briefly as possible from the documents it was given.
"""


def build_tiny_tokenizer(path: str | Path, vocab_size: int = 512) -> Path:
    """Train a byte-level BPE on a small embedded corpus and save it in HF format to `path`.

    Special tokens `<|endoftext|>`(bos) `<|im_start|>` `<|im_end|>`(eos) `<pad>`(pad) get ids
    0-3; the ChatML chat template supports system/user/assistant and add_generation_prompt.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    tok.save(str(path / "tokenizer.json"))

    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "unk_token": None,
        "model_max_length": 2048,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHATML_TEMPLATE,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (path / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return path


def _tokenizer_info(path: Path) -> tuple[int, dict[str, int]]:
    """(vocab size including added tokens, special token -> id) of a saved tokenizer.json."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    return tok.get_vocab_size(with_added_tokens=True), {
        t: tok.token_to_id(t) for t in SPECIAL_TOKENS
    }


def tiny_config(
    arch: str = "llama",
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    tie_word_embeddings: bool = True,
    bos_token_id: int = 0,
    eos_token_id: int = 2,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A config.json dict for a tiny `llama` or `hyperclovax` model."""
    if arch not in ("llama", "hyperclovax"):
        raise ValueError(f"unknown tiny arch {arch!r}: use 'llama' or 'hyperclovax'")
    config = llama_config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=3,
        max_position_embeddings=2048,
    )
    if arch == "hyperclovax":
        config.update(model_type=arch, architectures=["HyperCLOVAXForCausalLM"])
    config.update(extra or {})
    return config


def model_from_config(config: dict[str, Any], seed: int = 0) -> nn.Module:
    """A randomly initialised float32 `llama` or `hyperclovax` model for `config`, its norm
    weights jittered."""
    model = random_model(config, seed)

    # Norm weights away from 1 so that a norm applied in the wrong place changes outputs.
    def jitter(name: str, w: mx.array) -> mx.array:
        if "norm" in name and w.ndim == 1:
            return 1.0 + 0.2 * mx.random.normal(w.shape)
        return w

    model.update(tree_map_with_path(jitter, model.parameters()))
    mx.eval(model.parameters())
    return model


def build_tiny_model(
    path: str | Path,
    arch: str = "llama",
    *,
    tokenizer_dir: str | Path | None = None,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    tie_word_embeddings: bool = True,
    quantize: bool = False,
    extra_config: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Save a tiny random model (config.json, model.safetensors, tokenizer files) to `path`.

    The tokenizer is copied from `tokenizer_dir` (or trained into `path`); the vocab size is
    the tokenizer's. `quantize=True` stores 4-bit weights (group 32) via mlx-lm, recorded in
    config.json as mlx-lm does. `extra_config` adds/overrides config keys (e.g. the muP ones).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        build_tiny_tokenizer(path)
    else:
        for name in TOKENIZER_FILES:
            shutil.copy(Path(tokenizer_dir) / name, path / name)
    vocab_size, ids = _tokenizer_info(path)

    config = tiny_config(
        arch,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=ids[BOS_TOKEN],
        eos_token_id=ids[EOS_TOKEN],
        extra=extra_config,
    )
    model = model_from_config(config, seed=seed)
    if quantize:
        from mlx_lm.utils import quantize_model

        with contextlib.redirect_stdout(io.StringIO()):  # it prints bits-per-weight
            model, config = quantize_model(model, config, group_size=32, bits=4)
    return save_model(path, model, config)


# A store-level manifest (the keys ClaraModel.manifest() produces) for collections that tests
# fill with random (STORE_N_MEM, STORE_D) memories, no model involved.
STORE_N_MEM, STORE_D = 4, 8
STORE_MANIFEST = {
    "checkpoint_fingerprint": "fp-aaaa",
    "base_model": "tiny",
    "base_fingerprint": "base-1",
    "compression_rate": 16,
    "doc_max_tokens": 64,
    "n_mem": STORE_N_MEM,
    "hidden_size": STORE_D,
}
