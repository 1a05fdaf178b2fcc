"""Data parallel training over `mx.distributed` (ring backend, 2 ranks on localhost)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

WORKER = Path(__file__).with_name("ddp_worker.py")
LAUNCH = Path(sys.executable).with_name("mlx.launch")


@pytest.mark.skipif(not LAUNCH.exists() and not shutil.which("mlx.launch"), reason="no mlx.launch")
def test_two_ranks_match_one_process_with_the_doubled_batch(tiny_llama_dir, tmp_path):
    # float32 products (no AMX tiles): the ranks' average must match one process to rounding
    env = {**os.environ, "PYTHONPATH": str(WORKER.parents[1]), "CLARA_AMX": "off"}
    launch = str(LAUNCH) if LAUNCH.exists() else "mlx.launch"
    # one process first: see the note in the next test
    single = subprocess.run(
        [sys.executable, str(WORKER), "--model", str(tiny_llama_dir), "--out",
         str(tmp_path / "one"), "--batch-size", "4"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    for _ in range(2):  # a random port can be taken: once in CI, the launch wrote nothing
        port = random.randint(20000, 32000)  # (below the ephemeral range)
        ddp = subprocess.run(
            [launch, "-n", "2", "--backend", "ring", "--starting-port", str(port), sys.executable,
             str(WORKER), "--model", str(tiny_llama_dir), "--out", str(tmp_path / "ddp"),
             "--batch-size", "2"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        wrote = all((tmp_path / "ddp" / f"rank{r}.safetensors").exists() for r in (0, 1))
        if ddp.returncode == 0 and wrote:
            break
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert wrote, f"the ranks wrote no weights:\n{ddp.stdout[-2000:]}\n{ddp.stderr[-2000:]}"
    r0 = mx.load(str(tmp_path / "ddp" / "rank0.safetensors"))
    r1 = mx.load(str(tmp_path / "ddp" / "rank1.safetensors"))
    one = mx.load(str(tmp_path / "one" / "rank0.safetensors"))
    moved = 0
    for k in r0:
        a, b, c = np.array(r0[k]), np.array(r1[k]), np.array(one[k])
        np.testing.assert_array_equal(a, b, err_msg=f"ranks diverged at {k}")
        # float rounding differs between batch shapes and Adam can amplify it on near-zero
        # gradients; a wrong average would be off by ~lr (3e-3) per step
        np.testing.assert_allclose(a, c, rtol=1e-3, atol=1e-4, err_msg=k)
        moved += ".lora_generator.b" in k and float(np.abs(a).max()) > 0
    assert moved, "training changed the generator"
    # only rank 0 writes the run directory
    assert (tmp_path / "ddp" / "final" / "adapters.safetensors").exists()
    metrics = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 3


def test_clara_train_ranks_runs_two_processes_without_a_launcher(tiny_llama_dir, tmp_path):
    """`clara-train --ranks 2` (training/launch.py): two ring-backend ranks started by
    clara-train itself train what one process does with the doubled batch; rank 0 writes."""
    from training.data import write_jsonl

    docs = [f"Document {i}: the river {i} runs past mill {i} near town {i}." for i in range(8)]
    data = tmp_path / "s1.jsonl"
    write_jsonl(data, [{"data_type": "paraphrase", "docs": [d]} for d in docs])
    # float32 products (no AMX tiles): the ranks' average must match one process to rounding
    env = {**os.environ, "PYTHONPATH": str(WORKER.parents[1]), "CLARA_AMX": "off"}

    def train(out, *extra):
        return subprocess.run(
            [sys.executable, "-m", "training.cli", "pretrain", "--model", str(tiny_llama_dir),
             "--dtype", "float32", "--data", str(data), "--out", str(tmp_path / out),
             "--max-steps", "3", "--doc-max-tokens", "32", "--lora-rank", "4", "--lora-dropout",
             "0", "--lr", "3e-3", "--no-length-buckets", "--log-every", "1", "-q", *extra],
            env=env, capture_output=True, text=True, timeout=300, cwd=WORKER.parents[1],
        )  # fmt: skip

    # one process first: it fills MLX's compiled-kernel cache, which two ranks compiling the
    # same new kernel at once could each read half-written
    one = train("one", "--batch-size", "4")
    assert one.returncode == 0, one.stderr[-2000:]
    two = train("two", "--ranks", "2", "--batch-size", "2")
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.strip().splitlines() == [str(tmp_path / "two" / "final")]  # rank 0 only
    a = mx.load(str(tmp_path / "two" / "final" / "adapters.safetensors"))
    b = mx.load(str(tmp_path / "one" / "final" / "adapters.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(np.array(a[k]), np.array(b[k]), rtol=1e-3, atol=1e-4, err_msg=k)
    rows = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3
