"""What a benchmark report says of the runs it merges: `bench/bench_heldout.py --report DIR`
appended only its own command (the merging step), so about 25 held-out sections did not say
how their figures were made (an evaluation audit)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_merged_report_names_each_run_as_it_was_made(tmp_path, monkeypatch) -> None:
    sys.path.insert(0, str(ROOT))
    import clara  # noqa: F401  (the BLAS path before mlx loads)
    from bench import _common, bench_heldout

    monkeypatch.setattr(sys, "argv", ["bench_heldout.py", "--checkpoint", "default", "--tag", "a"])
    made = _common.run_record()
    assert made["command"].endswith("bench_heldout.py --checkpoint default --tag a")
    assert made["date"].endswith("UTC") and made["machine"] and made["commit"]
    result = {"tag": "a", "checkpoint": "default", "questions": 200, "collection": 1000,
              "retrieval": {"bm25": {"recall@1": 0.9, "recall@3": 0.95, "recall@5": 0.97}},
              "run": made}  # fmt: skip
    (tmp_path / "a.retrieval").write_text(json.dumps(result))
    old = {**result, "tag": "old"}
    del old["run"]
    (tmp_path / "old.retrieval").write_text(json.dumps(old))
    appended = []
    monkeypatch.setattr(bench_heldout, "append_report", lambda title, body: appended.append(body))
    bench_heldout.report(tmp_path)
    (body,) = appended
    assert f"- a: `{made['command']}` at {made['commit']}, {made['date']}" in body
    assert "- old: made before runs recorded how" in body


def test_kept_memories_are_not_read_back_for_another_base_model(tmp_path, tiny_llama_dir) -> None:
    """bench_heldout keeps a collection's memories under a digest of what compression reads.
    The digest held only the compressor's weights, so a checkpoint loaded over another base
    model of the same shape read back the first model's memories."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    import clara  # noqa: F401  (the BLAS path before mlx loads)
    from bench import bench_heldout
    from clara.loader import load_base
    from clara.model import ClaraConfig, ClaraModel

    docs = ["The mill stands by the river.", "Paris is the capital of France."]
    first = ClaraModel(load_base(tiny_llama_dir, dtype=None), ClaraConfig(doc_max_tokens=64))
    mem = bench_heldout.compressed(first, docs, tmp_path)
    again = bench_heldout.compressed(first, docs, tmp_path)
    assert len(list(tmp_path.glob("memory-*.npy"))) == 1 and np.array_equal(mem, again)
    base = load_base(tiny_llama_dir, dtype=None)  # another base model of the same shape
    mlp = base.model.model.layers[0].mlp.down_proj
    mlp.weight = mlp.weight * 3 + 0.5
    other = ClaraModel(base, ClaraConfig(doc_max_tokens=64))
    other.mem_embeddings = first.mem_embeddings  # as a trained checkpoint's, loaded on both
    other.enc_embedding = first.enc_embedding
    got = bench_heldout.compressed(other, docs, tmp_path)
    assert np.allclose(got, other.compress(docs), atol=1e-5)
    assert not np.allclose(got, mem, atol=1e-3)
    assert len(list(tmp_path.glob("memory-*.npy"))) == 2
