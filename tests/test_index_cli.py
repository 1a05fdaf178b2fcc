"""`clara-index` end to end with a tiny random model: add (folders, globs, bad files), incremental
re-runs, list/show/stats/search/remove/rebuild/collections with --json, checkpoint mismatch,
and kill -9 of a real `clara-index add` process at several points, then a re-run.

A fresh model's query and compressor adapters are equal, so a chunk's own text finds it with
cosine 1: that is what the search checks rely on.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest

from clara.retrieval import Fusion
from indexing import cli, commands
from indexing.store import Collection

REPO = Path(__file__).resolve().parents[1]
SENTENCES = [
    "The river runs past the old mill and under the stone bridge before it reaches the sea.",
    "In the spring the water is high and cold, and the fishermen wait for the salmon to return.",
    "A library is a quiet place where people read books, study maps and search for answers.",
    "Water boils at one hundred degrees Celsius at sea level and freezes at zero degrees.",
    "The cat sat on the mat while the dog slept by the fire in the small wooden house.",
    "She walked to the market on Monday, bought bread, apples, cheese and a bottle of milk.",
    "The train leaves the station at seven o'clock and arrives in the city two hours later.",
    "Scientists measure the temperature of the ocean to understand how the climate changes.",
]
CHUNKING = ["--chunk-tokens", "32", "--overlap", "4"]
N_GOOD = 10


def write_corpus(folder: Path, n: int = N_GOOD, paragraphs: int = 4) -> list[Path]:
    """n text files of a few paragraphs each (several 32-token chunks per file)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paras = [  # every sentence numbered: no two chunks have the same text
            " ".join(f"{i}.{j}.{k} {SENTENCES[(i + j + k) % len(SENTENCES)]}" for k in range(3))
            for j in range(paragraphs)
        ]
        path = folder / f"doc{i:02d}.txt"
        path.write_text("\n\n".join(paras))
        paths.append(path)
    return paths


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(args):
        raise AssertionError("this command must not load the model")

    monkeypatch.setattr(commands, "_load_model", refuse)


def docs_of(index: Path, collection: str = "default") -> dict[str, list[str]]:
    """file name -> its chunk texts in order."""
    with Collection.open(index, collection, readonly=True) as col:
        return {d.name: [c.text for c in col.document_chunks(d.id)] for d in col.list_documents()}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    write_corpus(folder)
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.md").write_text("# Notes\n\nThe museum opened in 1902.\n")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (folder / "empty.md").write_text("")
    shutil.copy(REPO / "tests/data/encrypted-aes128.pdf", folder / "locked.pdf")
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # skipped in a folder
    return folder


