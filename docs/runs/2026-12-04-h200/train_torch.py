"""CLaRa stage training of clara's default adapters (SmolLM2-135M, 16x) in PyTorch, for a GPU.

clara trains with MLX (`clara-train`); on a 2-core CPU that reaches a few thousand examples an
hour. This script is the same model and losses written for PyTorch, so a borrowed GPU can run
many more examples in minutes. It reads:

- the base weights as clara converted them (`model.safetensors`, MLX's affine 4-bit / 8-bit
  layout, dequantized here exactly as `mx.dequantize`: w = q * scale + bias in float32);
- the shipped checkpoint (`adapters.safetensors`) as the starting point;
- `data.npz` from prep.py: prompts tokenised and laid out by clara itself.

Phase A trains the compressor and generator adapters and the memory-token embeddings (CLaRa
stages 1-2: generator CE on answers + 0.1 x memory MSE); phase B trains the query adapter with
the compressor frozen (InfoNCE over every document of the data, on both the flattened cosine
and MaxSim, the two scores clara's index ranks by). It writes clara-named float16 tensors:
compressor.safetensors, generator.safetensors, query.safetensors, tokens.safetensors.

    python3 train_torch.py --model model.safetensors --init adapters.safetensors \
        --data data.npz --out OUT --seconds-a 400 --seconds-b 90
    python3 train_torch.py --check ...   # CPU: compare against clara's MLX outputs (check.npz)

A run longer than one call (a lent GPU's 10-minute calls) goes on with `--resume PREV`, the
`--out` of the call before: its tensors over `--init`, and its `state.json` (steps, examples,
seconds of phase A done, the next batch of the data order) so that the learning-rate schedule
(`--total-seconds-a`) and the data order run on over the calls instead of starting again (the
optimizer's moments do not travel: a resumed call warms its rate up again over `REWARM` steps).
Every save writes the tensors and state.json atomically; SIGINT or SIGTERM (`timeout -s INT`)
stops after the step in hand and saves. `--accum N` splits each batch into N micro-batches
(the same gradient in 1/N of the activation memory: batch 64 needs about 105 GiB at its
heaviest, over an H100's 80). docs/runs/gpu-chain has the calls.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import math
import os
import random
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load, load_file, save_file

TARGETS = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
           "mlp": ("gate_proj", "up_proj", "down_proj")}  # fmt: skip
ADAPTERS = ("compressor", "query", "generator")
N_MEM, D, LAYERS, HEADS, KV, HD = 16, 576, 30, 9, 3, 64
EPS, THETA, RANK, ALPHA, DROPOUT = 1e-5, 100000.0, 16, 32.0, 0.1
TEXT, SEP = -1, -2


def dequantize(w: np.ndarray, scales: np.ndarray, biases: np.ndarray, bits: int) -> np.ndarray:
    """MLX affine dequantization: uint32 words hold 32/bits values, lowest bits first."""
    per = 32 // bits
    shifts = (np.arange(per, dtype=np.uint32) * bits)[None, None, :]
    q = ((w[..., None] >> shifts) & np.uint32((1 << bits) - 1)).reshape(w.shape[0], -1)
    group = q.shape[1] // scales.shape[1]
    q = q.reshape(q.shape[0], scales.shape[1], group).astype(np.float32)
    out = q * scales.astype(np.float32)[..., None] + biases.astype(np.float32)[..., None]
    return out.reshape(w.shape[0], -1)


def read(paths: str) -> dict[str, np.ndarray]:
    """A safetensors file, or comma-separated parts of one xz-compressed file (`.xz`)."""
    parts = paths.split(",")
    if ".xz" not in parts[0]:
        return load_file(parts[0])
    blob = b"".join(open(p, "rb").read() for p in parts)
    return load(lzma.decompress(blob))


def random_base(seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights of the real shapes (GPU smoke tests before the weights arrive)."""
    g = np.random.default_rng(seed)
    out = {"model.embed_tokens.weight": g.normal(0, 0.02, (49152, D)).astype(np.float32),
           "model.norm.weight": np.ones(D, np.float32)}  # fmt: skip
    shapes = {"q_proj": (D, D), "k_proj": (KV * HD, D), "v_proj": (KV * HD, D),
              "o_proj": (D, D), "gate_proj": (1536, D), "up_proj": (1536, D),
              "down_proj": (D, 1536)}  # fmt: skip
    for i in range(LAYERS):
        for parent, names in TARGETS.items():
            for n in names:
                out[f"model.layers.{i}.{parent}.{n}.weight"] = g.normal(0, 0.02, shapes[n]).astype(
                    np.float32
                )
        for n in ("input_layernorm", "post_attention_layernorm"):
            out[f"model.layers.{i}.{n}.weight"] = np.ones(D, np.float32)
    return out


