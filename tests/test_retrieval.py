"""Retrieval math against hand-computed values and finite differences."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from clara.retrieval import (
    Fusion,
    cosine_scores,
    differentiable_topk,
    flatten_normalize,
    hard_topk,
    recall_precision_at_k,
    reciprocal_rank_fusion,
    soft_topk,
)


def test_cosine_of_flattened_vectors_by_hand():
    q = mx.array([[[1.0, 0.0], [0.0, 1.0]]])  # flattened (1, 0, 0, 1)
    docs = mx.array(
        [
            [[1.0, 0.0], [0.0, 1.0]],  # identical -> 1
            [[0.0, 1.0], [1.0, 0.0]],  # (0,1,1,0) orthogonal -> 0
            [[2.0, 0.0], [0.0, 0.0]],  # (2,0,0,0) -> 2 / (sqrt2 * 2) = 0.7071
            [[-1.0, 0.0], [0.0, -1.0]],  # opposite -> -1
        ]
    )
    np.testing.assert_allclose(
        np.array(cosine_scores(q, docs)), [[1.0, 0.0, 1 / np.sqrt(2), -1.0]], atol=1e-6
    )
    # not mean pooling: mean-pooled vectors of docs 0 and 1 are equal, flattened ones are not
    flat = flatten_normalize(np.array(docs))
    assert flat.shape == (4, 4)
    np.testing.assert_allclose(np.linalg.norm(flat, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(flat @ flat[0], [1.0, 0.0, 1 / np.sqrt(2), -1.0], atol=1e-6)


def test_hard_topk_rows():
    scores = mx.array([0.1, 0.9, 0.5, 0.7])
    np.testing.assert_array_equal(
        np.array(hard_topk(scores, 3)),
        [[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]],
    )


def test_soft_topk_by_hand():
    scores = mx.array([0.0, 1.0, 2.0])
    rows = np.array(soft_topk(scores, 2, tau=1.0))
    e = np.exp([0.0, 1.0, 2.0])
    np.testing.assert_allclose(rows[0], e / e.sum(), atol=1e-6)
    second = np.array([e[0], e[1], 0.0]) / (e[0] + e[1])  # item 2 was picked, masked out
    np.testing.assert_allclose(rows[1], second, atol=1e-6)


def test_straight_through_forward_is_hard():
    scores = mx.random.normal((2, 6), key=mx.random.key(3))
    w = differentiable_topk(scores, 3, tau=0.02)
    np.testing.assert_allclose(np.array(w), np.array(hard_topk(scores, 3)), atol=1e-6)


def test_straight_through_gradient_matches_soft_finite_differences():
    scores = mx.array([0.3, -0.2, 0.5, 0.1, 0.05])
    docs = mx.random.normal((5, 3), key=mx.random.key(1))
    target = mx.random.normal((2, 3), key=mx.random.key(2))
    tau = 0.5

    def loss_st(s):
        return mx.sum((differentiable_topk(s, 2, tau) @ docs - target) ** 2)

    def loss_soft_linear(s):
        # the STE gradient is d/ds of <dL/dW at W_hard, K_soft(s)>
        w_hard = hard_topk(scores, 2)
        g = 2 * ((w_hard @ docs - target) @ docs.T)
        return mx.sum(g * soft_topk(s, 2, tau))

    grad = np.array(mx.grad(loss_st)(scores))
    eps = 1e-3
    fd = []
    for i in range(5):
        d = np.zeros(5, dtype=np.float32)
        d[i] = eps
        hi = loss_soft_linear(scores + mx.array(d))
        lo = loss_soft_linear(scores - mx.array(d))
        fd.append(float(hi - lo) / (2 * eps))
    np.testing.assert_allclose(grad, fd, rtol=2e-2, atol=2e-3)
    assert np.abs(grad).max() > 1e-3  # gradients actually flow


def test_recall_precision():
    got = recall_precision_at_k([[3, 1, 2], [0, 4, 5]], [[1], [5, 9]], ks=(1, 3))
    assert got["recall@1"] == 0.0
    assert got["recall@3"] == (1.0 + 0.5) / 2
    assert got["precision@3"] == (1 / 3 + 1 / 3) / 2


def test_reciprocal_rank_fusion_by_hand():
    # k = 1 keeps the fractions readable: score = sum w / (1 + rank)
    fused = reciprocal_rank_fusion({"dense": ["a", "b", "c"], "lexical": ["c", "a"]}, k=1)
    got = {f.id: (f.score, f.ranks) for f in fused}
    assert got["a"] == (pytest.approx(1 / 2 + 1 / 3), {"dense": 1, "lexical": 2})
    assert got["c"] == (pytest.approx(1 / 4 + 1 / 2), {"dense": 3, "lexical": 1})
    assert got["b"] == (pytest.approx(1 / 3), {"dense": 2, "lexical": None})
    assert [f.id for f in fused] == ["a", "c", "b"]  # 0.833 > 0.75 > 0.333


def test_fusion_weights_and_k_change_the_order():
    rankings = {"dense": [1, 2], "lexical": [2, 3]}
    # k=60: item 2 (ranks 2 and 1) beats item 1 (rank 1 only)
    assert [f.id for f in reciprocal_rank_fusion(rankings, 60)] == [2, 1, 3]
    # dense weight 3: 3/61 = 0.0492 for item 1 vs 3/62 + 1/61 = 0.0648 for item 2; lexical 0
    fused = reciprocal_rank_fusion(rankings, 60, {"dense": 3.0, "lexical": 0.0})
    assert [f.id for f in fused] == [1, 2, 3] and fused[2].score == 0.0
    assert fused[0].score == pytest.approx(3 / 61) and fused[1].score == pytest.approx(3 / 62)


def test_fusion_ties_break_by_best_single_rank_then_first_seen():
    fused = reciprocal_rank_fusion({"dense": ["x", "y"], "lexical": ["y", "x"]}, k=10)
    assert fused[0].score == pytest.approx(fused[1].score)  # 1/11 + 1/12 each
    assert [f.id for f in fused] == ["x", "y"]  # both have a rank 1: first seen wins
    one = reciprocal_rank_fusion({"dense": ["p", "q", "p"]}, k=1)  # a repeat keeps its best
    assert [(f.id, f.ranks["dense"]) for f in one] == [("p", 1), ("q", 2)]
    assert reciprocal_rank_fusion({"dense": [], "lexical": []}) == []


def test_fusion_settings_are_checked():
    for bad in ({"k": 0}, {"weights": {"dense": -1.0}}, {"depth": 0}):
        with pytest.raises(ValueError):
            Fusion(**bad)


def test_fusion_score_of_given_ranks():
    f = Fusion(k=2, weights={"dense": 0.5, "lexical": 1.0})
    assert f.score({"dense": 1, "lexical": 2}) == pytest.approx(0.5 / 3 + 1 / 4)
    assert f.score({"dense": None, "lexical": 1}) == pytest.approx(1 / 3)
    fused = reciprocal_rank_fusion({"dense": ["a"], "lexical": ["b", "a"]}, f.k, f.weights)
    assert all(x.score == pytest.approx(f.score(x.ranks)) for x in fused)


def test_maxsim_is_each_query_vectors_best_cosine_averaged() -> None:
    import mlx.core as mx

    from clara.retrieval import maxsim_numpy, maxsim_scores

    rng = np.random.default_rng(0)
    q, docs = rng.normal(size=(3, 4, 8)), rng.normal(size=(5, 4, 8))
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    brute = np.array([[np.mean([max(unit(a) @ unit(b) for b in d) for a in qq]) for d in docs]
                      for qq in q])  # fmt: skip
    assert np.allclose(maxsim_numpy(q, docs, block=2), brute, atol=1e-5)
    assert np.allclose(np.array(maxsim_scores(mx.array(q), mx.array(docs))), brute, atol=1e-5)
    # a document holding the query's vectors in another order scores 1; flattened cosine not
    shuffled = q[:1, ::-1]
    assert np.isclose(maxsim_numpy(q[:1], shuffled)[0, 0], 1.0, atol=1e-6)
