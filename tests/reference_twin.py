"""Tiny twins of Apple's reference CLaRa checkpoints, and the reference computation in PyTorch.

`build_hf_twin` saves a tiny random Hugging Face model (Mistral or Llama) that `mlx_lm.convert`
turns into the MLX base; `build_reference` gives it the reference's added tokens, resized
embeddings and PEFT LoRA adapters and saves them in the reference's layout (`torch.save` of
`adapters.pth` and `decoder_first_last_layers.pth`, plus `config.json`). `ref_encode` and
`ref_generate` then compute what the reference code does (apple/ml-clara
`openrlhf/models/modeling_clara.py`: `_prepare_encoder_inputs_to_decoder`, `_compr_decoder`,
`_blend_standard_prompt` / `_blend_paraphrase_prompt`, `_replace_embeddings`, greedy
`generate`) with transformers + peft, independently of clara. Needs torch (the dev extra).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from jinja2.exceptions import TemplateError
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

from tests.tiny import _CORPUS

# Mistral-7B-Instruct-style chat template (system text joins the first user turn).
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set rest = messages[1:] %}"
    "{% else %}{% set rest = messages %}{% endif %}"
    "{% for m in rest %}{% if m['role'] == 'user' %}"
    "{% if loop.first and system is defined %}"
    "{{ '[INST] ' + system + '\\n\\n' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endif %}"
    "{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"
)
# A template without a system role (the reference falls back to one user turn).
NO_SYSTEM_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<' + m['role'] + '>' + m['content'] + '</s>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}"
)
QA_SYSTEM = (
    "You are a helpful assistant. Your task is to extract relevant information from provided "
    "documents and to answer to questions as briefly as possible."
)
PARAPHRASE_SYSTEM = (
    "You are a helpful assistant. Your task is follow the instructions to paraphrase the "
    "background information."
)


def build_spm_tokenizer(path: Path, template: str = MISTRAL_TEMPLATE) -> Path:
    """A small Mistral-like tokenizer: BPE with a `▁` Metaspace, `<unk>` `<s>` `</s>`."""
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    tok.save(str(path / "tokenizer.json"))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **special, "chat_template": template}
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    (path / "special_tokens_map.json").write_text(json.dumps(special))
    return path


def build_hf_twin(
    path: Path,
    tokenizer_dir: Path,
    arch: str = "mistral",
    *,
    extra_rows: int = 0,
    tie: bool = False,
    seed: int = 0,
) -> Path:
    """A tiny random HF model (hidden 64, 2 layers, untied head unless `tie`) + tokenizer files.

    `extra_rows` pads the vocabulary past the tokenizer (as HyperCLOVA X SEED does).
    """
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    dims = dict(
        vocab_size=len(tok) + extra_rows,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=tie,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        initializer_range=0.1,
    )
    torch.manual_seed(seed)
    if arch == "mistral":
        model = MistralForCausalLM(MistralConfig(**dims, sliding_window=None, rope_theta=1e6))
    else:
        model = LlamaForCausalLM(LlamaConfig(**dims, rope_theta=5e6, rms_norm_eps=1e-6))
    with torch.no_grad():  # norms away from 1: a norm in the wrong place shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    model.save_pretrained(path)
    # transformers 5 writes rope_theta under rope_parameters; the released models (and mlx-lm)
    # use the top-level key
    cfg_file = path / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["rope_theta"] = model.config.rope_parameters["rope_theta"]
    cfg_file.write_text(json.dumps(cfg, indent=2))
    for f in Path(tokenizer_dir).iterdir():
        shutil.copy(f, path / f.name)
    return path


@dataclass
class RefModel:
    """The reference's in-memory state: decoder with adapters, tokenizer, memory tokens."""

    model: torch.nn.Module
    tok: object
    mem_tokens: list[str]
    mem_ids: list[int]
    doc_max: int
    sep: bool