def random_init(base: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    out = {"mem_embeddings": g.normal(0, 0.02, (N_MEM, D)), "enc_embedding": g.normal(0, 0.02, (1, D)),
           "sep_embedding": g.normal(0, 0.02, (1, D)), "memory_center": np.zeros(D)}  # fmt: skip
    for i in range(LAYERS):
        for parent, names in TARGETS.items():
            for n in names:
                o, k = base[f"model.layers.{i}.{parent}.{n}.weight"].shape
                for a in ADAPTERS:
                    out[f"lm.model.layers.{i}.{parent}.{n}.lora_{a}.a"] = g.uniform(
                        -0.04, 0.04, (k, RANK)
                    )
                    out[f"lm.model.layers.{i}.{parent}.{n}.lora_{a}.b"] = np.zeros((RANK, o))
    return {k: v.astype(np.float32) for k, v in out.items()}


def load_base(path: str) -> dict[str, np.ndarray]:
    raw = read(path)
    out = {}
    for k, v in raw.items():
        if k.endswith((".scales", ".biases")):
            continue
        if v.dtype == np.uint32:
            stem = k[: -len(".weight")]
            s, b = raw[stem + ".scales"], raw[stem + ".biases"]
            bits = v.shape[1] // s.shape[1]  # groups of 32 values: `bits` words each
            out[k] = dequantize(v, s, b, bits)
        else:
            out[k] = v.astype(np.float32)
    return out


class Clara(torch.nn.Module):
    def __init__(self, base: dict[str, np.ndarray], init: dict[str, np.ndarray], dev, wdtype):
        super().__init__()
        self.w = {k: torch.from_numpy(v).to(dev, wdtype) for k, v in base.items()}
        self.emb = self.w["model.embed_tokens.weight"]  # (V, D), tied head
        self.lora = torch.nn.ParameterDict()
        for i in range(LAYERS):
            for parent, names in TARGETS.items():
                for n in names:
                    for a in ADAPTERS:
                        for ab in "ab":
                            key = f"lm.model.layers.{i}.{parent}.{n}.lora_{a}.{ab}"
                            self.lora[key.replace(".", "__")] = torch.nn.Parameter(
                                torch.from_numpy(init[key].astype(np.float32)).to(dev)
                            )
        self.tok = torch.nn.ParameterDict({
            k: torch.nn.Parameter(torch.from_numpy(init[k].astype(np.float32)).to(dev))
            for k in ("mem_embeddings", "enc_embedding", "sep_embedding")})  # fmt: skip
        self.center = torch.from_numpy(init["memory_center"].astype(np.float32)).to(dev)
        inv = 1.0 / (THETA ** (torch.arange(0, HD, 2, dtype=torch.float32) / HD))
        self.inv_freq = inv.to(dev)
        self.active: str | None = None
        self.drop = 0.0

    def lin(self, x, i, parent, name):
        y = x @ self.w[f"model.layers.{i}.{parent}.{name}.weight"].to(x.dtype).T
        if self.active is None:
            return y
        pre = f"lm__model__layers__{i}__{parent}__{name}__lora_{self.active}__"
        a, b = self.lora[pre + "a"], self.lora[pre + "b"]
        if self.drop:
            x = F.dropout(x, self.drop, True)
        return y + (ALPHA / RANK) * ((x @ a.to(x.dtype)) @ b.to(x.dtype))

    @staticmethod
    def rms(x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS) * w).to(x.dtype)

    def rope(self, x, L):  # traditional (interleaved pairs), positions 0..L-1; x (B,H,L,HD)
        ang = torch.arange(L, device=x.device, dtype=torch.float32)[:, None] * self.inv_freq
        cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)

    def forward(self, h, adapter):
        """Input embeddings (B, L, D) -> post-norm last states (B, L, D); causal, positions
        from 0 (right padding only)."""
        self.active = adapter
        B, L, _ = h.shape
        for i in range(LAYERS):
            x = self.rms(h, self.w[f"model.layers.{i}.input_layernorm.weight"])
            q = self.lin(x, i, "self_attn", "q_proj").view(B, L, HEADS, HD).transpose(1, 2)
            k = self.lin(x, i, "self_attn", "k_proj").view(B, L, KV, HD).transpose(1, 2)
            v = self.lin(x, i, "self_attn", "v_proj").view(B, L, KV, HD).transpose(1, 2)
            q, k = self.rope(q, L), self.rope(k, L)
            k = k.repeat_interleave(HEADS // KV, 1)
            v = v.repeat_interleave(HEADS // KV, 1)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            h = h + self.lin(o.transpose(1, 2).reshape(B, L, HEADS * HD), i, "self_attn", "o_proj")
            x = self.rms(h, self.w[f"model.layers.{i}.post_attention_layernorm.weight"])
            g = self.lin(x, i, "mlp", "gate_proj")
            u = self.lin(x, i, "mlp", "up_proj")
            h = h + self.lin(F.silu(g) * u, i, "mlp", "down_proj")
        return self.rms(h, self.w["model.norm.weight"])

    def encode(self, docs: list[list[int]], adapter: str, bos: int, eos: int, dtype):
        """`<ENC> BOS doc EOS <MEM x16>` per row -> (memory (N,16,D), mse per row (N,))."""
        dev = self.emb.device
        rows = [[0, bos, *d, eos] for d in docs]
        L = max(len(r) for r in rows) + N_MEM
        tok = torch.zeros(len(rows), L, dtype=torch.long)
        for j, r in enumerate(rows):
            tok[j, : len(r)] = torch.tensor(r)
        tok = tok.to(dev)
        h = self.emb[tok].to(dtype)
        h[:, 0] = self.tok["enc_embedding"][0].to(dtype)
        lens = torch.tensor([len(r) for r in rows], device=dev)
        pos = lens[:, None] + torch.arange(N_MEM, device=dev)[None]  # (N, 16)
        idx = torch.arange(len(rows), device=dev)[:, None]
        h = h.index_put((idx.expand_as(pos), pos), self.tok["mem_embeddings"].to(dtype)[None]
                        .expand(len(rows), -1, -1))  # fmt: skip
        out = self.forward(h, adapter).float() - self.center
        mem = out[idx, pos]  # (N, 16, D)
        ar = torch.arange(L, device=dev)[None]
        text = (ar >= 2) & (ar < (lens - 1)[:, None])  # the document's own tokens
        tm = text.float()[..., None]
        doc_mean = (out * tm).sum(1) / tm.sum(1).clamp(min=1)
        mse = ((mem.mean(1) - doc_mean) ** 2).mean(-1)
        return mem, mse

    def generate_loss(self, batch, memory, dtype):
        """Per-example mean answer CE (B,) for prompts laid out by clara (slots)."""
        tok, slots, pos, tgt, mask = batch
        h = self.emb[tok].to(dtype)
        flat = memory.reshape(-1, D).to(dtype)
        is_mem = slots >= 0
        h = torch.where(is_mem[..., None], flat[slots.clamp(min=0)], h)
        h = torch.where((slots == SEP)[..., None], self.tok["sep_embedding"][0].to(dtype), h)
        out = self.forward(h, "generator")
        sel = out.gather(1, pos[..., None].expand(-1, -1, D))  # (B, A, D)
        logits = (sel @ self.emb.to(dtype).T).float()  # bfloat16 products under autocast
        ce = F.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")  # (B, A)
        return (ce * mask).sum(1) / mask.sum(1).clamp(min=1), logits


class Data:
    def __init__(self, path: str):
        if path.endswith(".xz"):
            import io

            path = io.BytesIO(lzma.decompress(open(path, "rb").read()))
        z = np.load(path)
        self.z = {k: z[k] for k in z.files}
        print("data:", len(self.z["gen_off"]) - 1, "examples", flush=True)
        o = self.z["doc_off"]
        self.docs = [self.z["doc_tok"][o[i] : o[i + 1]].astype(np.int64).tolist()
                     for i in range(len(o) - 1)]  # fmt: skip
        self.n = len(self.z["gen_off"]) - 1
        o = self.z["q_off"]
        self.queries = [self.z["q_tok"][o[i] : o[i + 1]].astype(np.int64).tolist()
                        for i in range(len(o) - 1)]  # fmt: skip
        self.bos, self.eos = int(self.z["bos"][0]), int(self.z["eos"][0])
        self.q_doc = self.z["q_doc"].astype(np.int64)

    def shrink(self, n: int) -> None:
        """Smoke tests: phase B over the first n questions and their documents only."""
        keep = sorted(set(self.q_doc[:n].tolist()))
        remap = {d: j for j, d in enumerate(keep)}
        self.docs = [self.docs[d] for d in keep]
        self.queries = self.queries[:n]
        self.q_doc = np.array([remap[d] for d in self.q_doc[:n]], np.int64)

    def example(self, i):
        o = self.z["gen_off"]
        tok = self.z["gen_tok"][o[i] : o[i + 1]].astype(np.int64)
        slot = self.z["gen_slot"][o[i] : o[i + 1]].astype(np.int64)
        docs = [int(d) for d in self.z["gen_docs"][i] if d >= 0]
        return tok, slot, int(self.z["gen_nprompt"][i]), docs

    def batch(self, ids, dev):
        exs = [self.example(i) for i in ids]
        docs, B = [], len(exs)
        L = max(len(e[0]) for e in exs)
        A = max(len(e[0]) - e[2] for e in exs)
        tok = np.zeros((B, L), np.int64)
        slots = np.full((B, L), TEXT, np.int64)
        pos = np.zeros((B, A), np.int64)
        tgt = np.zeros((B, A), np.int64)
        mask = np.zeros((B, A), np.float32)
        for b, (t, s, npr, ds) in enumerate(exs):
            base = len(docs) * N_MEM
            docs += ds
            n = len(t)
            tok[b, :n] = t
            slots[b, :n] = np.where(s >= 0, s + base, s)
            a = n - npr
            pos[b, :a] = np.arange(npr - 1, n - 1)
            tgt[b, :a] = t[npr:]
            mask[b, :a] = 1
        arrs = [torch.from_numpy(x).to(dev) for x in (tok, slots, pos, tgt, mask)]
        return arrs, docs


def trainable(model, names, tokens):
    for k, p in model.lora.items():
        p.requires_grad_(any(f"lora_{n}__" in k for n in names))
    for p in model.tok.values():
        p.requires_grad_(tokens)
    return [p for p in model.parameters() if p.requires_grad]


def save(model, out, names, tag="", state=None):
    """The adapters `names` and the token rows as float16 tensors, then `state` (state.json);
    each file written whole under another name and renamed over the old one, so a call killed
    mid-save leaves the last save as it was."""
    for n in names:
        t = {k.replace("__", "."): p.detach().float().cpu().numpy().astype(np.float16)
             for k, p in model.lora.items() if f"lora_{n}__" in k}  # fmt: skip
        _atomic(os.path.join(out, f"{n}{tag}.safetensors"), lambda f, t=t: save_file(t, f))
    t = {k: p.detach().float().cpu().numpy().astype(np.float16) for k, p in model.tok.items()}
    t["memory_center"] = model.center.cpu().numpy()
    _atomic(os.path.join(out, f"tokens{tag}.safetensors"), lambda f: save_file(t, f))
    if state is not None:
        text = json.dumps(state, indent=1, sort_keys=True) + "\n"
        _atomic(os.path.join(out, "state.json"), lambda f: open(f, "w").write(text))


def _atomic(path, write):
    tmp = f"{path}.tmp"
    write(tmp)
    os.replace(tmp, path)


#: Steps over which a resumed call brings the learning rate back up: its AdamW starts with no
#: moments (they are not carried between calls), and its first steps at the schedule's rate
#: were about 4 times the usual update (a review)
REWARM = 40
STOP = {"asked": False}  # set by SIGINT / SIGTERM: stop after the step in hand, and save


def _stop(signum, frame):
    STOP["asked"] = True


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def schedule(frac, peak, warm=0.03):
    if frac < warm:
        return peak * frac / warm
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - warm) / (1 - warm)))))


