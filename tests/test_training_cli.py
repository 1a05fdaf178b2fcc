"""`clara-train`: help texts, a short run through `main`, resume, and `synth` data building."""

from __future__ import annotations

import json
import shutil
import time

import httpx
import pytest

from training.cli import PROG, build_parser, main
from training.data import read_pretrain, read_qa, write_jsonl
from training.synth import (
    grounded,
    openai_teacher,
    parse_qa_pairs,
    synthesize,
    tfidf_neighbours,
)

DOCS = [
    "The river runs past the old mill and under the stone bridge.",
    "The capital of France is Paris, a city on the Seine.",
    "The train leaves the station at seven and arrives at nine.",
]


@pytest.mark.parametrize("cmd", ["pretrain", "instruct", "joint", "synth"])
def test_help_for_every_subcommand(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--out" in out and (cmd == "synth" or "--resume" in out)


def test_parser_lists_subcommands():
    text = build_parser().format_help()
    for cmd in ("pretrain", "instruct", "joint", "synth"):
        assert cmd in text


def test_pretrain_and_resume_via_main(tiny_llama_dir, tmp_path, capsys):
    data = tmp_path / "s1.jsonl"
    write_jsonl(data, [{"data_type": "paraphrase", "docs": [d]} for d in DOCS])
    args = [
        "pretrain",
        "--model",
        str(tiny_llama_dir),
        "--dtype",
        "stored",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "4",
        "--batch-size",
        "2",
        "--doc-max-tokens",
        "32",
        "--lora-rank",
        "4",
        "-q",
        "--log-every",
        "1",
    ]
    assert main([*args, "--stop-after", "2"]) == 0
    assert main([*args, "--resume"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].endswith("final")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    elapsed = [r["elapsed_s"] for r in rows]
    assert elapsed == sorted(elapsed)  # the resumed run's clock goes on from step 2's
    from training.trainer import STATE_FILE

    state = json.loads((tmp_path / "run" / "final" / STATE_FILE).read_text())
    assert state["config"]["pass_size"] == 1  # a CPU's default: one example per pass


def test_a_resumed_run_counts_the_seconds_after_the_last_logged_row(tiny_llama_dir, tmp_path):
    """Before: the clock went on from the last row of metrics.jsonl, not from the checkpoint
    (with --log-every 3 and a stop at step 2: from 0, the first two steps not counted)."""
    from training.trainer import STATE_FILE

    out = tmp_path / "run"
    args = [*_pretrain_args(tiny_llama_dir, tmp_path, out), "--max-steps", "4"]
    args[args.index("--log-every") + 1] = "3"
    assert main([*args, "--stop-after", "2"]) == 0
    saved = json.loads((out / "step-000002" / STATE_FILE).read_text())["elapsed_s"]
    assert saved > 0 and not (out / "metrics.jsonl").exists()  # nothing logged yet
    assert main([*args, "--resume"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 4] and rows[0]["elapsed_s"] > saved


def test_one_run_at_a_time_into_an_out_folder(tiny_llama_dir, tmp_path, capsys):
    """Two runs into one --out (or a --resume beside the run it resumes) interleaved their
    checkpoints and metrics rows without a word."""
    from tests.test_server_harness import lock_held_elsewhere

    out = tmp_path / "run"
    out.mkdir()
    with lock_held_elsewhere(out):  # (a run training into it)
        args = [*_pretrain_args(tiny_llama_dir, tmp_path, out), "--max-steps", "2"]
        capsys.readouterr()
        assert main(args) == 75
        assert f"--out {out} is being written by pid" in capsys.readouterr().err
        assert main([*args, "--resume"]) == 75
    assert main(args) == 0  # free again
    capsys.readouterr()
    assert main([*args, "--resume", "--max-steps", "3", "--lora-rank", "8"]) == 1  # (other steps)
    err = capsys.readouterr().err
    assert "--lora-rank ignored: the checkpoint it starts from brings its own" in err
    assert "to train on, start a run from it: --init-from" in err
    (tmp_path / "afile").write_text("")
    assert main([*args[:-2], "--out", str(tmp_path / "afile"), "--max-steps", "2"]) == 1
    assert "is a file: give a folder" in capsys.readouterr().err
    fresh = tmp_path / "fresh"  # a run that fails before writing leaves no folder (a CLI audit:
    bad = [*args[:-2], "--out", str(fresh), "--data", str(tmp_path / "none.jsonl")]  # a lock)
    assert main(bad) == 1 and not fresh.exists()


def test_center_memory_is_fitted_once_and_kept_by_later_stages(tiny_llama_dir, tmp_path, capsys):
    from clara.checkpoint import load_clara

    s1, s3 = tmp_path / "s1.jsonl", tmp_path / "s3.jsonl"
    write_jsonl(s1, [{"data_type": "paraphrase", "docs": [d]} for d in DOCS])
    write_jsonl(s3, [{"question": "Where is Paris?", "docs": DOCS, "answer": "France",
                      "pos_index": [1]}])  # fmt: skip
    common = ["--model", str(tiny_llama_dir), "--dtype", "stored", "--max-steps", "2",
              "--batch-size", "2", "--doc-max-tokens", "32", "--lora-rank", "4", "-q"]  # fmt: skip
    out1, out3 = tmp_path / "s1", tmp_path / "s3"
    assert (
        main(["pretrain", *common, "--data", str(s1), "--out", str(out1), "--center-memory"]) == 0
    )
    cm = load_clara(tiny_llama_dir, out1 / "final", dtype=None)
    assert cm.config.center_memory and cm.memory_centered
    center = cm.memory_center
    assert main(["joint", *common, "--data", str(s3), "--out", str(out3),
                 "--init-from", str(out1 / "final"), "--top-k", "2"]) == 0  # fmt: skip
    cm3 = load_clara(tiny_llama_dir, out3 / "final", dtype=None)
    assert cm3.config.center_memory and bool((cm3.memory_center == center).all())
    assert "one candidate document" not in capsys.readouterr().err
    alone = tmp_path / "alone.jsonl"  # a question with its own document only: nothing to rank
    write_jsonl(alone, [{"question": "Where is Paris?", "docs": DOCS[1:2], "answer": "France",
                         "pos_index": [0]}])  # fmt: skip
    assert main(["joint", *common, "--data", str(alone), "--out", str(tmp_path / "alone"),
                 "--init-from", str(out1 / "final"), "--top-k", "2"]) == 0  # fmt: skip
    assert "1 of 1 questions have one candidate document" in capsys.readouterr().err
    code = main(["joint", *common, "--data", str(s3), "--out", str(tmp_path / "x"),
                 "--center-memory", "--top-k", "2"])  # fmt: skip
    assert code == 1 and "start with the pretrain or instruct stage" in capsys.readouterr().err


def test_bad_data_is_one_line_error(tiny_llama_dir, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"question": "q", "docs": ["d"]}\n')
    code = main(
        [
            "instruct",
            "--model",
            str(tiny_llama_dir),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "clara-train: error:" in err and "bad.jsonl:1: no answer" in err


def test_parse_qa_pairs():
    text = "1. Q: Who wrote it?\nA: The committee.\n\nQuestion: When?\nAnswer: In 1902\nnoise"
    assert parse_qa_pairs(text) == [("Who wrote it?", "The committee."), ("When?", "In 1902")]
    assert parse_qa_pairs(text, limit=1) == [("Who wrote it?", "The committee.")]
    assert parse_qa_pairs("no pairs here") == []
    # a small local teacher's habits: numbering inside the question, a question as answer
    sloppy = "Q: 1. What is Atlas?\nA: 2. How does Atlas run?\nQ: 3. Who runs Atlas?\nA: 4. Ann."
    assert parse_qa_pairs(sloppy) == [("Who runs Atlas?", "Ann.")]


def test_answers_the_chunk_does_not_support_are_dropped():
    chunk = "The backup server Atlas runs Debian 12 and starts its jobs at 02:30 UTC."
    assert grounded("Debian 12", chunk) and grounded("at 02:30 UTC", chunk)
    assert not grounded("A community event where members learn from one another.", chunk)
    teacher = lambda doc, n: "Q: Which OS?\nA: Debian 12\nQ: Why?\nA: Because chess is fun."  # noqa: E731
    stage1, stage2 = synthesize([chunk], teacher, questions_per_chunk=2, candidates=1)
    assert stage1[1].answers == ["Debian 12"] and [r.question for r in stage2] == ["Which OS?"]


def test_tfidf_neighbours_put_the_matching_doc_first():
    near = tfidf_neighbours(["what is the capital of france", "when does the train leave"], DOCS, 2)
    assert near[0][0] == 1 and near[1][0] == 2


def test_synthesize_with_a_fake_teacher():
    def teacher(doc: str, n: int) -> str:
        word = doc.split()[1]
        return f"Q: Which thing is described?\nA: {word}\nQ: Anything else?\nA: no"

    stage1, stage2 = synthesize(DOCS, teacher, questions_per_chunk=1, candidates=2)
    assert [r.kind for r in stage1] == ["paraphrase"] * 3 + ["qa"] * 3
    assert stage1[3].questions == ["Which thing is described?"] and stage1[3].answers == ["river"]
    assert len(stage2) == 3
    for i, r in enumerate(stage2):
        assert len(r.docs) == 2 and r.docs[r.pos_index[0]] == DOCS[i]


def test_openai_teacher_posts_chat_completions():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["body"] = json.loads(request.content)
        seen["auth"] = request.headers.get("authorization")
        reply = {"choices": [{"message": {"role": "assistant", "content": "Q: a?\nA: b"}}]}
        return httpx.Response(200, json=reply)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    ask = openai_teacher("http://teacher:8000", "big-model", "sk-x", client=client)
    assert ask("A document.", 2) == "Q: a?\nA: b"
    assert seen["url"] == "http://teacher:8000/v1/chat/completions"
    assert seen["body"]["model"] == "big-model" and seen["auth"] == "Bearer sk-x"
    assert "A document." in seen["body"]["messages"][1]["content"]


def _teacher_endpoint() -> str:
    """An OpenAI-compatible chat endpoint on a local port (a daemon thread) that answers each
    document with one question about its second word: the teacher a user points synth at,
    reached over real HTTP by the real client (a test-suite audit: the client was replaced)."""
    import http.server
    import threading

    class Teacher(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/chat/completions" and body["model"] == "m"
            doc = body["messages"][1]["content"].split("\n\nWrite ")[0].removeprefix("Document:\n")
            answer = f"Q: What is this about?\nA: {doc.split()[1]}"
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data.encode())

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Teacher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_synth_cli_with_an_endpoint(tiny_llama_dir, tmp_path, capsys):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, d in enumerate(DOCS):
        (folder / f"d{i}.txt").write_text(d + "\n")

    teacher = _teacher_endpoint()  # a real HTTP endpoint the real openai_teacher asks
    code = main(
        [
            "synth",
            str(folder),
            "--out",
            str(tmp_path / "data"),
            "--model",
            str(tiny_llama_dir),
            "--dtype",
            "stored",
            "--teacher-url",
            teacher,
            "--teacher-model",
            "m",
            "--candidates",
            "2",
            "-q",
        ]
    )
    assert code == 0
    s1 = read_pretrain(tmp_path / "data" / "stage1.jsonl")
    s2 = read_qa(tmp_path / "data" / "stage2.jsonl")
    assert sum(r.kind == "paraphrase" for r in s1) == 3 and len(s2) == 3
    assert "fewer than --candidates" not in capsys.readouterr().err
    argv = ["synth", str(folder), "--out", str(tmp_path / "data"), "--model", str(tiny_llama_dir),
            "--teacher-url", teacher, "--teacher-model", "m", "--candidates", "5", "-q", "--force"]  # fmt: skip
    assert main(argv) == 0  # three chunks in all: a question gets three candidates at most
    assert "3 of 3 questions have fewer than --candidates 5" in capsys.readouterr().err
    alone = [a for a in argv if a != teacher and a != "--teacher-url"]  # (a CLI audit: the
    assert main(alone) == 1  # model was ignored, and the local one asked for minutes)
    assert "--teacher-model needs --teacher-url" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option",
    [["--lr", "-1"], ["--clip", "-1"], ["--warmup", "5"], ["--lora-rank", "0"],
     ["--lora-dropout", "1.5"], ["--mse-weight", "-5"], ["--save-every", "-1"],
     ["--keep-last", "-1"], ["--stop-after", "0"], ["--pass-size", "0"],
     ["--min-lr-ratio", "2"], ["--doc-max-tokens", "0"]],
)  # fmt: skip
def test_option_values_that_break_training_are_refused(option, capsys, tmp_path):
    """Before: --lr -1 trained by gradient ascent, --clip -1 reversed the gradients, --lora-rank
    0 was a ZeroDivisionError traceback, --warmup 5 never reached the peak learning rate."""
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--data", "x.jsonl", "--out", str(tmp_path / "o"), *option])
    assert exc.value.code == 2
    assert f"argument {option[0]}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option", [["--tau", "0"], ["--retrieval-weight", "-1"], ["--lr", "inf"], ["--epochs", "inf"]]
)
def test_joint_options_that_break_training_are_refused(option, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["joint", "--data", "x.jsonl", "--out", str(tmp_path / "o"), *option])
    assert exc.value.code == 2 and f"argument {option[0]}" in capsys.readouterr().err


def _pretrain_args(tiny_llama_dir, tmp_path, out) -> list[str]:
    data = tmp_path / "s1.jsonl"
    write_jsonl(data, [{"data_type": "paraphrase", "docs": [d]} for d in DOCS])
    return ["pretrain", "--model", str(tiny_llama_dir), "--dtype", "stored", "--data", str(data),
            "--out", str(out), "--batch-size", "1", "--doc-max-tokens", "32", "--lora-rank", "4",
            "-q", "--log-every", "1"]  # fmt: skip


def test_a_diverging_run_stops_with_an_error_and_saves_nothing(tiny_llama_dir, tmp_path, capsys):
    """Before: a NaN loss trained on and wrote final/ full of NaN (exit 0), which clara-index
    then took, losing dense retrieval without a word."""
    out = tmp_path / "run"
    args = _pretrain_args(tiny_llama_dir, tmp_path, out)
    assert main([*args, "--max-steps", "6", "--lr", "1e30", "--clip", "0", "--warmup", "0"]) == 1
    err = capsys.readouterr().err
    assert "training diverged at step" in err and "into a new --out with a lower --lr" in err
    assert not (out / "final").exists()
    for line in (out / "metrics.jsonl").read_text().splitlines():  # strict JSON: no NaN
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))


def test_documents_longer_than_the_compressor_reads_are_named(tiny_llama_dir, tmp_path, capsys):
    """Before: data written by `synth --doc-max-tokens 512` trained a 256-token compressor
    without a word, its chunks cut in half."""
    out = tmp_path / "run"
    args = _pretrain_args(tiny_llama_dir, tmp_path, out)
    assert main([*args, "--max-steps", "1"]) == 0
    assert "longer than the compressor reads" not in capsys.readouterr().err  # all fit in 32
    long = " ".join(DOCS * 4)
    write_jsonl(
        tmp_path / "s1.jsonl", [{"data_type": "paraphrase", "docs": [d]} for d in [*DOCS, long]]
    )
    assert main([*args, "--max-steps", "1", "--out", str(tmp_path / "run2")]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 of 4 documents are longer than the compressor reads (32 tokens" in err
    assert "clara-train synth --doc-max-tokens 32" in err


def test_ranks_into_a_folder_with_a_run_fail_once_before_starting(tiny_llama_dir, tmp_path, capsys):
    """Before: each rank loaded the model, then both printed the error, run together on one
    line (the README's `--ranks 2` example after its `pretrain` one, into the same --out)."""
    out = tmp_path / "run"
    args = _pretrain_args(tiny_llama_dir, tmp_path, out)
    assert main([*args, "--max-steps", "1"]) == 0
    capsys.readouterr()
    start = time.perf_counter()
    assert main([*args, "--max-steps", "1", "--ranks", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("already holds a run") == 1 and err.endswith("\n"), err
    assert time.perf_counter() - start < 10  # no rank started (each loads the model first)


def _wait_for(path, proc, timeout: float = 120.0) -> None:
    """Until `path` exists; a run that ended or is still short of it is killed and its stderr
    shown (reading the stderr of a run still going would wait for good)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {path.name}: {proc.communicate()[1]}")
        time.sleep(0.05)


@pytest.mark.parametrize("ranks", [1, 2])
def test_sigterm_stops_a_run_and_its_ranks_and_says_how_to_resume(tiny_llama_dir, tmp_path, ranks):
    """Before: SIGTERM to `--ranks 2` ended the launcher alone; both ranks trained on into
    --out. A single process exited without saying where to resume from. Then (CI, 1 run in
    ~30): the KeyboardInterrupt raised inside matplotlib's first import or a checkpoint write
    exited 1 or by SIGINT, or was swallowed and the run trained on; now the run stops at the
    end of its step and keeps it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    args = _pretrain_args(tiny_llama_dir, tmp_path, out)
    args += ["--max-steps", "100000", "--save-every", "1", "--ranks", str(ranks)]
    proc = subprocess.Popen(  # SIGINT ignored, as for a job a script starts in the background
        [sys.executable, "-m", "training.cli", *args], stderr=subprocess.PIPE, text=True,
        cwd=os.getcwd(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    _wait_for(out / "step-000001", proc)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert "stopped; the last checkpoint is" in err and "--resume" in err
    rows = (out / "metrics.jsonl").read_text()
    last = json.loads(rows.splitlines()[-1])["step"]  # the step it was in finished and was kept
    assert f"checkpoint is {out / f'step-{last:06d}'}:" in err, (last, err)
    assert err.count(PROG) == 1, err  # one line, not one per rank nor a second "interrupted"
    time.sleep(1.5)  # no rank left training
    assert (out / "metrics.jsonl").read_text() == rows
    assert subprocess.run(["pgrep", "-f", str(out)], capture_output=True).stdout == b""
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # (main() in-process restores it)


def test_resume_refuses_data_regenerated_at_the_same_path(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = [*_pretrain_args(tiny_llama_dir, tmp_path, out), "--max-steps", "3"]
    assert main([*args, "--stop-after", "1"]) == 0
    write_jsonl(
        tmp_path / "s1.jsonl", [{"data_type": "paraphrase", "docs": [d]} for d in DOCS[::-1]]
    )
    capsys.readouterr()
    assert main([*args, "--resume"]) == 1
    assert "belongs to a run with other settings (data_sha256 " in capsys.readouterr().err
    args = _pretrain_args(tiny_llama_dir, tmp_path, out)  # (the data as it was)
    assert main([*args, "--max-steps", "3", "--resume", "--lr", "0.5"]) == 1
    assert "other settings (lr (its default) -> 0.5)" in capsys.readouterr().err  # not None
    # the same data at another path (a run and its data moved to another machine: an
    # air-gapped audit) resumes
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(tmp_path / "s1.jsonl", moved / "s1.jsonl")
    (tmp_path / "s1.jsonl").unlink()
    args[args.index("--data") + 1] = str(moved / "s1.jsonl")
    assert main([*args, "--max-steps", "3", "--resume"]) == 0, capsys.readouterr().err
    assert (out / "final").is_dir()


def test_ctrl_c_to_a_ranks_run_stops_every_process_after_one_step(tiny_llama_dir, tmp_path):
    """Ctrl-C in a terminal reaches the launcher and both ranks, and the launcher then sends
    its ranks SIGTERM: one request (a second signal a second later would stop at once). Before:
    three "interrupted" lines, run together with rank 0's."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    args = _pretrain_args(tiny_llama_dir, tmp_path, out)
    args += ["--max-steps", "100000", "--save-every", "3", "--ranks", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.cli", *args], stderr=subprocess.PIPE, text=True,
        cwd=os.getcwd(), start_new_session=True,
    )  # fmt: skip
    _wait_for(out / "step-000003", proc)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    line = (f"{PROG}: stopped; the last checkpoint is {out / f'step-{last:06d}'}: run the same "
            "command with --resume to go on from it")  # fmt: skip
    assert line in err.splitlines() and err.count(f"{PROG}:") == 1, err  # (a rank's warning
    # from a library may come too)
    assert subprocess.run(["pgrep", "-f", str(out)], capture_output=True).stdout == b""


def test_synth_keeps_an_earlier_runs_data_unless_forced(tmp_path, tiny_llama_dir) -> None:
    """`synth` wrote over the stage1/stage2.jsonl of an earlier run without a word (a
    teacher's questions can take hours to write again)."""
    folder, out = tmp_path / "docs", tmp_path / "data"
    folder.mkdir()
    (folder / "a.txt").write_text("The river Lune floods every March. " * 8)
    argv = ["synth", str(folder), "--out", str(out), "--model", str(tiny_llama_dir), "--no-qa"]
    argv += ["-q"]
    assert main(argv) == 0
    (out / "stage1.jsonl").write_text("kept\n")
    assert main(argv) == 1 and (out / "stage1.jsonl").read_text() == "kept\n"
    assert main([*argv, "--force"]) == 0 and "kept" not in (out / "stage1.jsonl").read_text()


def test_synth_refuses_a_file_as_out_before_reading(tmp_path, tiny_llama_dir, capsys) -> None:
    """An error audit: --out naming a file failed with "File exists" once every document
    was read (after a teacher's questions, hours); a skipped file was named twice."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("The river Lune floods every March. " * 8)
    (folder / "empty.md").write_text("")
    argv = ["synth", str(folder), "--model", str(tiny_llama_dir), "--no-qa", "-q"]
    assert main([*argv, "--out", str(folder / "a.txt")]) == 1
    err = capsys.readouterr().err
    assert "is a file: give a folder for the run" in err and "skipping" not in err
    assert main([*argv, "--out", str(tmp_path / "data")]) == 0
    err = capsys.readouterr().err
    assert err.count(str(folder / "empty.md")) == 1 and "1 of 2 files skipped" in err


def test_init_from_and_checkpoint_naming_two_folders_is_refused(tmp_path, capsys) -> None:
    """An error audit: `--init-from A --checkpoint B` trained from B, without a word."""
    argv = ["instruct", "--data", "d.jsonl", "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--init-from", "runs/a/final", "--checkpoint", "runs/b/final"])
    assert info.value.code == 2
    assert "name the same option: give one" in capsys.readouterr().err
