"""The training loop: learning happens, checkpoints load with `load_clara`, resume is exact."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from clara.checkpoint import load_clara
from clara.errors import ClaraError
from clara.model import ClaraConfig
from training.data import PretrainRecord, QARecord
from training.pipeline import load_for_training, train
from training.trainer import TrainConfig, checkpoints, lr_schedule, read_metrics

DOCS = [
    "The river runs past the old mill.",
    "The capital of France is Paris.",
    "The train leaves the station at seven.",
    "Water boils at one hundred degrees.",
    "The cat sat on the mat by the fire.",
    "She bought bread, apples and cheese.",
]
PRETRAIN = [PretrainRecord("paraphrase", d) for d in DOCS] + [
    PretrainRecord("qa", DOCS[1], ["What is the capital of France?"], ["Paris"]),
    PretrainRecord("qa", DOCS[2], ["When does the train leave?"], ["At seven"]),
]
CONFIG = ClaraConfig(compression_rate=16, doc_max_tokens=32, lora_rank=4, lora_dropout=0.1)


def _cfg(out, **kw) -> TrainConfig:
    base = dict(stage="pretrain", out=str(out), lr=3e-3, batch_size=2, quiet=True, log_every=1)
    return TrainConfig(**{**base, **kw})


def _weights(path):
    return mx.load(str(path / "adapters.safetensors"))


def test_lr_schedule_warmup_then_cosine_to_a_tenth():
    f = lr_schedule(1.0, 100, warmup=0.03, min_ratio=0.1)
    lrs = [float(f(mx.array(s))) for s in range(100)]
    assert lrs[0] == pytest.approx(1 / 3) and lrs[2] == pytest.approx(1.0)
    assert lrs[3] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1, abs=2e-3)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))


def test_pretrain_learns_and_writes_a_loadable_checkpoint(tiny_llama_dir, tmp_path):
    final = train(
        PRETRAIN,
        _cfg(tmp_path / "run", max_steps=12, save_every=6),
        model=tiny_llama_dir,
        clara_config=CONFIG,
        dtype=None,
    )
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert {"ce", "mse", "lr", "grad_norm", "positions"} <= set(rows[0])
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["step-000006", "final"]
    # --keep-last: only the newest step checkpoints stay beside final/
    train(
        PRETRAIN,
        _cfg(tmp_path / "kept", max_steps=4, save_every=1, keep_last=2),
        model=tiny_llama_dir,
        clara_config=CONFIG,
        dtype=None,
    )
    kept = [p.name for p in checkpoints(tmp_path / "kept")]
    assert kept == ["step-000002", "step-000003", "final"]  # the last step saves final/ only
    cfg = json.loads((final / "clara_config.json").read_text())
    assert cfg["training"]["stage"] == "pretrain" and cfg["training"]["step"] == 12
    cm = load_clara(tiny_llama_dir, final, dtype=None)
    assert cm.config.compression_rate == 16
    assert any(float(mx.abs(la.lora_generator["b"]).sum()) > 0 for la in cm.lora_layers())


@pytest.mark.parametrize("full", [False, True])
def test_resume_is_exact(tiny_llama_dir, tmp_path, full):
    kw = dict(max_steps=6, grad_accum=2, full=full, log_every=2)  # stopped at 3: between rows
    straight = train(
        PRETRAIN, _cfg(tmp_path / "a", **kw), model=tiny_llama_dir, clara_config=CONFIG, dtype=None
    )
    half = train(
        PRETRAIN,
        _cfg(tmp_path / "b", stop_after=3, **kw),
        model=tiny_llama_dir,
        clara_config=CONFIG,
        dtype=None,
    )
    assert half.name == "step-000003"
    resumed = train(
        PRETRAIN,
        _cfg(tmp_path / "b", **kw),
        model=tiny_llama_dir,
        clara_config=CONFIG,
        dtype=None,
        resume=True,
    )
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(np.array(a[k]), np.array(b[k])), k
    if full:
        wa = mx.load(str(straight / "base" / "model.safetensors"))
        wb = mx.load(str(resumed / "base" / "model.safetensors"))
        assert all(np.array_equal(np.array(wa[k]), np.array(wb[k])) for k in wa)
        # the full fine-tuning checkpoint loads with its own base weights
        cm = load_for_training(tiny_llama_dir, straight, dtype=None)
        assert str(cm.info.path).endswith("base")
    la = [
        (r["step"], r["loss"], r["positions"])
        for r in read_metrics(tmp_path / "a" / "metrics.jsonl")
    ]
    lb = [
        (r["step"], r["loss"], r["positions"])
        for r in read_metrics(tmp_path / "b" / "metrics.jsonl")
    ]
    assert la == lb and [s for s, _, _ in la] == [2, 4, 6]  # step 4's row holds step 3 too


def test_a_run_never_mixes_with_another(tiny_llama_dir, tmp_path):
    """An --out holding a run is refused without --resume; --resume refuses a checkpoint of
    other settings; --out may not hold what --init-from points at."""
    kw = dict(model=tiny_llama_dir, clara_config=CONFIG, dtype=None)
    half = train(PRETRAIN, _cfg(tmp_path / "r", max_steps=4, stop_after=2), **kw)
    with pytest.raises(ClaraError, match="already holds a run .*step-000002.*--resume"):
        train(PRETRAIN, _cfg(tmp_path / "r", max_steps=4), **kw)
    with pytest.raises(ClaraError, match=r"other settings \(lr 0.003 -> 0.01"):
        train(PRETRAIN, _cfg(tmp_path / "r", max_steps=4, lr=1e-2), resume=True, **kw)
    with pytest.raises(ClaraError, match="overwrite what it starts from"):
        train(PRETRAIN, _cfg(tmp_path / "fresh", max_steps=1), init_from=tmp_path / "fresh" / "x",
              **kw)  # fmt: skip
    assert [p.name for p in checkpoints(tmp_path / "r")] == [half.name]  # nothing written


def test_resume_needs_a_checkpoint(tiny_llama_dir, tmp_path):
    with pytest.raises(ClaraError, match="no checkpoint"):
        train(
            PRETRAIN,
            _cfg(tmp_path / "none", max_steps=2),
            model=tiny_llama_dir,
            clara_config=CONFIG,
            dtype=None,
            resume=True,
        )


def test_stages_chain_and_joint_logs_recall(tiny_llama_dir, tmp_path):
    s1 = train(
        PRETRAIN,
        _cfg(tmp_path / "s1", max_steps=2),
        model=tiny_llama_dir,
        clara_config=CONFIG,
        dtype=None,
    )
    qa = [
        QARecord("What is the capital of France?", DOCS, ["Paris"], [1]),
        QARecord("When does the train leave?", DOCS[::-1], ["At seven"], [3]),
    ]
    s2 = train(
        qa,
        _cfg(tmp_path / "s2", stage="instruct", max_steps=2),
        model=tiny_llama_dir,
        init_from=s1,
        dtype=None,
    )
    s3 = train(
        qa,
        _cfg(tmp_path / "s3", stage="joint", max_steps=2, lr=1e-3),
        model=tiny_llama_dir,
        init_from=s2,
        dtype=None,
    )
    rows = read_metrics(tmp_path / "s3" / "metrics.jsonl")
    assert {"recall@1", "recall@3", "precision@5"} <= set(rows[-1])
    c2, c3 = _weights(s2), _weights(s3)
    comp = [k for k in c2 if "lora_compressor" in k]
    assert comp and all(np.array_equal(np.array(c2[k]), np.array(c3[k])) for k in comp)
    assert any(
        not np.array_equal(np.array(c2[k]), np.array(c3[k])) for k in c2 if "lora_query" in k
    )
    with pytest.raises(ClaraError, match="--full is not available"):
        train(
            qa,
            _cfg(tmp_path / "s3f", stage="joint", max_steps=1, full=True),
            model=tiny_llama_dir,
            init_from=s2,
            dtype=None,
        )