def test_a_file_named_like_an_option_gets_a_hint(capsys, tmp_path: Path, monkeypatch) -> None:
    """`clara-index add -notes.txt` said only that PATH is required."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-notes.txt").write_text("Notes.")
    with pytest.raises(SystemExit) as info:
        cli.main(["add", "-notes.txt"])
    assert info.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .endswith(
            "the following arguments are required: PATH ('-notes.txt' is a file taken for an "
            "option: write -- before file names, or ./-notes.txt)"
        )
    )


def test_an_empty_path_is_refused_not_read_as_here(capsys, tmp_path: Path, monkeypatch) -> None:
    """A CLI audit: `clara-index remove ""` (an unset "$DOC") removed the documents under the
    current folder, and `add ""` indexed it; out-of-range search options were tracebacks
    after the model loaded. All are exit 2 at once."""
    monkeypatch.chdir(tmp_path)
    for argv, said in (
        (["add", ""], "argument PATH: an empty path"),
        (["remove", "doc-1", " "], "argument DOC_ID_OR_PATH: an empty path"),
        (["search", "x", "-k", "99999999999"], "must be from 1 to 10000"),
        (["search", "x", "--fusion-k", "0"], "--fusion-k: 0: must be a number above 0"),
        (
            ["search", "x", "--dense-weight", "nan"],
            "--dense-weight: nan: must be a finite number, 0 or more",
        ),
        (["add", ".", "--overlap", "-1"], "--overlap: must be 0 or more, got -1"),
        # a subcommand's unknown option with that subcommand's usage (it was the top level's)
        (["add", "--colection", "x", "."], "clara-index add: error: unrecognized arguments"),
        (["add", ".", "--exclude", ""], "--exclude: an empty pattern"),
    ):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and said in err, (argv, err)
    # an overlap past the chunk size is refused before the model loads (an error audit: after)
    (tmp_path / "a.txt").write_text("A file to index.")
    rc, _, err = run(capsys, "add", "a.txt", "--chunk-tokens", "10", "--overlap", "20",
                     "--model", str(tmp_path / "no-model"))  # fmt: skip
    assert rc == 1 and "overlap 20 must be between 0 and the chunk size - 1 (9)" in err
    (tmp_path / "model.gguf").write_bytes(b"GGUF")  # a file as --model: not "not found"
    rc, _, err = run(capsys, "search", "x", "--model", "model.gguf")
    assert rc == 1 and "is a file: give the model's folder" in err and "clara-models convert" in err
    (tmp_path / "notes.txt").write_text("Notes.")  # a file as --index: said so, not "index
    for command in (["list"], ["collections"], ["add", "notes.txt"]):  # some documents first"
        rc, _, err = run(capsys, *command, "--index", "notes.txt")
        assert rc == 1 and "the index folder notes.txt is a file: give --index the folder" in err


def test_the_skipped_files_summary_names_each_kind(tmp_path: Path) -> None:
    """A documents audit: a dangling link was counted as "1 .txt" of a type clara does not
    read, and past six kinds the rest went unsaid (9 skipped, 6 listed)."""
    import os

    from indexing.commands import skipped_summary

    (tmp_path / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    os.mkfifo(tmp_path / "pipe.txt")
    names = ["a.py", "b.py", "c.json", "d.csv", "e.sh", "f.yaml", "g.toml", "h.ini", "Makefile"]
    for name in names:
        (tmp_path / name).write_text("x")
    summary = skipped_summary([tmp_path / n for n in ["gone.txt", "pipe.txt", *names]])
    assert summary.startswith("skipped 11 files in folders: 2 .py, 1 broken link, 1 not a ")
    assert summary.endswith(
        ", 4 of 4 other kinds (clara reads PDF, Word, OpenDocument text, EPUB, PowerPoint, Excel, "
        "Markdown, HTML and text)"
    )
    assert skipped_summary([tmp_path / "gone.txt"]) == "skipped 1 file in folders: 1 broken link"


def test_add_reports_each_bad_file_and_indexes_the_rest(
    capsys, tmp_path: Path, corpus: Path, tiny_llama_dir: Path
) -> None:
    index = tmp_path / "index"
    rc, out, err = run(
        capsys, "add", corpus, tmp_path / "missing.pdf", corpus / "photo.png",
        "--model", tiny_llama_dir, "--index", index, *CHUNKING,
    )  # fmt: skip
    assert rc == 3  # some files failed, the others are indexed (1: nothing could be)
    lines = err.strip().splitlines()
    assert lines.pop(0) == (  # the folder's photo.png (named explicitly too: refused below)
        "clara-index: skipped 1 file in folders: 1 .png (clara reads PDF, Word, OpenDocument "
        "text, EPUB, PowerPoint, Excel, Markdown, HTML and text); name one to read it as text "
        "or hear why it cannot be"
    )
    reasons = {
        "missing.pdf": "no such file",
        "photo.png": "unsupported file type (image)",
        "binary.txt": "binary file",
        "empty.md": "empty file",
        "locked.pdf": "encrypted PDF: give its password (clara-index add --password",
    }
    assert len(lines) == len(reasons), err
    for name, reason in reasons.items():
        assert any(name in line and reason in line for line in lines), (name, err)
    assert all(line.startswith("clara-index: ") for line in lines)
    docs = docs_of(index)
    assert set(docs) == {f"doc{i:02d}.txt" for i in range(N_GOOD)} | {"notes.md"}
    assert all(len(chunks) >= 3 for name, chunks in docs.items() if name != "notes.md")
    assert out.strip().splitlines()[-1].startswith(f"{N_GOOD + 1} added, 5 failed: ")

    # the password opens the encrypted PDF (see tests/test_readers.py)
    rc, out, _ = run(
        capsys, "add", corpus / "locked.pdf", "--password", "secret",
        "--model", tiny_llama_dir, "--index", index, "--json",
    )  # fmt: skip
    assert rc == 0 and json.loads(out)["added"] == 1, (out, _)


def test_a_file_name_that_is_not_utf8_is_indexed_like_any_other(
    capsys, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """A name from a Latin-1 disk ("café" as b"caf\\xe9") is stored, listed and matched on a
    re-run as "caf\\xe9": the files beside it are indexed, nothing crashes."""
    folder = tmp_path / "docs"
    write_corpus(folder, n=2)
    with open(os.fsencode(folder) + b"/caf\xe9 notes.txt", "w") as f:
        f.write(SENTENCES[0] + "\n\n" + SENTENCES[1])
    args = ("--model", tiny_llama_dir, "--index", tmp_path / "index", *CHUNKING)
    rc, out, err = run(capsys, "add", folder, *args)
    assert rc == 0, err
    assert "caf\\xe9 notes.txt" in out and out.strip().splitlines()[-1].startswith("3 added")
    assert set(docs_of(tmp_path / "index")) == {"doc00.txt", "doc01.txt", "caf\\xe9 notes.txt"}
    rc, out, err = run(capsys, "add", folder, *args)
    assert rc == 0 and out.strip().splitlines()[-1].startswith("0 added, 3 unchanged"), out
    rc, out, _ = run(capsys, "remove", folder / os.fsdecode(b"caf\xe9 notes.txt"), *args[2:4])
    assert rc == 0 and set(docs_of(tmp_path / "index")) == {"doc00.txt", "doc01.txt"}


def test_an_add_that_can_index_nothing_loads_no_model(capsys, monkeypatch, tmp_path: Path) -> None:
    folder, index = tmp_path / "docs", tmp_path / "index"
    folder.mkdir()
    (folder / "empty.md").write_text("")
    (folder / "blank.txt").write_text("  \n\n\t\n")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 8)
    no_model(monkeypatch)
    rc, out, err = run(capsys, "add", folder, "--index", index, "--json")
    report = json.loads(out)
    assert rc == 1 and report["failed"] == 3 and report["model_load_s"] == 0
    assert "empty file" in err and "only whitespace" in err and "binary" in err
    assert not (index / "default").exists()  # nothing created for nothing


def test_rerun_is_incremental_and_a_changed_file_replaces_its_chunks(
    capsys, monkeypatch, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    folder, index = tmp_path / "docs", tmp_path / "index"
    paths = write_corpus(folder, n=4)
    args = ["--model", tiny_llama_dir, "--index", index, *CHUNKING, "--json"]
    rc, out, _ = run(capsys, "add", folder, *args)
    assert rc == 0 and json.loads(out)["added"] == 4
    before = docs_of(index)

    with monkeypatch.context() as m:  # nothing changed: no model, nothing written
        no_model(m)
        rc, out, _ = run(capsys, "add", folder / "*.txt", *args)
    report = json.loads(out)
    assert rc == 0 and report["unchanged"] == 4 and report["added"] == 0
    assert docs_of(index) == before
    # --reread: read and compressed again, unchanged (after an upgrade whose readers read a
    # type better, which said "add it again", and that left it as it was)
    rc, out, _ = run(capsys, "add", folder / "doc02.txt", "--reread", *args)
    assert rc == 0 and json.loads(out)["replaced"] == 1 and docs_of(index) == before

    old_id = next(f["doc_id"] for f in report["files"] if f["path"].endswith("doc01.txt"))
    paths[1].write_text("A brand new text about the stone bridge.")
    rc, out, _ = run(capsys, "add", folder, *args)
    report = json.loads(out)
    assert rc == 0 and (report["replaced"], report["unchanged"]) == (1, 3)
    after = docs_of(index)
    assert after["doc01.txt"] == ["A brand new text about the stone bridge."]
    assert {k: v for k, v in after.items() if k != "doc01.txt"} == {
        k: v for k, v in before.items() if k != "doc01.txt"
    }
    rc, _, err = run(capsys, "show", old_id, "--index", index)
    assert rc == 1 and "no such document" in err

    copy = folder / "copy.txt"  # the same content under another name is not indexed twice
    copy.write_bytes(paths[0].read_bytes())
    with monkeypatch.context() as m:  # known content: no model needed to say so
        no_model(m)
        rc, out, _ = run(capsys, "add", copy, *args)
    report = json.loads(out)
    assert report["duplicate"] == 1 and report["unchanged"] == 0
    assert "same content as" in report["files"][0]["detail"]
    # the original changes: the copy (read first, "copy.txt" < "doc00.txt") is indexed itself
    copied = before["doc00.txt"]
    paths[0].write_text("The original was rewritten after it was copied.")
    rc, out, _ = run(capsys, "add", folder, *args)
    status = {Path(f["path"]).name: f["status"] for f in json.loads(out)["files"]}
    assert (status["copy.txt"], status["doc00.txt"]) == ("added", "replaced")
    assert docs_of(index)["copy.txt"] == copied
    # a copy of an upload is indexed itself (an R2R user's audit: deleting the upload through
    # the Files API took the folder's file, "not indexed again", out of every answer)
    upload = index / "uploads" / "file-0123456789abcdef01234567" / "policy.txt"
    upload.parent.mkdir(parents=True)
    upload.write_text("Holidays carry over to March; ask your manager before.")
    (folder / "policy.txt").write_bytes(upload.read_bytes())
    rc, out, _ = run(capsys, "add", upload, *args)
    rc, out, _ = run(capsys, "add", folder / "policy.txt", *args)
    assert [f["status"] for f in json.loads(out)["files"]] == ["added"]


def test_read_commands_are_model_free_and_speak_json(
    capsys, monkeypatch, tmp_path: Path, corpus: Path, tiny_llama_dir: Path
) -> None:
    index = tmp_path / "index"
    run(capsys, "add", corpus, "--model", tiny_llama_dir, "--index", index, *CHUNKING)
    run(capsys, "add", corpus / "sub", "--collection", "other", "--model", tiny_llama_dir,
        "--index", index)  # fmt: skip
    no_model(monkeypatch)

    rc, out, _ = run(capsys, "list", "--index", index, "--json")
    docs = json.loads(out)
    assert rc == 0 and len(docs) == N_GOOD + 1
    doc = next(d for d in docs if d["name"] == "doc03.txt")
    assert doc["path"] == str((corpus / "doc03.txt").resolve()) and doc["chunks"] >= 3

    rc, out, _ = run(capsys, "show", corpus / "doc03.txt", "--index", index, "--json")
    shown = json.loads(out)
    assert rc == 0 and shown["id"] == doc["id"] and len(shown["chunk_list"]) == doc["chunks"]
    # text without form feeds has no pages: none made up ("p. 1")
    assert all(c["page_start"] is c["page_end"] is None for c in shown["chunk_list"])
    assert (corpus / "doc03.txt").read_text().startswith(shown["chunk_list"][0]["text"])
    rc, out, _ = run(capsys, "show", doc["id"], "--index", index)
    assert rc == 0 and "\n[0], " in out and "p. 1" not in out

    rc, out, _ = run(capsys, "stats", "--index", index, "--json")
    stats = json.loads(out)
    assert stats["documents"] == N_GOOD + 1 and stats["chunks"] == sum(d["chunks"] for d in docs)
    assert stats["index_kind"] == "flat" and stats["bytes_on_disk"] > 0
    assert stats["model"]["base_model"] == str(tiny_llama_dir) and stats["fingerprint"]
    rc, out, _ = run(capsys, "stats", "--index", index)
    assert rc == 0 and "checkpoint" in out and "documents    11" in out

    rc, out, _ = run(capsys, "collections", "--index", index, "--json")
    assert [(c["name"], c["documents"]) for c in json.loads(out)] == [
        ("default", N_GOOD + 1),
        ("other", 1),
    ]
    rc, out, _ = run(capsys, "remove", corpus / "doc03.txt", doc["id"], "--index", index)
    assert rc == 0 and out.count("removed") == 1  # two names of one document: removed once
    rc, out, _ = run(capsys, "remove", corpus / "sub", "--index", index, "--json")  # a folder
    assert rc == 0 and [d["name"] for d in json.loads(out)["removed"]] == ["notes.md"]
    rc, out, _ = run(capsys, "list", "--index", index)
    assert f"{N_GOOD - 1} documents" in out and "notes.md" not in out and "doc03" not in out
    # globs the shell left alone: files deleted since they were indexed, or quoted patterns
    for name in ("doc04.txt", "doc05.txt"):
        (corpus / name).unlink()
    rc, out, _ = run(capsys, "remove", corpus / "doc0[45].txt", "doc0?.t?t", "*.nope",
                     "--index", index, "--json")  # fmt: skip
    result = json.loads(out)
    removed = sorted(d["name"] for d in result["removed"])
    assert removed == [f"doc0{i}.txt" for i in (0, 1, 2, 4, 5, 6, 7, 8, 9)]
    assert rc == 3 and result["not_found"] == ["*.nope"]  # some removed: 3, as add
    rc, out, _ = run(capsys, "list", "--index", index)
    assert "0 documents" in out
    # `**` spans folders, as when `add` expanded it ("other" holds sub/notes.md)
    rc, out, _ = run(capsys, "remove", str(corpus) + "/**/*.md", "--collection", "other",
                     "--index", index, "--json")  # fmt: skip
    assert rc == 0 and [d["name"] for d in json.loads(out)["removed"]] == ["notes.md"]

    rc, _, err = run(capsys, "list", "--index", index, "--collection", "nope")
    assert rc == 1 and "no collection 'nope'" in err and "existing: default, other" in err


def test_search_finds_a_chunk_by_its_own_text(
    capsys, tmp_path: Path, corpus: Path, tiny_llama_dir: Path
) -> None:
    index = tmp_path / "index"
    run(capsys, "add", corpus, "--model", tiny_llama_dir, "--index", index, *CHUNKING)
    target = docs_of(index)["doc05.txt"][1]
    with Collection.open(index, "default", readonly=True) as col:  # what the compressor read
        doc = next(d for d in col.list_documents() if d.name == "doc05.txt")
        query = col.document_chunks(doc.id)[1].contextual_text
    assert query.endswith("\n" + target) and query.startswith("5.0.0")  # the first line
    model = ["--model", tiny_llama_dir, "--index", index]
    rc, out, _ = run(capsys, "search", query, "-k", "3", *model, "--json", "--mode", "dense")
    results = json.loads(out)["results"]
    assert rc == 0 and len(results) == 3
    assert results[0]["file"] == "doc05.txt" and results[0]["text"] == target
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-3)  # cosine of identical memories
    assert results[1]["score"] < results[0]["score"] and results[0]["ranks"] == {"dense": 1}
    assert results[0]["page_start"] is None and results[0]["context"] + "\n" + target == query
    rc, out, _ = run(capsys, "search", query, *model, "--mode", "dense")
    assert rc == 0 and out.startswith("1. 1.000") and "doc05.txt  [dense #1]" in out
    rc, out, _ = run(capsys, "search", query, "-k", "3", *model, "--json")  # hybrid
    top = json.loads(out)["results"][0]
    assert top["mode"] == "hybrid" and top["text"] == target and top["ranks"]["dense"] == 1
    assert top["score"] == pytest.approx(Fusion().score(top["ranks"]), abs=1e-5)
    every = [c for texts in docs_of(index).values() for c in texts]
    own = [n for n in re.findall(r"\d+\.\d+\.\d+", target) if sum(n in c for c in every) == 1]
    words = own[0]  # a sentence number only this chunk holds: the lexical side finds it
    rc, out, err = run(capsys, "search", words, "-k", "1", *model, "--json", "--mode", "lexical")
    assert json.loads(out)["results"][0]["text"] == target and "note" not in err
    # fusion options with another mode: said to be unused (they were taken without a word)
    rc, out, err = run(capsys, "search", words, *model, "--mode", "lexical", "--fusion-k", "10")
    assert rc == 0 and "note: --fusion-k only matters with --mode hybrid" in err


def test_other_checkpoint_is_refused_and_recompress_switches(
    capsys, tmp_path: Path, tiny_llama_dir: Path, tiny_llama_q4_dir: Path
) -> None:
    folder, index = tmp_path / "docs", tmp_path / "index"
    write_corpus(folder, n=3)
    run(capsys, "add", folder, "--model", tiny_llama_dir, "--index", index, *CHUNKING)
    before = docs_of(index)
    (folder / "new.txt").write_text("The cat sat on the mat.")
    for argv in (["add", folder], ["search", "cat"]):
        rc, _, err = run(capsys, *argv, "--model", tiny_llama_q4_dir, "--index", index)
        assert rc == 1 and err.count("\n") == 1, err
        assert "index 'default' was built with checkpoint" in err and "clara-index rebuild" in err

    rc, out, err = run(capsys, "rebuild", "--index", index, "--json")  # FAISS only: no model
    assert rc == 0 and json.loads(out)["indexed_vectors"] == sum(map(len, before.values()))
    assert err == ""
    rc, _, err = run(capsys, "rebuild", "--index", index, "--checkpoint", "x", "--batch-size", "4")
    assert rc == 0 and "--checkpoint, --batch-size only matter with --recompress" in err
    db = sqlite3.connect(index / "default" / "meta.sqlite")  # as an index made before
    db.execute("DROP TABLE chunks_fts")  # contextual chunks and the full-text table
    db.execute("DELETE FROM state WHERE key='lexical'")
    db.execute("ALTER TABLE chunks DROP COLUMN context")
    db.commit()
    db.close()
    rc, out, err = run(
        capsys, "rebuild", "--recompress", "--model", tiny_llama_q4_dir, "--index", index, "--json"
    )
    assert rc == 0 and json.loads(out)["recompressed"] == 3
    assert "built its full-text index" in err
    assert docs_of(index) == before  # same chunks, new vectors
    with Collection.open(index, "default", readonly=True) as col:  # contexts recovered
        doc = next(d for d in col.list_documents() if d.name == "doc01.txt")
        chunks = col.document_chunks(doc.id)
        assert chunks[0].context == ""  # it opens with the title (its first line)
        assert chunks[1].context and chunks[0].text.startswith(chunks[1].context.rstrip("…"))
        assert col.stats()["lexical_chunks"] == col.stats()["chunks"]
    assert not (index / "default.recompress").exists() and commands.list_collections(index) == [
        "default"
    ]
    target = before["doc01.txt"][0]
    rc, out, _ = run(
        capsys,
        "search",
        target,
        "-k",
        "1",
        "--model",
        tiny_llama_q4_dir,
        "--index",
        index,
        "--json",
        "--mode",
        "dense",
    )
    top = json.loads(out)["results"][0]
    assert rc == 0 and top["text"] == target and top["score"] == pytest.approx(1.0, abs=1e-3)
    rc, _, err = run(capsys, "search", "cat", "--model", tiny_llama_dir, "--index", index)
    assert rc == 1 and "was built with checkpoint" in err


def two_checkpoints(tiny_llama_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two checkpoints of the tiny model whose compressors differ (tmp_path/a and /b)."""
    import mlx.core as mx

    from clara.checkpoint import WEIGHTS_FILE, load_clara, save_checkpoint

    built = save_checkpoint(load_clara(tiny_llama_dir, "fresh", dtype=None), tmp_path / "a")
    other = tmp_path / "b"
    shutil.copytree(built, other)
    weights = mx.load(str(other / WEIGHTS_FILE))
    key = next(k for k in sorted(weights) if "lora_compressor" in k)
    mx.save_safetensors(str(other / WEIGHTS_FILE), {**weights, key: weights[key] + 0.01})
    return built, other