def phase_a(model, data, args, dev, dtype, log, state):
    """Phase A for `--seconds-a` seconds of this call, on from `state` (a resumed run's): the
    schedule spans `--total-seconds-a`, and the batches follow the seed's order from the one
    after the last batch trained."""
    params = trainable(model, ("compressor", "generator"), True)
    opt = torch.optim.AdamW(params, lr=args.lr_a, weight_decay=0.0, betas=(0.9, 0.99))
    order = list(range(data.n))
    rng = random.Random(args.seed)
    rng.shuffle(order)
    lens = [data.z["gen_off"][i + 1] - data.z["gen_off"][i] for i in range(data.n)]
    groups = []  # length-sorted within windows of 16 batches: little padding
    for w in range(0, len(order), args.batch * 16):
        win = sorted(order[w : w + args.batch * 16], key=lambda i: lens[i])
        groups += [win[j : j + args.batch] for j in range(0, len(win), args.batch)]
    rng.shuffle(groups)
    total = args.total_seconds_a or args.seconds_a
    start = dict(state)  # where the calls before left off
    if dev.type == "cuda":  # the heaviest batch first (each call: a new card): an OOM in
        heaviest = max(groups, key=lambda g: _weight(data, g, lens))  # seconds, not minutes
        train_step(model, data, heaviest, args, dev, dtype, None, params)
        log({"phase": "a", "probe": "heaviest batch", "peak_gib": _peak()})
    model.drop = DROPOUT
    t0, step, seen, last_save = time.time(), 0, 0, time.time()

    def now():
        return {**start, "steps": start["steps"] + step, "seen": start["seen"] + seen,
                "cursor": (start["cursor"] + step) % len(groups),
                "seconds_a": round(start["seconds_a"] + time.time() - t0, 1)}  # fmt: skip

    while not STOP["asked"]:
        elapsed = time.time() - t0
        if elapsed >= args.seconds_a or start["seconds_a"] + elapsed >= total:
            break
        ids = groups[(start["cursor"] + step) % len(groups)]
        rewarm = min(1.0, (step + 1) / REWARM) if start["steps"] else 1.0
        for g in opt.param_groups:
            g["lr"] = rewarm * schedule((start["seconds_a"] + elapsed) / total, args.lr_a)
        loss, ce, mse = train_step(model, data, ids, args, dev, dtype, opt, params)
        step += 1
        seen += len(ids)
        if step % 20 == 0 or step == 1:
            kinds = data.z["gen_kind"][ids]
            qa = ce[kinds != 0].mean() if (kinds != 0).any() else 0.0
            log({"phase": "a", "step": start["steps"] + step, "seen": start["seen"] + seen,
                 "t": round(time.time() - t0, 1), "loss": round(loss, 4),
                 "ce_qa": round(float(qa), 4), "mse": round(float(mse.mean()), 4),
                 "lr": opt.param_groups[0]["lr"], "peak_gib": _peak()})  # fmt: skip
        if time.time() - last_save > args.save_every:
            save(model, args.out, ("compressor", "generator"), state=now())
            last_save = time.time()
    state.update(now())
    save(model, args.out, ("compressor", "generator"), state=state)
    log({"phase": "a", "done": step, "steps": state["steps"], "seen": state["seen"],
         "seconds_a": state["seconds_a"], "epochs": round(state["seen"] / data.n, 2),
         "stopped": STOP["asked"]})  # fmt: skip
    model.drop = 0.0


