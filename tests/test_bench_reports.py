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


def test_held_out_intervals_samples_and_merges_say_what_they_can(tmp_path, capsys) -> None:
    """A researcher's audit: cover-EM's normal interval read "0.0 ± 0.0" for 0 of 20 and went
    below 0 for 1 of 20; --questions 150 took the first 150 documents, not a spread; a report
    merged runs made with other settings under the first one's header, and always appended."""
    sys.path.insert(0, str(ROOT))
    import clara  # noqa: F401
    from bench import bench_heldout

    golds = [["paris"]] * 20
    none = {"acc": 0.0, "f1": 0.0, "predictions": ["rome"] * 20}
    assert bench_heldout.interval(none, golds, "acc") == "0.0 (0.0-16.1)"
    one = {"acc": 0.05, "f1": 0.05, "predictions": ["paris"] + ["rome"] * 19}
    assert bench_heldout.interval(one, golds, "acc") == "5.0 (0.9-23.6)"
    assert bench_heldout.interval(one, golds, "f1").startswith("5.0 (0.0-")
    rows = [
        {"question": [f"q{i}"], "answers": [f"a{i}"], "docs": [f"doc {i}"]} for i in range(1000)
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    recs, _ = bench_heldout.heldout(150, data)
    picked = [int(r.question[1:]) for r in recs]
    assert len(picked) == 150 and picked[-1] > 980 and all(i % 5 == 0 for i in picked)
    assert [int(r.question[1:]) for r in bench_heldout.heldout(20, data)[0]][:3] == [0, 50, 100]
    results = tmp_path / "results"
    results.mkdir()
    base = {"checkpoint": "default", "questions": 1686, "collection": 1000,
            "every_question": True,
            "retrieval": {"bm25": {"recall@1": 0.5, "recall@3": 0.6, "recall@5": 1650 / 1686}}}  # fmt: skip
    (results / "a.retrieval").write_text(json.dumps({**base, "tag": "a"}))
    bench_heldout.report(results, no_append=True)  # printed, with counts; nothing appended
    assert "97.9 (1650)" in capsys.readouterr().out
    (results / "b.retrieval").write_text(json.dumps({**base, "tag": "b", "questions": 200}))
    try:
        bench_heldout.report(results, no_append=True)
    except SystemExit as stop:
        assert "runs made with different questions" in str(stop)
    else:
        raise AssertionError("runs of other settings were merged")
