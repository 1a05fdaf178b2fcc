"""Several LoRA adapters over one frozen linear layer; exactly one is active per forward pass."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import mlx.core as mx
import mlx.nn as nn

from clara import _blas, _native
from clara.errors import InvalidArgumentError, ModelThreadError

if TYPE_CHECKING:
    from clara.model import ClaraModel

ADAPTERS = ("compressor", "query", "generator")
# Linear layers of a Llama-style block that get adapters ("all linear layers" but lm_head).
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def check_adapter(adapter: str | None) -> None:
    """`adapter` names one of ADAPTERS, or is None (the bare base model)."""
    if adapter is not None and adapter not in ADAPTERS:
        raise InvalidArgumentError(
            f"unknown adapter {adapter!r}: one of {', '.join(ADAPTERS)}, or None for the bare model"
        )


class AdapterSwitch:
    """Shared by every MultiLoRALinear of a model: which adapter is active (None = base), and
    whether layers use their merged decode copy of it (generation only, never training).

    `fast` (default) is the training fast path: one dropout mask per layer input (q/k/v read
    the same `x`, as do gate/up: 4 masks per block instead of 7), and the scale folded into
    one `addmm`. `fast = False` is the original per-linear path (kept for bench/bench_train.py).
    """

    def __init__(self) -> None:
        self.active: str | None = None
        self.merged = False
        self.fast = True
        self._dropped: tuple[mx.array, mx.array] | None = None  # (input, its dropout)
        self.owner = threading.current_thread()  # the model's thread: all its work runs there

    def check_thread(self) -> None:
        """Refuse a forward pass from another thread than the model's: it would read arrays of
        another thread's streams, and switch the adapter under that thread's running pass
        (wrong query vectors and answers, without an error)."""
        here = threading.current_thread()
        if here is not self.owner:
            raise ModelThreadError(
                f"this model was loaded on thread {self.owner.name!r} and called from "
                f"{here.name!r}: load and call a model on one thread (MLX arrays belong to the "
                "thread that made them); clara_cli.worker.Worker runs such a thread for "
                "asyncio and threaded programs"
            )

    def dropped(self, x: mx.array, p: float) -> mx.array:
        """`x` with inverted dropout at rate `p`, the same mask for every call with this `x`."""
        if self._dropped is not None and self._dropped[0] is x:
            return self._dropped[1]
        mask = mx.random.bernoulli(1.0 - p, x.shape)
        out = mx.where(mask, x * (1.0 / (1.0 - p)), mx.array(0, x.dtype))
        self._dropped = (x, out)
        return out


class _Merged:
    """A layer's decode weight `W + scale * (A @ B).T` for one adapter, kept outside the module
    tree (a plain attribute: never a parameter, so never saved, trained or fingerprinted),
    with the arrays it was made from so a trained adapter is merged again. `fused`: the
    `_Fused` product it is a slice of, once `merge_adapter` has made one."""

    def __init__(self, weight: mx.array, sources: tuple[mx.array, ...]) -> None:
        self.weight = weight
        self.sources = sources
        self.fused: tuple[_Fused, int, int] | None = None  # (product, first row, end row)


class _Fused:
    """The merged decode weights of linears that read the same input (a block's q/k/v)
    stacked into one `(sum of outputs, in)` matrix: one product per input instead of one per
    linear. The first member called with an input computes the product; the others slice it,
    found by the input's identity (as `AdapterSwitch.dropped` finds its mask), and it is let
    go once every member has had its slice. An input that only one member reads (another
    architecture's order) costs a stacked product per call, never a wrong slice.
    `CLARA_FUSE=off` keeps one product per linear."""

    def __init__(self, members: list[_Merged]) -> None:
        self.members = members
        self.weight = mx.concatenate([m.weight for m in members], axis=0)
        mx.eval(self.weight)
        self._last: tuple[mx.array, mx.array, set[int]] | None = None  # (x, product, to serve)
        starts, lo = [], 0
        for m in members:
            hi = lo + m.weight.shape[0]
            m.weight = self.weight[lo:hi]  # a view: the members share the stacked memory
            m.fused = (self, lo, hi)
            starts.append(lo)
            lo = hi
        self._starts = frozenset(starts)

    def product(self, x: mx.array, lo: int, hi: int) -> mx.array:
        """Rows `lo:hi` of the stacked product for `x` (the member's own output)."""
        last = self._last
        if last is None or last[0] is not x or lo not in last[2]:
            last = (x, x @ self.weight.T, set(self._starts))
        last[2].discard(lo)
        self._last = last if last[2] else None
        return last[1][..., lo:hi]

    def current(self, held: list[_Merged | None]) -> bool:
        return len(held) == len(self.members) and all(a is b for a, b in zip(held, self.members))


def _linear_dims(layer: nn.Module) -> tuple[int, int]:
    out_dims, in_dims = layer.weight.shape
    if isinstance(layer, nn.QuantizedLinear):
        in_dims = in_dims * 32 // layer.bits
    return in_dims, out_dims


class MultiLoRALinear(nn.Module):
    """`y = base(x) + scale * dropout(x) @ A[name] @ B[name]` for the active adapter `name`."""

    def __init__(
        self,
        base: nn.Module,
        switch: AdapterSwitch,
        names: tuple[str, ...] = ADAPTERS,
        rank: int = 16,
        alpha: float = 32.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.base = base
        self.switch = switch
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)
        # adapter name -> _Merged; a plain dict set past nn.Module's __setattr__ (which would
        # make it a child): not a parameter
        object.__setattr__(self, "_decode", {})
        in_dims, out_dims = _linear_dims(base)
        bound = 1.0 / math.sqrt(in_dims)
        # One attribute per adapter (`lora_compressor`, ...) so each can be frozen on its own.
        # B starts at zero so a fresh adapter leaves the base model unchanged.
        for name in names:
            setattr(
                self,
                f"lora_{name}",
                {
                    "a": mx.random.uniform(-bound, bound, (in_dims, rank)),
                    "b": mx.zeros((rank, out_dims)),
                },
            )

    def merge(self, name: str | None) -> bool:
        """Make (or refresh) the merged decode weight for adapter `name` (None: a decode copy
        of the base weight itself, apart from the one the compressor and query adapter read);
        False if the base layer cannot be merged (quantized)."""
        if not isinstance(self.base, nn.Linear) or isinstance(self.base, nn.QuantizedLinear):
            return False
        w = self.base.weight
        p = None if name is None else self[f"lora_{name}"]
        sources = (w,) if p is None else (w, p["a"], p["b"])
        held = self._decode.get(name)
        if held is not None and all(a is b for a, b in zip(held.sources, sources)):
            return True
        if p is None:  # its own memory: the BLAS layer finds decode copies by address
            weight = mx.array(w)  # a copy (tested: not the base weight's address)
        else:
            delta = (self.scale * (p["a"].astype(mx.float32) @ p["b"].astype(mx.float32))).T
            weight = (w.astype(mx.float32) + delta).astype(w.dtype)  # (out, in)
        mx.eval(weight)
        self._decode[name] = _Merged(weight, sources)
        return True

    def __call__(self, x: mx.array) -> mx.array:
        name = self.switch.active
        if self.switch.merged:
            held = self._decode.get(name)
            if held is not None:
                if held.fused is not None:
                    fused, lo, hi = held.fused
                    y = fused.product(x, lo, hi)
                else:
                    y = x @ held.weight.T
                return y + self.base.bias if "bias" in self.base else y
        y = self.base(x)
        if name is None:
            return y
        p = self[f"lora_{name}"]
        if not self.switch.fast:
            z = (self.dropout(x) @ p["a"].astype(x.dtype)) @ p["b"].astype(x.dtype)
            return y + (self.scale * z).astype(y.dtype)
        a, b = p["a"], p["b"]
        if a.dtype != x.dtype:
            a, b = a.astype(x.dtype), b.astype(x.dtype)
        rate = 1.0 - self.dropout._p_1 if self.dropout.training else 0.0
        if rate > 1e-9:
            x = self.switch.dropped(x, rate)
        return mx.addmm(y, x @ a, b.astype(y.dtype), alpha=self.scale)


def apply_lora(
    model: nn.Module,
    switch: AdapterSwitch,
    rank: int = 16,
    alpha: float = 32.0,
    dropout: float = 0.1,
    names: tuple[str, ...] = ADAPTERS,
) -> int:
    """Wrap every target linear in each transformer block; returns how many were wrapped."""
    count = 0
    for layer in model.layers:
        for parent in (getattr(layer, "self_attn", None), getattr(layer, "mlp", None)):
            if parent is None:
                continue
            for attr in TARGETS:
                lin = getattr(parent, attr, None)
                if isinstance(lin, (nn.Linear, nn.QuantizedLinear)):
                    wrapped = MultiLoRALinear(lin, switch, names, rank, alpha, dropout)
                    setattr(parent, attr, wrapped)
                    count += 1
    return count


def merge_adapter(cm: ClaraModel, adapter: str | None) -> int:
    """Make or refresh every layer's merged decode weight for `adapter` (None: decode copies
    of the bare model's weights, where the thin kernel runs); returns how many layers have
    one. Quantized layers keep the LoRA path, and so does a model whose copy would pass
    `CLARA_MERGE_GB` (default 4 GiB): the decode copy is only made where memory allows. A
    block's q/k/v copies are stacked into one product (`_Fused`; `CLARA_FUSE=off`: not)."""
    cm.switch.check_thread()  # (before anything changes: a refusal leaves the model as it was)
    layers = cm.lora_layers()
    plain = [m for m in layers if type(m.base) is nn.Linear]
    budget = float(os.environ.get("CLARA_MERGE_GB", "4") or 0) * 2**30
    # The bare model's copy only helps where the thin kernel reads compact copies of decode
    # weights by address (Linux CPUs); elsewhere it would be the same weights twice.
    useless = adapter is None and _blas.thin is None
    if useless or sum(m.base.weight.nbytes for m in plain) > budget:
        drop_merged(cm, adapter)
        return 0
    done = sum(layer.merge(adapter) for layer in plain)
    fuse = not _native.off("CLARA_FUSE")
    for group in fusable(cm):
        held = [m._decode.get(adapter) for m in group]
        if None in held:
            continue
        if not fuse or any("bias" in m.base for m in group):
            if any(h.fused is not None for h in held):  # each its own memory again: copies of
                for m in group:  # the decode weights are found by address, and a view of the
                    m._decode.pop(adapter, None)  # stacked matrix starts where it does
                    m.merge(adapter)
        elif held[0].fused is None or not held[0].fused[0].current(held):
            _Fused(held)
    return done


def merged_weights(cm: ClaraModel, adapter: str | None) -> list[mx.array]:
    """The arrays `adapter`'s merged products read (`merge_adapter`): each layer's merged
    weight, a stacked product's (`_Fused`) once for its members."""
    weights: list[mx.array] = []
    seen: set[int] = set()
    for layer in cm.lora_layers():
        held = layer._decode.get(adapter)
        if held is None:
            continue
        weight = held.weight if held.fused is None else held.fused[0].weight
        if id(weight) not in seen:
            seen.add(id(weight))
            weights.append(weight)
    return weights


def drop_merged(cm: ClaraModel, adapter: str | None) -> None:
    """Let go of `adapter`'s merged weights (`merge_adapter`): its products take the LoRA path."""
    cm.switch.check_thread()
    for layer in cm.lora_layers():
        layer._decode.pop(adapter, None)


#: Linears of a Llama-style block that read the same input, in the order the block calls them.
#: Only q/k/v: stacking gate/up too made decode steps and prefill slower here (SwiGLU then
#: reads two strided halves of one product).
FUSED = (("self_attn", ("q_proj", "k_proj", "v_proj")),)


def fusable(cm: ClaraModel) -> list[list[MultiLoRALinear]]:
    """Each block's groups of adapted linears that read one input (`FUSED`)."""
    groups = []
    for layer in cm.lm.layers:
        for parent_name, names in FUSED:
            parent = getattr(layer, parent_name, None)
            members = [getattr(parent, n, None) for n in names]
            if all(isinstance(m, MultiLoRALinear) and type(m.base) is nn.Linear for m in members):
                groups.append(members)
    return groups


@contextmanager
def merged(cm: ClaraModel, adapter: str | None) -> Iterator[None]:
    """Forward passes through `adapter` merged into decode copies of the base weights (made by
    `merge_adapter`; None: the bare model through its own decode copies): the same function as
    the LoRA path without its per-token matmuls, its float32 sums in another order. Generation,
    and compression where `ClaraModel.pack_base_weights` packed the merged compressor; query
    encodings and training keep the LoRA path."""
    switch: AdapterSwitch = cm.switch
    switch.check_thread()
    previous = (switch.active, switch.merged)
    switch.active, switch.merged = adapter, True
    try:
        yield
    finally:
        switch.active, switch.merged = previous