def _weight(data, ids, lens):
    """A batch's size in tokens: its prompts and the documents it compresses."""
    docs = [d for i in ids for d in data.example(i)[3]]
    return sum(lens[i] for i in ids) + sum(len(data.docs[d]) + N_MEM + 3 for d in docs)


def _peak():
    return round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else 0


def train_step(model, data, ids, args, dev, dtype, opt, params):
    """One optimizer step over batch `ids` in `--accum` micro-batches, each's loss weighted by
    its share of the examples and documents (the batch's gradient, in less memory). With no
    `opt`, the gradients are computed and dropped (the memory probe). Returns (loss, per-example
    CE, per-document MSE) as numpy."""
    parts = [p for p in np.array_split(np.asarray(ids), max(1, args.accum)) if len(p)]
    n_docs = sum(len(data.example(i)[3]) for i in ids)
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    loss_sum, ces, mses = 0.0, [], []
    for part in parts:
        (tok, slots, pos, tgt, mask), docs = data.batch(part.tolist(), dev)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
            mem, mse = model.encode(
                [data.docs[d] for d in docs], "compressor", data.bos, data.eos, dtype
            )
            ce, _ = model.generate_loss((tok, slots, pos, tgt, mask), mem, dtype)
        loss = ce.sum() / len(ids) + 0.1 * mse.sum() / max(1, n_docs)
        loss.backward()
        loss_sum += loss.item()
        ces.append(ce.detach().float().cpu().numpy())
        mses.append(mse.detach().float().cpu().numpy())
    if opt is None:
        model.zero_grad(set_to_none=True)
    else:
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return loss_sum, np.concatenate(ces), np.concatenate(mses)


