"""Gradients of a model's trainable parameters, as trees the optimiser can apply directly.

`mlx.nn.value_and_grad` feeds `model.trainable_parameters()` back through a strict
`model.update`, which fails when some arrays inside a dict parameter (one LoRA adapter of
several) are frozen: the frozen leaves come back as empty dicts. We prune those first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map


def prune(tree: Any) -> Any:
    """Drop empty dicts that stand for frozen leaves inside dict parameters (lists keep length)."""
    if isinstance(tree, dict):
        out = {k: prune(v) for k, v in tree.items()}
        return {k: v for k, v in out.items() if not (isinstance(v, dict) and not v)}
    if isinstance(tree, list):
        return [prune(v) for v in tree]
    return tree


def trainable(model: nn.Module) -> dict:
    """The model's trainable parameters as a pruned tree."""
    return prune(model.trainable_parameters())


def value_and_grad(model: nn.Module, fn: Callable) -> Callable:
    """Like `nn.value_and_grad`; `fn(*args)` may return `(loss, aux)`; grads are pruned trees."""

    def inner(params, *args):
        model.update(params, strict=False)
        return fn(*args)

    vg = mx.value_and_grad(inner)

    def wrapped(*args):
        return vg(trainable(model), *args)

    return wrapped


def add(a: dict | None, b: dict) -> dict:
    """Elementwise sum of two gradient trees (`a` may be None)."""
    return b if a is None else tree_map(lambda x, y: x + y, a, b)


def global_norm(grads: dict) -> mx.array:
    """The L2 norm of every gradient, summed in float32 whatever their dtype (unlike
    `mlx.optimizers.clip_grad_norm`'s, in theirs: bfloat16 squares lose the small ones)."""
    return mx.sqrt(sum((g.astype(mx.float32) ** 2).sum() for _, g in tree_flatten(grads)))


def clip(grads: dict, max_norm: float) -> tuple[dict, mx.array]:
    """Scale `grads` so their global L2 norm is at most `max_norm`; returns (grads, norm)."""
    norm = global_norm(grads)
    scale = mx.minimum(max_norm / (norm + 1e-6), 1.0)
    return tree_map(lambda g: g * scale.astype(g.dtype), grads), norm
