"""Shared fixtures: tiny random models built once per session, and an isolated CLARA_HOME."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import clara  # noqa: E402,F401  first: preloads OpenBLAS before anything imports mlx
from tests.tiny import TINY_HCX_EXTRAS, build_tiny_model, build_tiny_tokenizer  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a Mac (MLX on Metal) the `cpu_only` tests skip: they check what clara does on MLX's
    CPU backend only (its kernels, lanes, bit-exact batching)."""
    import mlx.core as mx

    if mx.default_device() == mx.cpu:
        return
    skip = pytest.mark.skip(
        reason=f"checks MLX's CPU backend; this machine runs on {mx.default_device()}"
    )
    for item in items:
        if "cpu_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~512-token byte-level BPE with ChatML tokens and template (HF tokenizer files only)."""
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tiny-tokenizer"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """float32 llama, hidden 64, 2 layers, 4 heads / 2 KV heads, UNTIED embeddings."""
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-llama"),
        "llama",
        tokenizer_dir=tiny_tokenizer_dir,
        tie_word_embeddings=False,
        seed=0,
    )


@pytest.fixture(scope="session")
def tiny_llama_q4_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """4-bit (group 32) llama with TIED embeddings, quantized by mlx-lm."""
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-llama-q4"),
        "llama",
        tokenizer_dir=tiny_tokenizer_dir,
        tie_word_embeddings=True,
        quantize=True,
        seed=1,
    )


@pytest.fixture(scope="session")
def tiny_hcx_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """float32 hyperclovax with `TINY_HCX_EXTRAS` (multipliers != 1, post norms, logits_scaling)."""
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-hcx"),
        "hyperclovax",
        tokenizer_dir=tiny_tokenizer_dir,
        tie_word_embeddings=True,
        extra_config=TINY_HCX_EXTRAS,
        seed=2,
    )


@pytest.fixture
def tiny_base(tiny_llama_dir: Path):
    """A fresh `BaseModel` of the tiny float32 llama (fresh per test: safe to add LoRA to)."""
    from clara.loader import load_base

    return load_base(tiny_llama_dir, dtype=None)


@pytest.fixture
def clara_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty CLARA_HOME for this test only (the real one keeps the cached default model)."""
    home = tmp_path / "clara-home"
    home.mkdir()
    monkeypatch.setenv("CLARA_HOME", str(home))
    return home
