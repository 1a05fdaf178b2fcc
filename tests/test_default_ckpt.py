"""Packaging a trained checkpoint as the shipped default adapters (`training.default_ckpt`)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from clara.checkpoint import WEIGHTS_FILE, load_clara, save_checkpoint
from clara.model import ClaraConfig, ClaraModel
from training.default_ckpt import install

DOCS = ["The capital of France is Paris.", "The train leaves at seven and arrives at nine."]


def test_install_halves_the_size_and_keeps_what_matters(tiny_base, tiny_llama_dir, tmp_path):
    cm = ClaraModel(
        tiny_base, ClaraConfig(compression_rate=16, doc_max_tokens=32, center_memory=True)
    )
    updates = [  # a "trained" compressor and generator; the query adapter left untrained
        (k, 0.3 * mx.random.normal(v.shape, key=mx.random.key(i)))
        for i, (k, v) in enumerate(tree_flatten(cm.parameters()))
        if k.endswith(".b") and (".lora_compressor." in k or ".lora_generator." in k)
    ]
    cm.load_weights(updates, strict=False)
    cm.fit_memory_center(cm.tokenize(DOCS))
    src = save_checkpoint(cm, tmp_path / "trained")
    dst = install(src, tmp_path / "shipped")

    weights = mx.load(str(dst / WEIGHTS_FILE))
    assert weights["memory_center"].dtype == mx.float32
    assert all(v.dtype == mx.float16 for k, v in weights.items() if k != "memory_center")
    assert (dst / WEIGHTS_FILE).stat().st_size < (src / WEIGHTS_FILE).stat().st_size
    shipped = load_clara(tiny_llama_dir, dst, dtype=None)
    assert shipped.config.center_memory
    assert cm.config.default_mode == "memory" and shipped.config.default_mode == "mixed"
    np.testing.assert_allclose(  # float16 adapters: the same memories to a small tolerance
        np.array(shipped.compress(DOCS)), np.array(cm.compress(DOCS)), atol=5e-2
    )
    # the untrained query adapter became the compressor: same weights, so the same vectors up
    # to float32 rounding (compression batches by length buckets, queries do not)
    np.testing.assert_allclose(
        np.array(shipped.encode_queries(DOCS)), np.array(shipped.compress(DOCS)), atol=2e-5
    )


def test_shipped_adapters_rank_dense_by_maxsim_and_read_mixed(tmp_path):
    """The shipped query adapter's retrieval re-scores the index's nearest chunks by MaxSim
    (held-out dense R@5 95.7 -> 97.3, BENCHMARKS.md) and clara-serve reads "mixed" with them
    unless told otherwise; their fingerprint is the one of the same files without these
    settings, so indexes built before they existed stay valid."""
    import json
    import shutil

    from clara.checkpoint import CONFIG_FILE, checkpoint_fingerprint, read_checkpoint_config
    from training.default_recipe import PACKAGED

    config = ClaraConfig.from_dict(read_checkpoint_config(PACKAGED)["clara"])
    assert config.dense_scoring == "maxsim" and config.dense_rerank == 100
    assert config.default_mode == "mixed"
    old = shutil.copytree(PACKAGED, tmp_path / "old")
    saved = json.loads((old / CONFIG_FILE).read_text())
    del saved["clara"]["dense_scoring"], saved["clara"]["default_mode"]
    (old / CONFIG_FILE).write_text(json.dumps(saved))
    assert checkpoint_fingerprint(PACKAGED) == checkpoint_fingerprint(old)


def test_clara_serve_reads_the_mode_its_checkpoint_names(tiny_base, tiny_llama_dir, tmp_path):
    import pytest

    from clara.checkpoint import default_reading_mode
    from clara.errors import ClaraError

    assert default_reading_mode("smollm2-135m", None) == "mixed"  # the shipped adapters
    assert default_reading_mode("smollm2-135m", "none") == "memory"  # fresh ones
    assert default_reading_mode(str(tiny_llama_dir), None) == "memory"
    assert default_reading_mode("smollm2-135m", None, "text") == "text"  # --mode wins
    assert default_reading_mode(str(tiny_llama_dir), str(tmp_path / "missing")) == "memory"
    cm = ClaraModel(tiny_base, ClaraConfig(default_mode="text"))
    assert (
        default_reading_mode(str(tiny_llama_dir), str(save_checkpoint(cm, tmp_path / "t")))
        == "text"
    )
    with pytest.raises(ClaraError, match="default mode 'summary' unknown"):
        ClaraConfig(default_mode="summary")
    with pytest.raises(ClaraError, match="'mixed' needs clara's own prompt layout"):
        ClaraConfig(default_mode="mixed", prompt_template="apple-qa")
