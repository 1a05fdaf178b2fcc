"""Losses checked against values computed by hand."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from training.losses import lm_ce_sum, masked_ce_sum, memory_mse


def test_masked_ce_sum_by_hand():
    # two positions, vocab 2; the second is masked out
    logits = mx.array([[[0.0, 0.0], [5.0, -5.0]]])  # (1, 2, 2)
    targets = mx.array([[1, 1]])
    mask = mx.array([[1.0, 0.0]])
    assert masked_ce_sum(logits, targets, mask).item() == pytest.approx(math.log(2))
    # logits (2, 0) and target 0: -log(e^2 / (e^2 + 1))
    logits = mx.array([[[2.0, 0.0], [0.0, 0.0]]])
    got = masked_ce_sum(logits, mx.array([[0, 1]]), mx.array([[1.0, 1.0]])).item()
    assert got == pytest.approx(math.log(1 + math.exp(-2)) + math.log(2), rel=1e-6)


def test_memory_mse_by_hand():
    # one document: memory rows (1, 3) and (3, 5) -> mean (2, 4);
    # hidden rows (9, 9) [not text], (1, 1), (3, 1) [text] -> doc mean (2, 1)
    memory = mx.array([[[1.0, 3.0], [3.0, 5.0]]])
    hidden = mx.array([[[9.0, 9.0], [1.0, 1.0], [3.0, 1.0]]])
    mask = mx.array([[False, True, True]])
    # ((2-2)^2 + (4-1)^2) / 2 = 4.5
    np.testing.assert_allclose(np.array(memory_mse(memory, hidden, mask)), [4.5])


def test_memory_mse_is_per_document():
    memory = mx.zeros((2, 1, 1))
    hidden = mx.array([[[2.0]], [[4.0]]])
    mask = mx.array([[True], [True]])
    np.testing.assert_allclose(np.array(memory_mse(memory, hidden, mask)), [4.0, 16.0])


def test_lm_ce_sum_shifts_targets():
    # uniform logits over vocab 4: each prediction costs log 4; only target 1 has mask 1
    logits = mx.zeros((1, 3, 4))
    tokens = mx.array([[0, 1, 2]])
    mask = mx.array([[1, 1, 0]])
    assert lm_ce_sum(logits, tokens, mask).item() == pytest.approx(math.log(4))