def test_an_add_with_nothing_to_index_still_refuses_a_checkpoint_that_did_not_build_it(
    capsys, monkeypatch, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """Before: re-adding unchanged files with another --checkpoint said "unchanged" (the
    model, which makes the check, never loaded); a file changed later was refused."""
    built, other = two_checkpoints(tiny_llama_dir, tmp_path)
    folder, index = tmp_path / "docs", tmp_path / "index"
    write_corpus(folder, n=2)
    model = ["--model", tiny_llama_dir, "--index", index, *CHUNKING]
    assert run(capsys, "add", folder, *model, "--checkpoint", built)[0] == 0
    no_model(monkeypatch)
    rc, out, err = run(capsys, "add", folder, *model, "--checkpoint", other)
    assert rc == 1 and "index 'default' was built with checkpoint" in err, err
    assert f"--checkpoint {built}" in err and "unchanged" not in out
    rc, out, _ = run(capsys, "add", folder, *model, "--checkpoint", built)
    assert rc == 0 and "0 added, 2 unchanged" in out
    # `collections` says which ones another checkpoint cannot read, and the rebuild to run (an
    # upgrade audit: the README said it listed them; it listed fingerprints only)
    where = ["--model", tiny_llama_dir, "--index", index]
    rc, out, _ = run(capsys, "collections", *where, "--checkpoint", other)
    assert rc == 0 and "default: made with other adapters than this checkpoint's" in out
    assert f"rebuild --recompress --collection default --model {tiny_llama_dir}" in out
    rc, out, _ = run(capsys, "collections", *where, "--checkpoint", built, "--json")
    assert json.loads(out)[0]["readable"] is True
    rc, out, _ = run(capsys, "collections", *where, "--checkpoint", "none", "--json")
    assert "readable" not in json.loads(out)[0]  # (untrained adapters: not known)
    rc, out, _ = run(capsys, "collections", "--index", index, "--json")  # the default model's
    assert json.loads(out)[0]["readable"] is False


def test_add_reports_files_in_the_order_it_was_given_them(
    capsys, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """Before: files that failed the check made before loading the model were reported
    first, ahead of files named before them."""
    from tests.test_readers import make_pdf

    old, new, scan = tmp_path / "old.txt", tmp_path / "new.txt", tmp_path / "scan.pdf"
    old.write_text("An old note about tides and the moon.")
    new.write_text("A new note about volcanoes and lava.")
    scan.write_bytes(make_pdf([None]))
    model = ["--model", tiny_llama_dir, "--index", tmp_path / "index", *CHUNKING]
    assert run(capsys, "add", old, *model)[0] == 0
    rc, out, _ = run(capsys, "add", old, scan, new, *model, "--json")
    files = json.loads(out)["files"]
    assert rc == 3 and [Path(f["path"]).name for f in files] == ["old.txt", "scan.pdf", "new.txt"]
    assert [f["status"] for f in files] == ["unchanged", "failed", "added"]
    newer = tmp_path / "newer.txt"  # a file still compressing when the PDF after it fails
    newer.write_text("A newer note about glaciers and ice.")
    rc, out, _ = run(capsys, "add", newer, scan, *model, "--json")
    assert [Path(f["path"]).name for f in json.loads(out)["files"]] == ["newer.txt", "scan.pdf"]


def test_the_indexer_takes_as_many_chunks_a_step_as_it_is_told(tmp_path, tiny_llama_dir):
    """The indexing service shortens compression steps while chats run beside it
    (`IndexOptions.step_chunks`); every chunk is still indexed."""
    from clara.checkpoint import load_clara
    from indexing.pipeline import FileResult, Indexer, IndexOptions, Progress

    cm = load_clara(tiny_llama_dir, "fresh", dtype=None)
    folder = tmp_path / "docs"
    paths = write_corpus(folder, n=2)
    manifest = dict(cm.manifest())
    sizes = iter([3, 1, 0, 99])  # 0 and more than the batch: one chunk, the batch
    options = IndexOptions(32, 4, batch_size=4, step_chunks=lambda: next(sizes, 2))
    with Collection.open(tmp_path / "index", "default", manifest, create=True) as col:
        events = list(Indexer(cm, col, options).run(paths))
        steps = [e.chunks for e in events if isinstance(e, Progress) and e.chunks]
        results = [e for e in events if isinstance(e, FileResult)]
        assert steps[:4] == [3, 1, 1, 4] and set(steps[4:]) <= {1, 2}, steps
        assert sum(steps) == sum(r.chunks for r in results) == col.stats()["chunks"]


def test_recompress_after_a_writer_died_with_faiss_behind(
    capsys, tmp_path: Path, tiny_llama_dir: Path, tiny_llama_q4_dir: Path, monkeypatch
) -> None:
    """A writer died with its FAISS file behind its commits (big collections save it now and
    then). `rebuild --recompress` opens the old collection, catches up in memory, swaps the
    new one in, and must not then write the old vectors over the new collection's file."""
    from indexing import view

    folder, index = tmp_path / "docs", tmp_path / "index"
    write_corpus(folder, n=3)
    run(capsys, "add", folder, "--model", tiny_llama_dir, "--index", index, *CHUNKING)
    (folder / "new.txt").write_text("The cat sat on the mat. " * 8)
    save = view.IndexView.maybe_save
    monkeypatch.setattr(view.IndexView, "maybe_save", lambda self, force=False: None)  # dies
    rc, _, _ = run(capsys, "add", folder, "--model", tiny_llama_dir, "--index", index, *CHUNKING)
    assert rc == 0
    monkeypatch.setattr(view.IndexView, "maybe_save", save)
    monkeypatch.setattr(view, "SAVE_ALWAYS_BYTES", 0)  # a big collection: saved on close only
    monkeypatch.setattr(view, "SAVE_CHANGED_SHARE", 1e9)
    rc, out, _ = run(
        capsys, "rebuild", "--recompress", "--model", tiny_llama_q4_dir, "--index", index, "--json"
    )
    assert rc == 0 and json.loads(out)["recompressed"] == 4
    target = docs_of(index)["doc01.txt"][0]
    rc, out, _ = run(
        capsys, "search", target, "-k", "1", "--model", tiny_llama_q4_dir, "--index", index,
        "--json", "--mode", "dense",
    )  # fmt: skip
    top = json.loads(out)["results"][0]  # the new model's own vector for the chunk
    assert rc == 0 and top["text"] == target and top["score"] == pytest.approx(1.0, abs=1e-3)


def test_ctrl_c_during_recompress_says_the_collection_is_unchanged(
    capsys, tmp_path: Path, tiny_llama_dir: Path, tiny_llama_q4_dir: Path, monkeypatch
) -> None:
    """It used to say add's words: files "indexed in this run", as if the collection had
    changed; it is unchanged until the swap, and what was re-encoded waits aside."""
    from indexing import pipeline
    from indexing.pipeline import FileResult

    folder, index = tmp_path / "docs", tmp_path / "index"
    write_corpus(folder, n=3)
    run(capsys, "add", folder, "--model", tiny_llama_dir, "--index", index, *CHUNKING)
    before = docs_of(index)
    whole = pipeline.recompress

    def stopped_after_one(*a, **kw):
        for event in whole(*a, **kw):
            yield event
            if isinstance(event, FileResult):
                raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "recompress", stopped_after_one)
    rc, _, err = run(
        capsys, "rebuild", "--recompress", "--model", tiny_llama_q4_dir, "--index", index
    )
    assert rc == 130, err
    assert (
        "stopped; the 1 document re-encoded so far is kept aside, and the collection is "
        "unchanged and still searched: run the same command again to go on" in err
    ), err
    assert docs_of(index) == before


def test_a_moved_folder_is_named_with_the_remove_that_cleans_it(
    capsys, tmp_path: Path, tiny_llama_dir: Path, monkeypatch
) -> None:
    """Moving the indexed folder and adding its new place indexes it all again; `add OLD
    --prune` then only said to check the path (an operator's audit). It now says how many
    documents came from there and the command that removes them."""
    from clara.paths import show_path

    folder, index = tmp_path / "docs", tmp_path / "index"
    first = write_corpus(folder, n=3)[0]
    where = ["--index", index, "--collection", "notes"]
    run(capsys, "add", folder, "--model", tiny_llama_dir, *where, *CHUNKING)
    monkeypatch.chdir(tmp_path / "index")  # a stored file's name, typed where it is not: no
    rc, _, err = run(capsys, "add", first.name, "--model", tiny_llama_dir, *where)
    assert rc == 1 and "which is gone" not in err, err  # hint (it matched by the name's tail)
    folder.rename(tmp_path / "moved")
    rc, _, err = run(capsys, "add", folder, "--prune", "--model", tiny_llama_dir, *where)
    assert rc == 1 and "no such file or directory" in err
    said = f"3 documents in 'notes' were indexed from {show_path(str(folder))}, which is gone"
    assert said in err, err
    command = re.search(r"`(clara-index remove [^`]*)` removes them", err)[1]
    assert command == f"clara-index remove {folder} --index {index} --collection notes"
    rc, _, err = run(capsys, *shlex.split(command)[1:])  # as written: it works
    assert rc == 0 and docs_of(index, "notes") == {}, err


def test_a_disk_that_fills_half_way_exits_3_with_what_was_indexed(
    capsys, tmp_path: Path, tiny_llama_dir: Path, monkeypatch
) -> None:
    """A full disk after some files were indexed exited 1, which says none was (an
    operator's audit); it is 3, as for any files indexed beside failures."""
    from indexing import vectors

    folder, index = tmp_path / "docs", tmp_path / "index"
    write_corpus(folder, n=3)
    write = vectors.faiss.write_index
    written = []

    def fills_up(faiss_index, path):  # (the first write is the new collection's, empty)
        if len(written) == 2:
            raise RuntimeError(
                f"Error in write_index: write error in {path}: (No space left on device)"
            )
        written.append(path)
        write(faiss_index, path)

    monkeypatch.setattr(vectors.faiss, "write_index", fills_up)
    rc, out, err = run(
        capsys, "add", folder, "--model", tiny_llama_dir, "--index", index, *CHUNKING
    )
    assert rc == 3, err
    assert "added" in out and "No space left on device" in err and "Traceback" not in err, err
    monkeypatch.undo()
    assert len(docs_of(index)) >= 1


def test_a_resumed_recompress_leaves_out_what_was_removed_meanwhile(
    capsys, tmp_path: Path, tiny_llama_dir: Path, tiny_llama_q4_dir: Path
) -> None:
    """An interrupted `rebuild --recompress` keeps what it staged, to resume. A document
    removed (or changed) before the next run came back with the swap, beside its new
    version: 11 documents for 9."""
    from clara.checkpoint import load_clara
    from indexing.pipeline import FileResult, recompress

    folder, index = tmp_path / "docs", tmp_path / "index"
    write_corpus(folder, n=3)
    run(capsys, "add", folder, "--model", tiny_llama_dir, "--index", index, *CHUNKING)
    steps = recompress(load_clara(tiny_llama_q4_dir, None, dtype=None), index, "default")
    first = next(r for r in steps if isinstance(r, FileResult))
    steps.close()  # interrupted after one document
    rc, _, err = run(capsys, "remove", str(first.path), "--index", index)
    assert rc == 0, err
    first.path.unlink()
    changed = next(p for p in sorted(folder.glob("*.txt")) if p != first.path)
    changed.write_text("A changed text about the stone bridge. " * 4)
    run(capsys, "add", folder, "--model", tiny_llama_dir, "--index", index, *CHUNKING)

    def documents() -> list[tuple[str, list[str]]]:
        with Collection.open(index, "default", readonly=True) as col:
            docs = col.list_documents()
            return sorted((d.name, [c.text for c in col.document_chunks(d.id)]) for d in docs)

    before = documents()
    assert len(before) == 2 and first.path.name not in dict(before)
    rc, out, err = run(
        capsys, "rebuild", "--recompress", "--model", tiny_llama_q4_dir, "--index", index, "--json"
    )
    assert rc == 0, err
    assert documents() == before


def test_bad_arguments_are_refused_before_anything_is_written(
    capsys, tmp_path: Path, corpus: Path, tiny_llama_dir: Path
) -> None:
    """A chunk size past doc_max_tokens, the service's reserved folder as a collection, an
    empty query: each refused with its reason, and no collection is created."""
    index = tmp_path / "index"
    doc = corpus / "sub" / "notes.md"
    rc, _, err = run(capsys, "add", doc, "--model", tiny_llama_dir, "--index", index,
                     "--collection", "opt", "--chunk-tokens", "5000")  # fmt: skip
    assert rc == 1 and "chunk size 5000" in err
    assert not (index / "opt").exists()
    for argv in (
        ["add", doc, "--index", index, "--collection", "uploads"],
        ["search", "   ", "--index", index],
    ):
        with pytest.raises(SystemExit) as exit_:
            run(capsys, *argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and ("reserved" in err or "query is empty" in err), err
    assert not (index / "uploads").exists()


def test_every_subcommand_has_help_with_examples(capsys) -> None:
    commands = ["add", "remove", "list", "show", "stats", "search", "rebuild", "collections"]
    for command in [*commands, "serve"]:
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and "examples:" in out, command
        if command in ("add", "search", "rebuild", "serve"):
            assert "--checkpoint" in out
        # (a docs audit: collections offered --dtype, yet loads no weights)
        assert ("--dtype" in out) == (command in ("add", "search", "rebuild", "serve")), command
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert all(f"\n    {c} " in out or f"\n    {c}\n" in out for c in commands)
    assert "examples:" in out


# ---- kill -9 of a real `clara-index add` ---------------------------------------------------
def add_process(folder: Path, index: Path, model: Path, crash_at: str | None = None, *extra):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("CLARA_CRASH_AT", None)
    if crash_at:
        env["CLARA_CRASH_AT"] = crash_at
    cmd = [sys.executable, "-m", "indexing.cli", "add", str(folder), "--model", str(model),
           "--index", str(index), *CHUNKING, "-q", *extra]  # fmt: skip
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def committed_documents(index: Path) -> int:
    db = index / "default" / "meta.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("crash_at", ["recompress:between-renames", "recompress:before-unmark"])
def test_a_recompress_killed_in_its_swap_is_finished_by_the_next_command(
    capsys, tmp_path: Path, tiny_llama_dir: Path, tiny_llama_q4_dir: Path, crash_at: str
) -> None:
    """A crash audit: `rebuild --recompress` killed between the two renames of its swap left
    no collection in place (the new copy waiting in .recompress): `list` said there was none
    and to index some documents; `add` then made a new empty one, and a later recompress
    dropped the waiting copy's documents for good. The next command now finishes the swap."""
    folder, index = tmp_path / "docs", tmp_path / "index"
    write_corpus(folder, n=3)
    run(capsys, "add", folder, "--model", tiny_llama_dir, "--index", index, *CHUNKING)
    before = docs_of(index)
    env = dict(os.environ, PYTHONPATH=str(REPO), CLARA_CRASH_AT=crash_at)
    killed = subprocess.run(
        [sys.executable, "-m", "indexing.cli", "rebuild", "--recompress", "--model",
         str(tiny_llama_q4_dir), "--index", str(index), "-q"],
        env=env, cwd=REPO, capture_output=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    rc, out, err = run(capsys, "list", "--index", index)
    assert rc == 0, err
    assert docs_of(index) == before  # the recompressed copy, in place
    rc, _, err = run(capsys, "search", "bridge", "--model", tiny_llama_q4_dir, "--index", index)
    assert rc == 0, err  # (the new model's memories)
    assert not list((index / ".recompress").iterdir())  # nothing left waiting
    assert not [p for p in index.iterdir() if p.name.startswith(".default.deleted-")]
    rc, out, err = run(
        capsys, "rebuild", "--recompress", "--model", tiny_llama_q4_dir, "--index", index, "--json"
    )
    assert rc == 0, err
    assert docs_of(index) == before


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_llama_dir: Path) -> tuple[Path, dict[str, list[str]]]:
    """The corpus and the index one uninterrupted run makes of it."""
    tmp = tmp_path_factory.mktemp("crash-ref")
    write_corpus(tmp / "docs", paragraphs=12)
    proc = add_process(tmp / "docs", tmp / "index", tiny_llama_dir)
    assert proc.wait(120) == 0, proc.stderr.read().decode()
    return tmp / "docs", docs_of(tmp / "index")


def check_complete(index: Path, expected: dict[str, list[str]]) -> None:
    assert docs_of(index) == expected  # every document once, chunks in order, none twice
    with Collection.open(index, "default") as col:  # writer: reconciles leftovers
        stats = col.stats()
        n = sum(map(len, expected.values()))
        assert stats["chunks"] == stats["indexed_vectors"] == stats["memory_rows"] == n
        assert len({c.id for d in col.list_documents() for c in col.document_chunks(d.id)}) == n


@pytest.mark.parametrize(
    "crash_at",
    ["index:after-document-3", "index:after-document-1", "add:mid-append", "add:before-commit",
     "add:after-commit", "faiss:after-temp"],
)  # fmt: skip
def test_kill_during_add_then_rerun_completes(
    tmp_path: Path, tiny_llama_dir: Path, reference, crash_at: str
) -> None:
    folder, expected = reference
    index = tmp_path / "index"
    proc = add_process(folder, index, tiny_llama_dir, crash_at)
    assert proc.wait(120) == -signal.SIGKILL, proc.stderr.read().decode()
    survived = committed_documents(index)
    # faiss:after-temp fires first when the new collection saves its empty index
    want = {"index:after-document-3": 3, "index:after-document-1": 1, "add:after-commit": 1}
    assert survived == want.get(crash_at, 0)
    rerun = add_process(folder, index, tiny_llama_dir)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err.decode()
    summary = f"{N_GOOD - survived} added" + (f", {survived} unchanged" if survived else "")
    assert f"{summary}: " in out.decode()
    check_complete(index, expected)


def test_a_long_document_goes_on_where_a_crash_left_it(tmp_path: Path, tiny_llama_dir: Path):
    """A document of many chunks keeps its compressed chunks as it goes (indexing.partial):
    killed after the second save (32 chunks), the re-run compresses only the rest, and the
    stored memories are the ones an uninterrupted run stores."""
    import numpy as np

    folder = tmp_path / "book"
    write_corpus(folder, n=1, paragraphs=30)
    index, clean = tmp_path / "index", tmp_path / "clean"
    batch = ("--batch-size", "8")
    proc = add_process(folder, index, tiny_llama_dir, "index:after-partial-2", *batch)
    assert proc.wait(120) == -signal.SIGKILL, proc.stderr.read().decode()
    assert committed_documents(index) == 0
    rerun = add_process(folder, index, tiny_llama_dir, None, *batch, "--json")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err.decode()
    (result,) = json.loads(out)["files"]
    n = result["chunks"]
    assert n > 40 and result["status"] == "added"
    assert result["detail"] == f"resumed: 32 of {n} chunks were compressed by an earlier run"
    report = json.loads(out)  # its rate counts the chunks this run compressed (it was all n)
    working = report["seconds"] - report["model_load_s"]
    assert 0 < report["chunks_per_s"] * working < n - 8
    assert list((index / "default" / "partial").iterdir()) == []  # committed: dropped
    assert add_process(folder, clean, tiny_llama_dir, None, *batch).wait(120) == 0
    with (
        Collection.open(index, "default", readonly=True) as got,
        Collection.open(clean, "default", readonly=True) as want,
    ):
        mine, theirs = (
            c.memories([k.id for k in c.document_chunks(c.list_documents()[0].id)])
            for c in (got, want)
        )
        assert mine.shape == theirs.shape and np.abs(mine).max() > 0
        np.testing.assert_array_equal(mine, theirs)


def test_saves_of_an_edited_files_older_version_go_at_its_commit(
    capsys, tmp_path: Path, tiny_llama_dir: Path
):
    """A long file edited between an interrupted run and the next: its older version's saves
    stayed 7 days (`stats` did not count them). `stats` counts them; the commit of any
    version of the file removes them all."""
    folder = tmp_path / "book"
    (path,) = write_corpus(folder, n=1, paragraphs=30)
    index = tmp_path / "index"
    proc = add_process(folder, index, tiny_llama_dir, "index:after-partial-1", "--batch-size", "8")
    assert proc.wait(120) == -signal.SIGKILL, proc.stderr.read().decode()
    rc, out, _ = run(capsys, "stats", "--index", index, "--json")
    assert rc == 0 and json.loads(out)["files"]["partial/"] > 0
    path.write_text(path.read_text() + "\n\nOne more paragraph, written after the crash.\n")
    assert add_process(folder, index, tiny_llama_dir, None, "--batch-size", "8").wait(120) == 0
    assert list((index / "default" / "partial").iterdir()) == []
    # a short new version (a redaction), or a removal, takes them too (a privacy audit: only
    # a version long enough to be saved itself did, and `compact` kept them: the file was there)
    long_text = path.read_text()
    for then in ("short", "remove"):
        path.write_text(long_text + f"\n\nAnother edit, {then}.\n")
        proc = add_process(
            folder, index, tiny_llama_dir, "index:after-partial-1", "--batch-size", "8"
        )
        assert proc.wait(120) == -signal.SIGKILL, proc.stderr.read().decode()
        assert list((index / "default" / "partial").iterdir()) != []
        if then == "short":
            path.write_text("Redacted.")
            assert add_process(folder, index, tiny_llama_dir, None).wait(120) == 0
        else:
            rc, _, err = run(capsys, "remove", path, "--index", index)
            assert rc == 0, err
        assert list((index / "default" / "partial").iterdir()) == [], then


def test_sigkill_from_outside_mid_run(tmp_path: Path, tiny_llama_dir: Path, reference) -> None:
    folder, expected = reference
    index = tmp_path / "index"
    proc = add_process(folder, index, tiny_llama_dir, None, "--batch-size", "1")
    deadline = time.monotonic() + 120
    while committed_documents(index) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    survived = committed_documents(index)
    if proc.returncode != -signal.SIGKILL or survived >= N_GOOD:
        pytest.skip("the run finished before it could be killed (machine too fast)")
    rerun = add_process(folder, index, tiny_llama_dir)
    assert rerun.wait(120) == 0, rerun.stderr.read().decode()
    check_complete(index, expected)


# ---- the real default model ----------------------------------------------------------------
@pytest.mark.slow
def test_default_model_add_and_search(capsys, tmp_path: Path) -> None:
    note = tmp_path / "garden.md"
    note.write_text(
        "# Garden notes\n\nThe tomatoes in the greenhouse need water every morning in July.\n"
    )
    other = tmp_path / "bank.md"
    other.write_text("# Finance\n\nThe bank raised its interest rate by half a percent.\n")
    index = tmp_path / "index"
    rc, out, err = run(capsys, "add", tmp_path, "--index", index)
    assert rc == 0, err
    rc, out, _ = run(
        capsys, "search", "When do the tomatoes need water?", "-k", "2", "--index", index, "--json"
    )
    results = json.loads(out)["results"]
    assert rc == 0 and results[0]["file"] == "garden.md", results
    assert "tomatoes" in results[0]["text"]


def test_a_damaged_collection_is_named_and_the_others_still_work(
    capsys, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    index = tmp_path / "index"
    write_corpus(tmp_path / "docs", n=1)
    for name in ("good", "torn", "gone"):
        run(capsys, "add", tmp_path / "docs", "--collection", name, "--model", tiny_llama_dir,
            "--index", index, "--quiet")  # fmt: skip
    (index / "torn" / "manifest.json").write_text('{"trunc')  # a crash mid-copy, say
    (index / "gone" / "meta.sqlite").unlink()
    rc, out, err = run(capsys, "collections", "--index", index)
    assert rc == 1 and "good" in out and "torn" not in out and "gone" not in out
    assert "collection 'torn'" in err and "is damaged (manifest.json unreadable" in err
    assert "collection 'gone'" in err and "meta.sqlite is missing" in err
    assert "Traceback" not in err
    assert not (index / "gone" / "meta.sqlite").exists()  # reading made no empty database
    rc, _, err = run(capsys, "search", "anything", "--collection", "torn", "--index", index)
    assert rc == 1 and "is damaged" in err and "restore its folder" in err


def store_collection(index: Path, name: str, docs: int = 2) -> Path:
    """A collection of random memories (tests.tiny.STORE_MANIFEST) made without a model, for
    the commands that never load one; returns its folder."""
    import numpy as np

    from indexing.store import ChunkRecord
    from tests.tiny import STORE_D, STORE_MANIFEST, STORE_N_MEM

    with Collection.open(index, name, manifest=STORE_MANIFEST, create=True) as col:
        for i in range(docs):
            memories = np.random.default_rng(i).standard_normal((2, STORE_N_MEM, STORE_D))
            chunks = [ChunkRecord(f"{name} {i} chunk {j}", n_tokens=4) for j in range(2)]
            col.add_document(f"/docs/{name}/d{i}.txt", f"d{i}.txt", f"sha-{name}-{i}", chunks,
                             memories)  # fmt: skip
    return index / name


def test_a_lost_or_cut_memory_file_is_reported_as_damage(capsys, monkeypatch, tmp_path: Path):
    """Before: "keeps changing; try again" for a deleted memory file, a RuntimeError traceback
    for a truncated one; now both name the collection as damaged and say what to do."""
    index = tmp_path / "index"
    for name in ("good", "gone", "cut"):
        store_collection(index, name)
    (index / "gone" / "memory-0.f16").unlink()
    os.truncate(index / "cut" / "memory-0.f16", 70)  # 1 of 4 rows (64 bytes each) and a bit
    for folder in (index / "gone", index / "cut"):
        for p in folder.glob("faiss-*.index"):
            p.unlink()
    no_model(monkeypatch)
    rc, out, err = run(capsys, "collections", "--index", index)
    names = [line.split()[0] for line in out.splitlines()[1:] if not line.startswith(" ")]
    assert rc == 1 and names == ["good"], out
    gone = "collection 'gone' in {} is damaged (its memory file memory-0.f16 is missing)"
    cut = "is damaged (its memory file memory-0.f16 holds 1 of its 4 committed rows: cut short)"
    assert gone.format(index) in err and f"collection 'cut' in {index} {cut}" in err
    for command in (["list"], ["stats"], ["remove", "d0.txt"], ["rebuild"]):
        for name, expected in (("gone", "memory-0.f16 is missing"), ("cut", cut)):
            rc, _, err = run(capsys, *command, "--collection", name, "--index", index)
            assert rc == 1 and expected in err and "restore its folder" in err, (command, err)
            assert "keeps changing" not in err and "Traceback" not in err
    assert os.path.getsize(index / "cut" / "memory-0.f16") == 70  # no writer "repaired" it


def test_writers_refuse_a_collection_whose_database_or_manifest_is_gone(
    capsys, monkeypatch, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """Before: add/remove/rebuild made an empty meta.sqlite beside the memory files (then said
    "no such table"), and add over a folder without manifest.json loaded the model and crashed
    with OSError; now each says the collection is damaged and writes nothing."""
    index, docs = tmp_path / "index", tmp_path / "docs"
    write_corpus(docs, n=1)
    for name in ("nodb", "nomanifest"):
        store_collection(index, name)
    (index / "nodb" / "meta.sqlite").unlink()
    (index / "nomanifest" / "manifest.json").unlink()
    before = {
        name: sorted(p.name for p in (index / name).iterdir()) for name in ("nodb", "nomanifest")
    }
    monkeypatch.setattr(commands, "_load_model", lambda *a, **k: pytest.fail("model loaded"))
    for name, what in (
        ("nodb", "meta.sqlite is missing"),
        ("nomanifest", "manifest.json is missing"),
    ):
        for command in (["add", docs], ["remove", "d0.txt"], ["rebuild"], ["list"]):
            rc, _, err = run(capsys, *command, "--collection", name, "--index", index)
            assert rc == 1, (name, command, err)
            assert f"collection '{name}' in {index} is damaged ({what})" in err, (command, err)
            assert "Traceback" not in err
    after = {name: sorted(p.name for p in (index / name).iterdir()) for name in before}
    assert after == before
    assert not (index / "nodb" / "meta.sqlite").exists()
    monkeypatch.undo()
    rc, out, err = run(capsys, "add", docs, "--collection", "new", "--model", tiny_llama_dir,
                       "--index", index, *CHUNKING)  # fmt: skip
    assert rc == 0 and (index / "new" / "meta.sqlite").exists(), err  # a new one is still made
    assert out.strip().splitlines()[-1].startswith("1 added")


def test_remove_matches_what_add_indexed_for_the_same_glob_and_names_by_their_end(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    """Before: `remove 'dir/*'` removed dir's own files only, though `add 'dir/*'` had indexed
    its subfolders too; `remove 'dir/*/'` removed dir's files (not its folders'); and a bare
    `remove notes.txt` outside its folder found nothing."""
    import numpy as np

    from indexing.readers import iter_inputs
    from indexing.store import ChunkRecord
    from indexing.targets import find_documents
    from tests.tiny import STORE_D, STORE_MANIFEST, STORE_N_MEM

    tree = tmp_path / "tree"
    files = ["a.md", "b.txt", "sub/c.md", "sub/deeper/d.txt", "sub/.g.md", "sub2/e.md",
             ".hid/f.md", "one/x.txt", "two/x.txt"]  # fmt: skip
    index = tmp_path / "index"
    with Collection.open(index, "default", manifest=STORE_MANIFEST, create=True) as col:
        for i, name in enumerate(files):  # hidden ones too: `add` of them by name stores them
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            (tree / name).write_text(f"file {name}\n")
            memories = np.random.default_rng(i).standard_normal((1, STORE_N_MEM, STORE_D))
            col.add_document(str((tree / name).resolve()), Path(name).name, f"sha-{i}",
                             [ChunkRecord(f"text of {name}", n_tokens=3)], memories)  # fmt: skip
    no_model(monkeypatch)
    patterns = ["*", "*/", "sub*", "sub*/", "*/*.md", ".hid/*", "s?b/", "[os]*/*", "*/deeper",
                "**/*.md", "**/*.txt", "sub/**/*", "**/"]  # fmt: skip
    with Collection.open(index, "default", readonly=True) as col:
        for pattern in patterns:
            added = {str(p) for p in iter_inputs([f"{tree}/{pattern}"])}
            found = {d.path for d in find_documents(col, f"{tree}/{pattern}", patterns=True)}
            assert found == added, pattern

    def left() -> set[str]:
        rc, out, _ = run(capsys, "list", "--index", index, "--json")
        return {Path(d["path"]).relative_to(tree.resolve()).as_posix() for d in json.loads(out)}

    rc, out, err = run(capsys, "remove", f"{tree}/sub*/", "--index", index)  # folders only
    assert rc == 0, err
    hidden = {"sub/.g.md", ".hid/f.md"}  # under a matched folder, add skips them too
    assert left() == {"a.md", "b.txt", "one/x.txt", "two/x.txt"} | hidden
    monkeypatch.chdir(tmp_path)  # names now, from a folder above theirs
    rc, out, err = run(capsys, "remove", "x.txt", "--index", index)
    assert rc == 1 and "removed" not in out
    assert "x.txt: 2 stored paths end with it: " in err and "give the full path" in err
    assert f"{tree.resolve()}/one/x.txt, {tree.resolve()}/two/x.txt" in err
    rc, out, err = run(capsys, "remove", "one/x.txt", "b.txt", "--index", index, "--json")
    assert rc == 0 and {d["name"] for d in json.loads(out)["removed"]} == {"x.txt", "b.txt"}
    rc, _, err = run(capsys, "remove", "a.mdx", "--index", index)
    assert rc == 1 and "a.mdx: no such document in 'default'; close: tree/a.md" in err
    rc, _, err = run(capsys, "remove", ".hid", "--index", index)
    assert rc == 1 and "'.hid/' (with the '/') names the folder" in err
    rc, out, err = run(capsys, "remove", ".hid/", "--index", index)
    assert rc == 0 and left() == {"a.md", "sub/.g.md", "two/x.txt"}, err
    (tmp_path / "a.md").write_text("mine, never indexed\n")  # names a file here, not tree's
    for target in ("a.md", "./a.md", "./two/x.txt"):  # './': a place of its own, never a tail
        rc, out, err = run(capsys, "remove", target, "--index", index)
        assert rc == 1 and "removed" not in out, target
        assert f"{target}: the file here is not indexed; the stored path ending with" in err
        assert "give the full path to remove it" in err
    assert left() == {"a.md", "sub/.g.md", "two/x.txt"}
    rc, out, _ = run(capsys, "show", "a.md", "--index", index)  # reading may find it
    assert rc == 0 and "tree/a.md" in out
    rc, out, err = run(capsys, "remove", "tree/*", "--index", index)  # subfolders too, as add
    assert rc == 0 and left() == {"sub/.g.md"}, err

    with pytest.raises(SystemExit):
        cli.main(["remove", "--help"])
    help_text = capsys.readouterr().out
    assert "'dir/*' is all\n                   of dir, 'dir/*/' only its subfolders" in help_text
    assert "('notes.txt' -> /any/where/notes.txt" in help_text


def test_remove_finds_documents_add_reached_through_a_symlinked_folder(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    """Before: a document `add notes/` reached through a link in notes/ (stored under its
    real path) was not removed by `remove notes/` or `remove 'notes/*'`."""
    import numpy as np

    from indexing.store import ChunkRecord
    from tests.tiny import STORE_D, STORE_MANIFEST, STORE_N_MEM

    notes, elsewhere, index = tmp_path / "notes", tmp_path / "elsewhere", tmp_path / "index"
    (elsewhere / "deep").mkdir(parents=True)
    notes.mkdir()
    (notes / "own.md").write_text("own\n")
    (elsewhere / "deep" / "far.md").write_text("far\n")
    (notes / "linked").symlink_to(elsewhere)
    (tmp_path / "to-notes").symlink_to(notes)

    gone = notes / "gone.md"  # indexed, then deleted

    def fill() -> None:
        paths = [notes / "own.md", elsewhere / "deep" / "far.md", gone]
        gone.write_text("gone\n")
        with Collection.open(index, "default", manifest=STORE_MANIFEST, create=True) as col:
            for i, path in enumerate(paths):
                memories = np.random.default_rng(i).standard_normal((1, STORE_N_MEM, STORE_D))
                col.add_document(str(path.resolve()), path.name, f"sha-{i}",
                                 [ChunkRecord(f"text {i}", n_tokens=2)], memories)  # fmt: skip
        gone.unlink()

    def removed(target: str) -> set[str]:
        rc, out, err = run(capsys, "remove", target, "--index", index, "--json")
        assert rc == 0, (target, err)
        return {d["name"] for d in json.loads(out)["removed"]}

    no_model(monkeypatch)
    every = {"own.md", "far.md", "gone.md"}  # what is there, through the link, deleted since
    for target in (f"{notes}/", f"{tmp_path}/to-notes/", f"{notes}/*", f"{notes}/**/*.md"):
        fill()
        assert removed(target) == every, target
    fill()
    monkeypatch.chdir(notes)  # a pattern without a folder: every document of that name
    assert removed("*.md") == every


def test_an_add_of_pdfs_without_text_loads_no_model_and_still_checks_its_arguments(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    """Before: encrypted, damaged or scanned PDFs alone loaded the model (~6 s for the default
    one) before each failed, and an `add` that loaded none never looked at --checkpoint."""
    from clara.errors import ClaraError
    from indexing.pipeline import preflight
    from indexing.readers import read_document
    from tests.test_readers import make_pdf

    folder, index = tmp_path / "pdfs", tmp_path / "index"
    folder.mkdir()
    (folder / "scan.pdf").write_bytes(make_pdf([None, None]))
    shutil.copy(REPO / "tests/data/encrypted-aes128.pdf", folder / "locked.pdf")
    (folder / "torn.pdf").write_bytes(make_pdf(["Some text on a page."])[:300])
    (folder / "blank.txt").write_text(" \n")
    reasons = {
        "scan.pdf": "no extractable text (scanned/image-only PDF?): run OCR first",
        "locked.pdf": "encrypted PDF: give its password (clara-index add --password",
        "torn.pdf": "truncated PDF",
        "blank.txt": "no text (only whitespace)",
    }
    for name in reasons:  # word for word what indexing the file would say
        with pytest.raises(ClaraError) as read:
            read_document(folder / name)
        assert reasons[name] in str(read.value)
        assert str(preflight(folder / name).error) == str(read.value)
    no_model(monkeypatch)
    rc, out, err = run(capsys, "add", folder, "--index", index, "--json")
    report = json.loads(out)
    assert rc == 1 and report["failed"] == 4 and report["model_load_s"] == 0, err
    for name, reason in reasons.items():
        assert any(name in line and reason in line for line in err.splitlines()), (name, err)
    assert not (index / "default").exists()
    rc, _, err = run(capsys, "add", folder / "locked.pdf", "--password", "nope", "--index", index)
    assert rc == 1 and "wrong password for encrypted PDF" in err

    for bad, said in (
        (["--checkpoint", tmp_path / "nowhere"], "nowhere: no such checkpoint folder"),
        (["--chunk-tokens", "5000"], "chunk size 5000 must be between 1 and"),
        (["--overlap", "500"], "overlap 500 must be between 0 and the chunk size"),
    ):
        rc, out, err = run(capsys, "add", folder, "--index", index, *bad)
        assert rc == 1 and said in err and "failed" not in out, (bad, err)

    # a PDF whose first page is a scan but whose second has text needs the model: no verdict
    (folder / "mixed.pdf").write_bytes(make_pdf([None, "Text on the second page."]))
    assert preflight(folder / "mixed.pdf") is None


def test_names_in_the_other_unicode_form_or_with_hidden_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name stored decomposed (as macOS file names are) is found when typed composed, and
    the other way round; `list` and `show` print control and text-direction characters as
    escapes (they coloured the terminal and showed 'invoice_\\u202efdp.txt' as
    'invoice_txt.pdf')."""
    import numpy as np

    from indexing.store import ChunkRecord
    from tests.tiny import STORE_D, STORE_MANIFEST, STORE_N_MEM

    tree = tmp_path / "docs"
    tree.mkdir()
    names = [unicodedata.normalize("NFD", "가나다 메모.txt"), "esc\x1b[31mRED.txt", "invoice_\u202efdp.txt"]  # fmt: skip
    index = tmp_path / "index"
    with Collection.open(index, "default", manifest=STORE_MANIFEST, create=True) as col:
        for i, name in enumerate(names):
            (tree / name).write_text(f"file {i}\n")
            memories = np.random.default_rng(i).standard_normal((1, STORE_N_MEM, STORE_D))
            col.add_document(str((tree / name).resolve()), name, f"sha-{i}",
                             [ChunkRecord(f"text {i}", n_tokens=3)], memories)  # fmt: skip
    no_model(monkeypatch)
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, "show", "가나다 메모.txt", "--index", index)  # typed: composed
    assert rc == 0 and "text 0" in out, err
    rc, out, _ = run(capsys, "list", "--index", index)
    assert rc == 0 and "esc\\x1b[31mRED.txt" in out and "invoice_\\u202efdp.txt" in out
    assert "\x1b" not in out and "\u202e" not in out


def test_files_gone_from_a_folder_are_named_and_pruned(
    capsys, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """A deleted file stayed in the index for good, and `add` of its folder said nothing of
    it. A renamed or moved one was compressed again, and the old document stayed searched
    beside it (a docs repository's audit): it is the same document under its new name."""
    folder, index = tmp_path / "docs", tmp_path / "index"
    paths = write_corpus(folder, n=3)
    latin1 = folder / os.fsdecode(b"caf\xe9.txt")  # stored as text: 'caf\xe9.txt'
    latin1.write_text("A note on the cafe by the river, open every day but Monday.")
    args = ["--model", tiny_llama_dir, "--index", index, *CHUNKING]
    run(capsys, "add", folder, *args)
    before = docs_of(index)
    with Collection.open(index, "default", readonly=True) as col:
        first_id = col.find_by_path(str(paths[0].resolve())).id
    paths[0].rename(folder / "renamed.txt")
    (folder / "sub").mkdir()
    latin1.rename(folder / "sub" / os.fsdecode(b"caf\xe9 2.txt"))
    paths[1].unlink()
    rc, out, err = run(capsys, "add", folder, *args, "--json")
    report = json.loads(out)
    assert rc == 0 and report["moved"] == 2 and report["added"] == 0, report
    assert report["model_load_s"] == 0 and report["chunks"] == 0  # nothing compressed again
    assert report["gone"] == [str(paths[1].resolve())] and report["pruned"] == 0
    after = docs_of(index)
    assert after["renamed.txt"] == before["doc00.txt"] and "doc00.txt" not in after
    assert after["caf\\xe9 2.txt"] == before["caf\\xe9.txt"]
    with Collection.open(index, "default", readonly=True) as col:
        assert col.find_by_path(str((folder / "renamed.txt").resolve())).id == first_id
        (chunk_id, _), *_ = col.search_lexical("renamed", k=3)  # (its name is in the word
        assert col.chunks([chunk_id])[0].doc_id == first_id  # index's titles now)
    rc, out, err = run(capsys, "add", folder, *args)
    assert "1 document was indexed from files no longer there" in err
    assert "add --prune to remove them" in err
    rc, out, err = run(capsys, "add", folder, *args, "--prune")
    assert rc == 0 and "removed" in err
    assert set(docs_of(index)) == {"doc02.txt", "renamed.txt", "caf\\xe9 2.txt"}
    rc, out, err = run(capsys, "add", folder, *args)
    assert "no longer there" not in err


def after_the_first_file(monkeypatch, stop) -> None:
    """`Indexer.run` calls `stop()` once its first file is done (a Ctrl-C, a SIGTERM)."""
    from indexing.pipeline import FileResult, Indexer

    run_files = Indexer.run

    def run_then_stop(self, sources):
        for event in run_files(self, sources):
            yield event
            if isinstance(event, FileResult):
                stop()

    monkeypatch.setattr(Indexer, "run", run_then_stop)


def test_ctrl_c_during_add_says_what_is_kept(
    capsys, tmp_path: Path, tiny_llama_dir: Path, monkeypatch
) -> None:
    """Ctrl-C said only "interrupted": not that what was indexed stays, nor what to do."""
    folder, index = tmp_path / "docs", tmp_path / "index"
    write_corpus(folder, n=3)

    def ctrl_c():
        raise KeyboardInterrupt

    after_the_first_file(monkeypatch, ctrl_c)
    rc, _, err = run(capsys, "add", folder, "--model", tiny_llama_dir, "--index", index, *CHUNKING)
    assert rc == 130 and "the 1 file indexed in this run stay indexed" in err
    assert "run the same command again to go on" in err and len(docs_of(index)) == 1


def test_a_rerun_reads_no_file_whose_size_and_time_are_as_indexed(
    capsys, tmp_path: Path, tiny_llama_dir: Path, monkeypatch
) -> None:
    """Each re-run hashed every file of the library (a new file twice): 50 GB of PDFs meant
    50-100 GB read to find nothing changed (a scale audit)."""
    from indexing import pipeline

    folder, index = tmp_path / "docs", tmp_path / "index"
    paths = write_corpus(folder, n=3)
    args = ["--model", tiny_llama_dir, "--index", index, *CHUNKING, "--json"]
    run(capsys, "add", folder, *args)
    hashed: list[Path] = []
    sha = pipeline.file_sha256
    monkeypatch.setattr(pipeline, "file_sha256", lambda p: hashed.append(Path(p)) or sha(p))
    rc, out, _ = run(capsys, "add", folder, *args)
    assert rc == 0 and json.loads(out)["unchanged"] == 3 and hashed == []
    text = paths[0].read_text()
    paths[0].write_text(text[::-1])  # same size, new content, new time: read and replaced
    os.utime(paths[1], ns=(1, 1))  # new time, same content: read, found unchanged
    rc, out, _ = run(capsys, "add", folder, *args)
    report = json.loads(out)
    assert (report["replaced"], report["unchanged"]) == (1, 2)
    assert sorted(set(hashed)) == sorted(p.resolve() for p in paths[:2])
    # another size at the same time (`cp -p`/`rsync -t` of another file, a file system with
    # coarse times): read and replaced (a test-suite audit: size unchecked passed)
    before = paths[2].stat()
    paths[2].write_text(paths[2].read_text() + " One more sentence, written within the second.")
    os.utime(paths[2], ns=(before.st_atime_ns, before.st_mtime_ns))
    hashed.clear()
    rc, out, _ = run(capsys, "add", folder, *args)
    assert json.loads(out)["replaced"] == 1 and hashed == [paths[2].resolve()]
    rc, out, _ = run(capsys, "search", "written within", "--mode", "lexical", *args[:4], "--json")
    assert rc == 0 and "One more sentence, written within" in out


def test_a_docs_repository_leaves_out_what_git_ignores(
    capsys, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """A docs repository's audit: `add repo` indexed the .gitignore'd notes (the server then
    answered with their password) and node_modules; an --exclude or .gitignore line added later
    left the documents indexed without a word; 'repo/**/*.py' took none of the .py files it
    named (and said to "name one to see why")."""
    repo, index = tmp_path / "repo", tmp_path / "index"
    write_corpus(repo / "docs", n=2)
    (repo / ".git").mkdir()
    (repo / ".gitignore").write_text("secret-notes.md\n_build/\n")
    (repo / "secret-notes.md").write_text("The staging password is hunter2.")
    (repo / "_build").mkdir()
    (repo / "_build" / "index.txt").write_text("Built output of the docs.")
    (repo / "node_modules" / "lp").mkdir(parents=True)
    (repo / "node_modules" / "lp" / "README.md").write_text("A left-pad library.")
    (repo / "draft.md").write_text("A draft about the river and the mill.")
    args = ["--model", tiny_llama_dir, "--index", index, *CHUNKING]
    rc, _, err = run(capsys, "add", repo, *args)
    assert rc == 0 and set(docs_of(index)) == {"doc00.txt", "doc01.txt", "draft.md"}
    assert "left out 1 file and 2 folders that .gitignore files name" in err, err
    from clara.paths import show_path

    named = ", ".join(show_path(repo / n) for n in ["_build", "node_modules", "secret-notes.md"])
    assert f"): {named}; --no-ignore" in err  # (they were counted, not named)
    assert "--no-ignore reads them" in err
    (repo / ".gitignore").write_text("secret-notes.md\n_build/\ndraft.md\n")
    rc, out, err = run(capsys, "add", repo, *args, "--json")
    assert json.loads(out)["left_out"] == [str((repo / "draft.md").resolve())]
    rc, _, err = run(capsys, "add", repo, *args, "--exclude", "doc01.txt")
    assert "2 documents were indexed from files this run left out" in err, err
    assert "add --prune to remove them" in err
    assert set(docs_of(index)) == {"doc00.txt", "doc01.txt", "draft.md"}  # (still there)
    rc, out, err = run(capsys, "add", repo, *args, "--exclude", "doc01.txt", "--prune", "--json")
    assert json.loads(out)["pruned"] == 2  # (a printed remove command listed 5 and "...")
    assert set(docs_of(index)) == {"doc00.txt"}
    rc, _, err = run(capsys, "add", repo, *args, "--no-ignore", "--exclude", "doc01.txt")
    assert set(docs_of(index)) == {"doc00.txt", "draft.md", "secret-notes.md", "index.txt",
                                   "README.md"}  # fmt: skip
    (repo / "src").mkdir()
    (repo / "src" / "tool.py").write_text("def tool():\n    return 'the mill'\n")
    rc, _, err = run(capsys, "add", f"{repo}/**/*.py", *args)
    assert rc == 0 and "tool.py" in docs_of(index), err


def test_one_big_file_says_how_it_is_getting_on(capsys, monkeypatch, tmp_path, tiny_llama_dir):
    """A docs repository's audit: a run of one big file printed nothing until it was done (a
    3 MB log: hours), as the progress line came only when a file was."""
    from clara_cli import common

    monkeypatch.setattr(common, "LOG_EVERY_S", 0.0)
    big = write_corpus(tmp_path / "docs", n=1, paragraphs=12)[0]
    args = [
        "--model",
        tiny_llama_dir,
        "--index",
        tmp_path / "index",
        *CHUNKING,
        "--batch-size",
        "2",
    ]
    rc, _, err = run(capsys, "add", big, *args)
    assert rc == 0
    going = [line for line in err.splitlines() if line.startswith("indexing: 0/1 (0%)")]
    assert any("read to go (about" in line for line in going), err


def test_an_empty_folder_and_a_dangling_link_say_what_they_are(
    capsys, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """A docs repository's audit: `add emptydir` said only "0 added", and a glob matching a
    dangling link failed with an error naming the link's target, not the link."""
    empty, docs = tmp_path / "empty", tmp_path / "docs"
    empty.mkdir()
    write_corpus(docs, n=1)
    (docs / "dangling.md").symlink_to(tmp_path / "nowhere" / "x.md")
    args = ["--model", tiny_llama_dir, "--index", tmp_path / "index", *CHUNKING]
    rc, _, err = run(capsys, "add", empty, *args)
    assert rc == 0 and f"{empty}: no file in it that clara reads" in err
    rc, out, err = run(capsys, "add", f"{docs}/*.md", f"{docs}/*.txt", *args)
    assert rc == 0 and "nowhere" not in err and "1 broken link" in err, err


def test_a_move_is_found_beside_new_files_and_not_for_a_file_still_there(
    capsys, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """A review: a rename in a run that also compressed a new file was reported "unchanged",
    and a copy of a file whose name is not UTF-8 took that file's document (its stored,
    escaped name was looked for on disk, and not found)."""
    folder, index = tmp_path / "docs", tmp_path / "index"
    paths = write_corpus(folder, n=2)
    latin1 = folder / os.fsdecode(b"caf\xe9.txt")
    latin1.write_text("A note on the cafe by the river, open every day but Monday.")
    args = ["--model", tiny_llama_dir, "--index", index, *CHUNKING]
    run(capsys, "add", folder, *args)
    paths[0].rename(folder / "renamed.txt")
    (folder / "new.txt").write_text("A new page about the harbour and its lighthouse keeper.")
    rc, out, _ = run(capsys, "add", folder, *args, "--json")
    report = json.loads(out)
    assert rc == 0 and (report["moved"], report["added"]) == (1, 1), report
    copy = tmp_path / "elsewhere" / "copy.txt"
    copy.parent.mkdir()
    copy.write_bytes(latin1.read_bytes())
    rc, out, _ = run(capsys, "add", copy, *args, "--json")
    assert json.loads(out)["duplicate"] == 1
    assert "caf\\xe9.txt" in docs_of(index) and "copy.txt" not in docs_of(index)
