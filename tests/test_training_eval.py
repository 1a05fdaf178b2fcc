"""Evaluation metrics against hand-computed values, and `clara-eval` end to end (tiny model)."""

from __future__ import annotations

import hashlib
import json

import pytest

from training.data import write_jsonl
from training.eval_cli import main, markdown_table, read_collection
from training.evaluate import (
    Row,
    answer_scores,
    cover_match,
    exact_match,
    normalize_answer,
    token_f1,
)


def test_normalize_like_the_reference():
    assert normalize_answer("The  Eiffel-Tower, in Paris!") == "eiffeltower in paris"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theater") == "theater"  # articles only as whole words


def test_exact_match():
    assert exact_match("the Paris.", "paris") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0
    assert exact_match("True", "yes") == 1.0  # the reference's bool mapping


def test_token_f1_by_hand():
    # pred {new, york, city}, gold {new, york}: P = 2/3, R = 1 -> F1 = 0.8
    assert token_f1("New York City", "new york") == pytest.approx(0.8)
    # repeated tokens count with multiplicity: pred [a1 a1 b], gold [a1 b b]: common a1,b = 2
    # P = 2/3, R = 2/3 -> 2/3
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert token_f1("no", "yes") == 0.0
    assert token_f1("no idea", "paris") == 0.0


def test_cover_match():
    assert cover_match("It is in Paris, France.", "paris france") == 1.0
    assert cover_match("It is in Paris.", "paris france") == 0.0
    # a gold that normalises to nothing (an article and punctuation: the held-out "A (-)")
    # matched every prediction; it is compared in lower case, punctuation kept
    assert cover_match("anything", "A (-)") == 0.0 and cover_match("type A (-)", "A (-)") == 1.0
    assert exact_match("", "A (-)") == 0.0 and exact_match("a (-)", "A (-)") == 1.0
    assert cover_match("The answer is A (-).", "A (-)") == 1.0  # (punctuation is its own token)
    assert cover_match("A (+)", "A (-)") == 0.0


def test_best_over_gold_answers():
    s = answer_scores("NYC", ["New York City", "NYC"])
    assert s == {"em": 1.0, "f1": 1.0, "acc": 1.0}
    s = answer_scores("new york", ["New York City", "Boston"])
    assert s["em"] == 0.0 and s["f1"] == pytest.approx(0.8) and s["acc"] == 0.0


def test_markdown_table_has_recall_columns():
    rows = [
        Row("no retrieval", "none", n=2, em=0.5, f1=0.5, acc=0.5),
        Row(
            "CLaRa 16x",
            "clara",
            "runs/x/final",
            16,
            2,
            1.0,
            1.0,
            1.0,
            20.0,
            1.0,
            {"recall@1": 0.5, "precision@1": 0.5},
        ),
    ]
    table = markdown_table(rows)
    assert "| R@1 |" in table and "| CLaRa 16x | final | 100.0 | 100.0 | 100.0 | 50.0 |" in table


def test_read_collection(tmp_path):
    (tmp_path / "c.txt").write_text("doc one\n\ndoc two\n")
    assert read_collection(str(tmp_path / "c.txt")) == ["doc one", "doc two"]
    write_jsonl(tmp_path / "c.jsonl", [{"text": "a"}, {"docs": ["b", "c"]}])
    assert read_collection(str(tmp_path / "c.jsonl")) == ["a", "b", "c"]


DOCS = [
    "The capital of France is Paris.",
    "The train leaves the station at seven.",
    "Water boils at one hundred degrees.",
]


@pytest.fixture(scope="module")
def trained(tiny_llama_dir, tmp_path_factory):
    from clara.model import ClaraConfig
    from training.data import QARecord
    from training.pipeline import train
    from training.trainer import TrainConfig

    out = tmp_path_factory.mktemp("evalrun")
    qa = [
        QARecord("What is the capital of France?", DOCS, ["Paris"], [0]),
        QARecord("When does the train leave?", DOCS[::-1], ["seven"], [1]),
    ]
    cfg = TrainConfig(
        stage="instruct", out=str(out / "s2"), lr=1e-3, max_steps=2, batch_size=2, quiet=True
    )
    final = train(
        qa,
        cfg,
        model=tiny_llama_dir,
        dtype=None,
        clara_config=ClaraConfig(compression_rate=16, doc_max_tokens=32, lora_rank=4),
    )
    data = out / "test.jsonl"
    write_jsonl(
        data,
        [
            {
                "question": r.question,
                "docs": r.docs,
                "answer": r.answers[0],
                "pos_index": r.pos_index,
            }
            for r in qa
        ],
    )
    return final, data