def phase_b(model, data, args, dev, dtype, log):
    if args.seconds_b <= 0:
        return
    t0 = time.time()
    with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
        order = sorted(range(len(data.docs)), key=lambda i: len(data.docs[i]))
        out = torch.empty(len(data.docs), N_MEM, D, device=dev, dtype=dtype)
        for s in range(0, len(order), 256):
            part = order[s : s + 256]
            mem, _ = model.encode(
                [data.docs[i] for i in part], "compressor", data.bos, data.eos, dtype
            )
            out[torch.tensor(part, device=dev)] = mem.to(dtype)
        corpus = F.normalize(out.float(), dim=-1).to(dtype)  # (N, 16, D) unit vectors
        flat = F.normalize(out.float().reshape(len(out), -1), dim=-1).to(dtype)
    log({"phase": "b", "compressed": len(data.docs), "t": round(time.time() - t0, 1)})
    params = trainable(model, ("query",), False)
    opt = torch.optim.AdamW(params, lr=args.lr_b, weight_decay=0.0)
    qs = list(range(len(data.queries)))
    gold = torch.from_numpy(data.q_doc).to(dev)
    rng = random.Random(args.seed + 1)
    model.drop = DROPOUT
    step, t1 = 0, time.time()
    budget = args.seconds_b - (t1 - t0)
    while time.time() - t1 < budget:
        frac = (time.time() - t1) / budget
        for g in opt.param_groups:
            g["lr"] = schedule(frac, args.lr_b)
        ids = rng.sample(qs, min(args.qbatch, len(qs)))
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
            q, _ = model.encode([data.queries[i] for i in ids], "query", data.bos, data.eos, dtype)
            qu = F.normalize(q.float(), dim=-1).to(dtype)  # (B, 16, D)
            qf = F.normalize(q.float().reshape(len(ids), -1), dim=-1).to(dtype)
            s_flat = (qf @ flat.T).float()  # (B, N)
            s_max = torch.einsum("bid,njd->bnij", qu, corpus).amax(-1).float().mean(-1)
        g = gold[torch.tensor(ids, device=dev)]
        loss = F.cross_entropy(s_flat / 0.02, g) + F.cross_entropy(s_max / 0.02, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 20 == 0:
            r1 = (s_max.argmax(-1) == g).float().mean().item()
            log({"phase": "b", "step": step, "loss": round(loss.item(), 4), "r1_max": r1,
                 "r1_flat": (s_flat.argmax(-1) == g).float().mean().item()})  # fmt: skip
    save(model, args.out, ("query",))
    log({"phase": "b", "done": step})
    model.drop = 0.0


def check(model, args, dev):
    """Against clara (check.npz from check_mlx.py): memory of docs, generator logits."""
    z = np.load(args.check)
    docs = json.loads(str(z["docs"]))
    mem, mse = model.encode(docs, "compressor", int(z["bos"]), int(z["eos"]), torch.float32)
    err = (mem.detach().numpy() - z["memory"]).__abs__().max()
    print("memory max abs err", err, "scale", np.abs(z["memory"]).max())
    print("mse", mse.detach().numpy(), "clara", z["mse"])
    tok = torch.from_numpy(z["tokens"][None].astype(np.int64))
    slots = torch.from_numpy(z["slots"][None].astype(np.int64))
    n, npr = tok.shape[1], int(z["n_prompt"])
    pos = torch.arange(npr - 1, n - 1)[None]
    tgt = tok[:, npr:]
    ce, logits = model.generate_loss((tok, slots, pos, tgt, torch.ones_like(tgt).float()),
                                     torch.from_numpy(z["memory"][:1]), torch.float32)  # fmt: skip
    print("logits max abs err", np.abs(logits[0].detach().numpy() - z["logits"]).max(),
          "ce", ce.item(), "clara ce", float(z["ce"]))  # fmt: skip
    q, _ = model.encode(docs[:1], "query", int(z["bos"]), int(z["eos"]), torch.float32)
    print("query max abs err", np.abs(q.detach().numpy() - z["query"]).max())


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True)
    p.add_argument("--init", help="the adapters to start from (not with --model random)")
    p.add_argument("--resume", help="the --out of the call before: its tensors and state.json")
    p.add_argument(
        "--total-seconds-a",
        type=float,
        default=0,
        help="phase A's whole run over every call (the schedule spans it); "
        "0: this call's --seconds-a",
    )
    p.add_argument("--accum", type=int, default=1, help="micro-batches per batch")
    p.add_argument("--data")
    p.add_argument("--out", default="out")
    p.add_argument("--seconds-a", type=float, default=330)
    p.add_argument("--seconds-b", type=float, default=75)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--qbatch", type=int, default=128)
    p.add_argument("--lr-a", type=float, default=6e-4)
    p.add_argument("--lr-b", type=float, default=3e-4)
    p.add_argument("--save-every", type=float, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", type=int, default=0, help="phase B on this many questions only")
    p.add_argument("--check")
    p.add_argument("--cpu", action="store_true")
    args = p.parse_args()
    if not args.check and not args.data:
        p.error("--data is needed to train (only --check goes without)")
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    t = time.time()
    if args.model == "random":
        base = random_base()
        init = random_init(base)
    else:
        if not args.init:
            p.error("--init is needed with a real --model")
        base, init = load_base(args.model), read(args.init)
    if args.resume:  # the call before's tensors over --init
        for name in ("compressor", "generator", "query", "tokens"):
            f = os.path.join(args.resume, f"{name}.safetensors")
            if os.path.exists(f):
                init.update({k: v.astype(np.float32) for k, v in load_file(f).items()})
    model = Clara(base, init, dev,
                  torch.bfloat16 if dev.type == "cuda" else torch.float32)  # fmt: skip
    print(f"loaded in {time.time() - t:.1f}s on {dev}", flush=True)
    if args.check:
        with torch.no_grad():
            check(model, args, dev)
        return 0
    os.makedirs(args.out, exist_ok=True)
    logf = open(os.path.join(args.out, "log.jsonl"), "a")

    def log(rec):
        line = json.dumps(rec)
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    data = Data(args.data)
    state = {"steps": 0, "seen": 0, "seconds_a": 0.0, "cursor": 0, "calls": 0}
    if args.resume and os.path.exists(os.path.join(args.resume, "state.json")):
        state.update(json.load(open(os.path.join(args.resume, "state.json"))))
    digest = sha256(args.data)
    for key, now in (("data_sha256", digest), ("seed", args.seed), ("batch", args.batch)):
        if state.get(key, now) != now:  # another data order: the cursor would mean nothing
            p.error(f"--resume {args.resume} ran with {key} {state[key]}, this call {now}")
    state.update(data_sha256=digest, seed=args.seed, batch=args.batch, calls=state["calls"] + 1)
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    log({"examples": data.n, "docs": len(data.docs), "queries": len(data.queries),
         "device": str(dev), "device_name": name, "args": vars(args), "state": state})  # fmt: skip
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if args.seconds_a > 0:
        phase_a(model, data, args, dev, dtype, log, state)
    if args.smoke:
        data.shrink(args.smoke)
    phase_b(model, data, args, dev, dtype, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