def build_reference(
    hf_dir: Path,
    out: Path,
    *,
    doc_max: int,
    rate: int,
    distinct: bool,
    sep: bool,
    stage: str,
    query: bool,
    seed: int = 1,
) -> RefModel:
    """Write `out/{config.json,adapters.pth,decoder_first_last_layers.pth}` as the reference."""
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(hf_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    n_mem = doc_max // rate
    mem = [f"<MEM{i}>" for i in range(n_mem)] if distinct else ["<MEM>"] * n_mem
    new = (mem if distinct else ["<MEM>"]) + ["<AE>", "<ENC>", "<SEP>"]
    tok.add_special_tokens({"additional_special_tokens": new})
    if tok.pad_token is None:
        tok.pad_token = tok.bos_token
    model.resize_token_embeddings(len(tok))
    mem_ids = tok.convert_tokens_to_ids(mem)
    emb = model.get_input_embeddings().weight
    with torch.no_grad():  # "trained" memory-token rows (optimize_mem_tokens)
        for i in set(mem_ids):
            emb[i] = 0.5 * torch.randn_like(emb[i])
    names = ["encoder_adapter", "decoder_adapter"] + (["query_reasoner_adapter"] if query else [])
    for name in names:
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.1)
        inject_adapter_in_model(cfg, model, adapter_name=name)
    model.eval()  # LoRA dropout off (the reference's generate_from_questions calls eval())
    with torch.no_grad():  # trained adapters: B away from its zero init
        for pname, p in model.named_parameters():
            if "lora_" in pname:
                p.copy_(0.2 * torch.randn_like(p))
    out.mkdir(parents=True, exist_ok=True)
    states = {n: get_peft_model_state_dict(model, adapter_name=n) for n in names}
    torch.save(states, out / "adapters.pth")
    layers = {
        k: v.cpu()
        for k, v in model.named_parameters()
        if "lm_head.weight" in k or "embed_tokens.weight" in k
    }
    torch.save(layers, out / "decoder_first_last_layers.pth")
    config = {
        "model_type": "CLaRa",
        "decoder_model_name": "/mnt/models/Mistral-7B-Instruct-v0.2",
        "doc_max_length": doc_max,
        "compr_rate": rate,
        "compr_model_name": None,
        "lora": True,
        "lora_r": 4,
        "different_mem_tokens": distinct,
        "optimize_mem_tokens": True,
        "sep": sep,
        "training_stage": stage,
        "generation_top_k": 5,
        "kbtc_training": False,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return RefModel(model, tok, mem, mem_ids, doc_max, sep)


def set_adapter(model: torch.nn.Module, name: str) -> None:
    for m in model.modules():
        if isinstance(m, LoraLayer):
            m.set_adapter(name)


@torch.no_grad()
def ref_encode(ref: RefModel, texts: list[str], adapter: str) -> torch.Tensor:
    """Memory (or query) vectors `(B, n_mem, d)` as the reference's compressor computes them."""
    tok = ref.tok
    strings = ["<ENC>" + tok.bos_token + t + tok.eos_token for t in texts]
    enc = tok(
        strings,
        return_tensors="pt",
        padding="max_length",
        max_length=ref.doc_max + 3,
        truncation=True,
        add_special_tokens=False,
    )
    mem = torch.tensor(ref.mem_ids)[None].expand(len(texts), -1)
    ids = torch.cat([enc["input_ids"], mem], dim=1)
    att = torch.cat([enc["attention_mask"], torch.ones_like(mem)], dim=1)
    set_adapter(ref.model, adapter)
    hidden = ref.model(input_ids=ids, attention_mask=att, output_hidden_states=True)
    hidden = hidden.hidden_states[-1]
    mask = torch.isin(ids, torch.tensor(ref.mem_ids))
    return hidden[mask].reshape(len(texts), -1, hidden.shape[-1])


def ref_scores(queries: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    q = torch.nn.functional.normalize(queries.reshape(len(queries), -1), dim=-1)
    d = torch.nn.functional.normalize(docs.reshape(len(docs), -1), dim=-1)
    return q @ d.T


@torch.no_grad()
def ref_generate(
    ref: RefModel, question: str, memories: torch.Tensor, template: str, max_new: int
) -> list[int]:
    """Greedy answer tokens from `memories` `(k, n_mem, d)` with the reference's prompt."""
    tok = ref.tok
    docs = ("".join(ref.mem_tokens) + "<SEP>") * len(memories)
    if template == "paraphrase":
        system, user = PARAPHRASE_SYSTEM, f"Background: {docs} means the same as"
    else:
        system, user = QA_SYSTEM, f"Background:\n{docs}\n\nQuestion:{question}"
    try:
        prompt = tok.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": user}],
            tokenize=False,
            add_generation_prompt=True,
        )
    except TemplateError as exc:
        assert "System role not supported" in str(exc)
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": system + "\n" + user}],
            tokenize=False,
            add_generation_prompt=True,
        )
    ids = tok([prompt], return_tensors="pt", add_special_tokens=False)["input_ids"]
    emb = ref.model.get_input_embeddings()(ids)
    first = int(torch.argmax((ids == ref.mem_ids[0]).int(), dim=1)[0])
    n = memories.shape[1]
    slot = n + (1 if ref.sep else 0)
    for j in range(len(memories)):
        emb[0, first + j * slot : first + j * slot + n] = memories[j]
    set_adapter(ref.model, "decoder_adapter")
    out = ref.model.generate(
        inputs_embeds=emb,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=max_new,
        pad_token_id=tok.pad_token_id,
    )
    tokens = out[0].tolist()
    return tokens[: tokens.index(tok.eos_token_id)] if tok.eos_token_id in tokens else tokens