@pytest.mark.parametrize("mode", ["candidates", "collection", "gold"])
def test_eval_cli_rows(trained, tiny_llama_dir, tmp_path, capsys, mode):
    final, data = trained
    chart = tmp_path / "chart.png"
    preds = tmp_path / "preds.jsonl"
    code = main(
        [
            "--data",
            str(data),
            "--checkpoint",
            str(final),
            "--model",
            str(tiny_llama_dir),
            "--dtype",
            "stored",
            "--retrieval",
            mode,
            "--max-tokens",
            "4",
            "--json",
            "-q",
            "--chart",
            str(chart),
            "--predictions",
            str(preds),
            "--generator-only",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["rows"]
    assert [r["method"] for r in rows] == ["none", "text", "clara", "mixed", "clara-none"]
    # what it was made of (a researcher's audit: two results could not be told apart)
    run = result["run"]
    assert run["data"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert run["questions"] == 2 and run["retrieval"] == mode and run["max_tokens"] == 4
    adapters = (final / "adapters.safetensors").read_bytes()
    assert run["checkpoints"] == [{"checkpoint": str(final.resolve()),
                                   "adapters_sha256": hashlib.sha256(adapters).hexdigest()}]  # fmt: skip
    assert run["clara"] and run["date"] and "BLAS" in run["cpu"]
    assert all(r["n"] == 2 and 0 <= r["em"] <= 1 for r in rows)
    clara, mixed = rows[2], rows[3]
    assert mixed["name"] == "mixed: best as text" and mixed["retrieval"] == clara["retrieval"]
    assert mixed["positions"] > clara["positions"]  # the best document's text, not 16 slots
    assert clara["compression_rate"] == 16
    if mode == "gold":
        assert clara["retrieval"] == {}
        assert clara["positions"] < rows[1]["positions"] + 10
    else:
        assert set(clara["retrieval"]) >= {"recall@1", "recall@3", "precision@5"}
        assert clara["retrieval"]["recall@3"] == 1.0  # 3 docs: the gold one is always in
    assert chart.stat().st_size > 1000
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(lines) == 2 and "CLaRa 16x" in lines[0]


def test_a_stopped_eval_keeps_its_finished_rows(
    trained, tiny_llama_dir, tmp_path, capsys, monkeypatch
):
    """A CLI audit: Ctrl-C lost every finished row (130, "interrupted", no predictions),
    though the README's exit table says what was finished is kept. Stopped at its last
    row (the text baseline; a stand-in for Ctrl-C there), the others are printed and their
    predictions written."""
    import training.evaluate

    final, data = trained

    def stop(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.evaluate, "text_rag_row", stop)
    preds = tmp_path / "preds.jsonl"
    argv = ["--data", str(data), "--checkpoint", str(final), "--model", str(tiny_llama_dir),
            "--dtype", "stored", "--max-tokens", "2", "--json", "-q", "--predictions", str(preds)]  # fmt: skip
    assert main(argv) == 130
    out, err = capsys.readouterr()
    assert [r["method"] for r in json.loads(out)["rows"]] == ["none", "clara", "mixed"]
    assert "stopped; the 3 finished rows:" in err
    first = json.loads(preds.read_text().splitlines()[0])
    assert {"CLaRa 16x", "mixed: best as text"} <= set(first)


def test_eval_cli_markdown_and_errors(trained, tiny_llama_dir, capsys, tmp_path):
    final, data = trained
    assert (
        main(
            [
                "--data",
                str(data),
                "--checkpoint",
                str(final),
                "--model",
                str(tiny_llama_dir),
                "--dtype",
                "stored",
                "--no-baselines",
                "--max-tokens",
                "2",
                "-q",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("| Method |") and "CLaRa 16x" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    assert main(["--data", str(bad), "--model", str(tiny_llama_dir), "-q"]) == 1
    assert "bad.jsonl:1: no answer" in capsys.readouterr().err
    for flag in ("--predictions", "--chart"):  # refused before minutes of answers, not after
        code = main(["--data", str(bad), flag, str(tmp_path / "no" / "where.out"), "-q"])
        assert code == 1 and f"{flag} {tmp_path}/no/where.out: no folder" in capsys.readouterr().err
    code = main(["--data", str(bad), "--chart", str(tmp_path / "chart.txt"), "-q"])  # (an audit:
    assert code == 1 and "name a .png, .svg or .pdf file" in capsys.readouterr().err  # after)
    for bad_value in (["--limit", "0"], ["--top-k", "0"], ["--max-tokens", "-1"]):
        with pytest.raises(SystemExit):
            main(["--data", str(bad), *bad_value])


@pytest.mark.parametrize("retrieval_mode", ["hybrid", "lexical"])
def test_eval_cli_index_mode(trained, tiny_llama_dir, tmp_path, capsys, retrieval_mode):
    import numpy as np

    from indexing.meta import ChunkRecord
    from indexing.store import Collection
    from training.pipeline import load_for_training

    final, data = trained
    cm = load_for_training(tiny_llama_dir, final, dtype=None)
    mem = np.array(cm.compress(DOCS))
    root = tmp_path / "indexes"
    with Collection.open(root, "t", manifest=cm.manifest(), create=True) as col:
        col.add_document(
            None, "docs", "0" * 64, [ChunkRecord(d) for d in DOCS], mem, size=0, mtime=0.0
        )
    code = main(
        [
            "--data",
            str(data),
            "--checkpoint",
            str(final),
            "--model",
            str(tiny_llama_dir),
            "--dtype",
            "stored",
            "--retrieval",
            "index",
            "--index",
            "t",
            "--index-root",
            str(root),
            "--max-tokens",
            "2",
            "--json",
            "-q",
            "--no-baselines",
            "--retrieval-mode",
            retrieval_mode,
        ]
    )
    assert code == 0
    row, mixed = json.loads(capsys.readouterr().out)["rows"]
    assert row["retrieval"]["recall@3"] == 1.0  # three documents: every mode finds them all
    assert mixed["method"] == "mixed" and mixed["retrieval"] == row["retrieval"]


def test_eval_on_an_index_of_other_adapters_says_how_to_recompress(
    trained, tiny_llama_dir, tmp_path, capsys
):
    """clara-eval called the index's adapters "the default adapters of an earlier clara", and
    its recompress command left out the checkpoint evaluated (so it rebuilt the same index)."""
    from clara.checkpoint import load_clara
    from indexing.store import Collection

    final, data = trained
    other = load_clara(tiny_llama_dir, "fresh", dtype=None)  # not what `final` compresses with
    root = tmp_path / "indexes"
    Collection.open(root, "t", manifest=dict(other.manifest()), create=True).close()
    code = main(["--data", str(data), "--checkpoint", str(final), "--model", str(tiny_llama_dir),
                 "--dtype", "stored", "--retrieval", "index", "--index", "t", "--index-root",
                 str(root), "--max-tokens", "2", "-q", "--no-baselines"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and f"--checkpoint {final.resolve()}" in err, err
    assert "earlier clara" not in err


def test_recall_counts_every_question_with_a_gold_document(
    trained, tiny_llama_dir, tmp_path, capsys
):
    """An evaluation audit: a question whose gold document was not retrieved (or not in the
    collection) left Recall@k's denominator, so R@5 was 100% by construction; a collection
    file whose lines join the documents' line breaks (the default recipe's) matched no gold."""
    import numpy as np

    from indexing.meta import ChunkRecord
    from indexing.store import Collection
    from training.pipeline import load_for_training

    final, data = trained
    cm = load_for_training(tiny_llama_dir, final, dtype=None)
    others = [d for d in DOCS if d != DOCS[0]]  # the first question's gold is not indexed
    root = tmp_path / "indexes"
    with Collection.open(root, "t", manifest=cm.manifest(), create=True) as col:
        col.add_document(None, "docs", "0" * 64, [ChunkRecord(d) for d in others],
                         np.array(cm.compress(others)), size=0, mtime=0.0)  # fmt: skip
    common = ["--data", str(data), "--checkpoint", str(final), "--model", str(tiny_llama_dir),
              "--dtype", "stored", "--max-tokens", "1", "--json", "-q", "--no-baselines"]  # fmt: skip
    assert main([*common, "--retrieval", "index", "--index", "t", "--index-root", str(root),
                 "--retrieval-mode", "lexical"]) == 0  # fmt: skip
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["retrieval"]["recall@5"] == 0.5  # one of two questions can be found

    joined = tmp_path / "collection.txt"  # as the default recipe writes it
    joined.write_text("\n".join("  ".join(d.split()) for d in DOCS) + "\n")  # (spaced)
    assert main([*common, "--retrieval", "collection", "--collection", str(joined)]) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["retrieval"]["recall@5"] == 1.0  # (there was no Recall@k at all)


def test_eval_ranks_as_the_index_does_and_refuses_an_unused_retrieval_mode(
    trained, tiny_llama_dir, capsys, monkeypatch
):
    """An evaluation audit: clara-eval ranked by the flattened cosine while the index
    re-scores the shipped adapters' nearest by MaxSim, and took --retrieval-mode outside
    --retrieval index and ignored it."""
    from clara import retrieval
    from clara.model import ClaraConfig
    from training import evaluate

    final, data = trained
    common = ["--data", str(data), "--checkpoint", str(final), "--model", str(tiny_llama_dir),
              "--dtype", "stored", "--max-tokens", "1", "--json", "-q", "--no-baselines"]  # fmt: skip
    assert main([*common, "--retrieval", "collection", "--retrieval-mode", "dense"]) == 1
    assert "applies to --retrieval index only" in capsys.readouterr().err
    # the same for the other options one kind of retrieval reads, and outputs that cannot be
    # written are refused before the answers (a folder as --predictions lost them all)
    for extra, said in (
        (["--collection", str(data)], "--collection applies to --retrieval collection only"),
        (["--index", "notes"], "--index applies to --retrieval index only"),
        (["--predictions", str(data.parent)], "is a folder: name a file in it"),
    ):
        assert main([*common, "--retrieval", "candidates", *extra]) == 1
        assert said in capsys.readouterr().err
    scored = []
    real = retrieval.maxsim_numpy

    def counting(q, d, *a, **k):
        scored.append(len(d))
        return real(q, d, *a, **k)

    monkeypatch.setattr(evaluate, "maxsim_numpy", counting)
    monkeypatch.setattr(ClaraConfig, "dense_rerank", property(lambda self: 100))
    assert main([*common, "--retrieval", "candidates"]) == 0
    assert scored == [3, 3]  # each question's three candidates, by MaxSim
    monkeypatch.setattr(retrieval, "maxsim_numpy", counting)  # (maxsim_rerank's)
    assert main([*common, "--retrieval", "collection"]) == 0
    assert scored[2:] == [3, 3]  # the collection's nearest three, re-scored for each question
    import mlx.core as mx  # numpy takes no bfloat16 buffer: a bfloat16 model crashed it (a review)

    assert evaluate._float32(mx.ones((2, 3), dtype=mx.bfloat16)).dtype == "float32"


def test_every_checkpoint_is_read_before_any_answer(
    trained, tiny_llama_dir, tmp_path, capsys, monkeypatch
):
    """An evaluation audit: a second --checkpoint that was no checkpoint failed once the
    first one's rows were done, and threw them away; 'default' (the shipped adapters, as the
    other commands name them) was "no such checkpoint folder"."""
    from clara.checkpoint import DEFAULT_CHECKPOINT
    from training import eval_cli

    final, data = trained
    common = ["--data", str(data), "--model", str(tiny_llama_dir), "--dtype", "stored",
              "--max-tokens", "1", "--json", "-q", "--no-baselines"]  # fmt: skip
    answered = []
    monkeypatch.setattr(eval_cli, "_rows", lambda *a, **k: answered.append(1))
    code = main([*common, "--checkpoint", str(final), "--checkpoint", str(tmp_path)])
    assert code == 1 and not answered  # refused before any answer
    assert str(tmp_path) in capsys.readouterr().err
    args = eval_cli.build_parser().parse_args([*common, "--checkpoint", "default"])
    eval_cli.evaluate(args)
    assert args.checkpoint == [str(DEFAULT_CHECKPOINT)] and answered == [1]
    main([*common, "--checkpoint", "none"])  # untrained adapters: it gets to the answers
    assert answered == [1, 1] and "no such checkpoint" not in capsys.readouterr().err


def test_limit_spreads_its_questions_over_the_file(trained, tiny_llama_dir, capsys, tmp_path):
    """--limit 8 on a file grouped by document evaluated 8 questions of one document (a
    researcher's audit): the questions are spread over the file."""
    _, data = trained
    first = json.loads(data.read_text().splitlines()[0])
    many = tmp_path / "many.jsonl"
    many.write_text(
        "\n".join(json.dumps({**first, "question": f"Question {i}?"}) for i in range(6))
    )
    preds = tmp_path / "preds.jsonl"
    argv = ["--data", str(many), "--model", str(tiny_llama_dir), "--dtype", "stored", "--limit",
            "3", "--max-tokens", "1", "--json", "-q", "--predictions", str(preds)]  # fmt: skip
    assert main(argv) == 0
    asked = [json.loads(x)["question"] for x in preds.read_text().splitlines()]
    assert asked == ["Question 0?", "Question 2?", "Question 4?"]
    assert json.loads(capsys.readouterr().out)["run"]["limit"] == 3
