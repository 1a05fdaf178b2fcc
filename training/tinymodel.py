"""Tiny base models trained from scratch: a word-level tokenizer over a known vocabulary and a
randomly initialised Llama, saved in mlx-lm format (what `clara.loader.load_base` reads).

The chat template is ChatML without the system turn: a tiny model reading the same fixed
system sentence in every example only pays for the positions.
`llama_config`, `random_model` and `save_model` are the steps tests/tiny.py builds its models with.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from clara.prompt import PARAPHRASE_SYSTEM, PARAPHRASE_USER, QA_PRETRAIN_SYSTEM, SYSTEM_PROMPT

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>", "<unk>"]
BOS, EOS, PAD, UNK = "<|endoftext|>", "<|im_end|>", "<pad>", "<unk>"
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] != 'system' %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def prompt_texts() -> list[str]:
    """Every fixed string the CLaRa prompts put around documents and questions."""
    return [
        SYSTEM_PROMPT,
        PARAPHRASE_SYSTEM,
        PARAPHRASE_USER,
        QA_PRETRAIN_SYSTEM,
        "Background:\nQuestion:\nAnswer: user assistant system",
    ]


def build_word_tokenizer(path: str | Path, texts: Iterable[str]) -> Path:
    """A word-level tokenizer (words and punctuation runs) over `texts` + the prompt strings."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pre = pre_tokenizers.Whitespace()  # \w+ | [^\w\s]+
    words: Counter = Counter()
    for t in [*texts, *prompt_texts()]:
        words.update(w for w, _ in pre.pre_tokenize_str(t))
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for w in sorted(words):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # words joined by spaces
    tok.add_special_tokens(SPECIALS)
    tok.save(str(path / "tokenizer.json"))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": 1024,
        "clean_up_tokenization_spaces": True,
        "chat_template": CHAT_TEMPLATE,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (path / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return path


def llama_config(
    *,
    vocab_size: int,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
    tie_word_embeddings: bool,
    bos_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    max_position_embeddings: int,
) -> dict[str, Any]:
    """A float32 Llama's config.json dict (what `mlx_lm` and `clara.loader` read)."""
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "intermediate_size": intermediate_size,
        "vocab_size": vocab_size,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": max_position_embeddings,
        "hidden_act": "silu",
        "tie_word_embeddings": tie_word_embeddings,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "torch_dtype": "float32",
    }


def random_model(config: dict[str, Any], seed: int = 0) -> nn.Module:
    """A randomly initialised `llama` or `hyperclovax` model for `config`, seeded by `seed`."""
    if config["model_type"] == "hyperclovax":
        from clara.models import hyperclovax as arch
    else:
        from mlx_lm.models import llama as arch

    mx.random.seed(seed)
    return arch.Model(arch.ModelArgs.from_dict(config))


def save_model(path: str | Path, model: nn.Module, config: dict[str, Any]) -> Path:
    """Write model.safetensors (mlx-lm's single-shard name) and config.json to `path`."""
    path = Path(path)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return path


def build_tiny_llama(
    path: str | Path,
    *,
    hidden_size: int = 128,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
    intermediate_size: int | None = None,
    tie_word_embeddings: bool = True,
    seed: int = 0,
) -> Path:
    """A random float32 Llama whose vocabulary is the tokenizer already saved in `path`."""
    from tokenizers import Tokenizer

    path = Path(path)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    config = llama_config(
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        intermediate_size=intermediate_size or 3 * hidden_size,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tok.token_to_id(BOS),
        eos_token_id=tok.token_to_id(EOS),
        pad_token_id=tok.token_to_id(PAD),
        max_position_embeddings=1024,
    )
    return save_model(path, random_model(config, seed), config)
