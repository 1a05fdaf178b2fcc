"""An index made by an earlier clara (or another checkpoint) after an upgrade: the refusal names
the exact `clara-index rebuild --recompress` that fixes it (index folder, collection, the
loaded --model/--checkpoint), and running that command as written fixes it. It offers to load
what built the index only when that is something else than what was loaded: after an upgrade
changed the default adapters, "load --model X without --checkpoint" is what was just run.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import httpx
import pytest

from clara.errors import IndexMismatchError
from indexing.manifest import DEFAULT_MODEL, Manifest
from tests.test_index_cli import CHUNKING, docs_of, no_model, run, two_checkpoints, write_corpus
from tests.test_server_harness import ServerProcess, add_documents

#: The fingerprint the shipped adapters of an earlier clara gave its collections.
EARLIER = "5c8ce09f42230938"


def command_in(message: str) -> list[str]:
    """The one `clara-index ...` command quoted in a message, as argv."""
    found = re.findall(r"`(clara-index [^`]*)`", message)
    assert len(found) == 1, message
    return shlex.split(found[0])


def as_if_built_by_an_earlier_clara(index: Path, collection: str) -> None:
    """Its manifest as an earlier clara's default adapters wrote it (another fingerprint)."""
    path = index / collection / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "fingerprint": EARLIER}))


def test_an_index_of_an_earlier_claras_default_adapters_names_the_rebuild_that_fixes_it(
    capsys, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """Before: "... re-index with `clara-index rebuild --recompress` (...), or load what built
    it: --model M without --checkpoint": no --index/--collection (so, run as written, it
    re-encoded $CLARA_HOME/indexes/default) and a second option that was the command just run."""
    folder, index = tmp_path / "docs", tmp_path / "my indexes"  # a space: quoted in the command
    write_corpus(folder, n=2)
    model = ["--model", tiny_llama_dir, "--index", index, "--collection", "notes"]
    assert run(capsys, "add", folder, *model, *CHUNKING)[0] == 0
    before = docs_of(index, "notes")
    as_if_built_by_an_earlier_clara(index, "notes")

    (folder / "new.txt").write_text("The cat sat on the mat.")
    for argv in (["add", folder, *CHUNKING], ["search", "cat"]):
        rc, _, err = run(capsys, *argv, *model)
        assert rc == 1 and err.count("\n") == 1, err
        assert f"index 'notes' was built with checkpoint {EARLIER}" in err
        assert "the default adapters of an earlier clara" in err
        assert "load what built it" not in err and "without --checkpoint" not in err
        assert command_in(err) == [
            "clara-index", "rebuild", "--recompress", "--index", str(index),
            "--collection", "notes", "--model", str(tiny_llama_dir.resolve()),
        ]  # fmt: skip
        assert shlex.join([str(index)]) in err  # quoted: it can be pasted into a shell

    rc, out, err = run(capsys, *command_in(err)[1:], "--json")  # the command, as written
    assert rc == 0 and json.loads(out)["recompressed"] == 2, err
    assert docs_of(index, "notes") == before  # same chunks, new vectors
    rc, out, err = run(capsys, "add", folder, *model, *CHUNKING)
    assert rc == 0 and "1 added, 2 unchanged" in out, err
    assert run(capsys, "search", "cat", *model)[0] == 0


def test_an_index_of_another_checkpoint_still_offers_to_load_it(
    capsys, monkeypatch, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """An explicit checkpoint built it: loading that one is a real option, kept; the rebuild
    command names the checkpoint loaded now (else it would re-encode with the default)."""
    built, other = two_checkpoints(tiny_llama_dir, tmp_path)
    folder, index = tmp_path / "docs", tmp_path / "index"
    write_corpus(folder, n=2)
    model = ["--model", tiny_llama_dir, "--index", index, *CHUNKING]
    assert run(capsys, "add", folder, *model, "--checkpoint", built)[0] == 0

    with monkeypatch.context() as m:
        no_model(m)  # nothing to index: the check reads the checkpoint's files only
        rc, _, err = run(capsys, "add", folder, *model, "--checkpoint", other)
    assert rc == 1 and "index 'default' was built with checkpoint" in err, err
    assert err.rstrip().endswith(f"or load what built it: --checkpoint {built}"), err
    (folder / "new.txt").write_text("The cat sat on the mat.")
    rc, _, loaded = run(capsys, "add", folder / "new.txt", *model, "--checkpoint", other)
    assert rc == 1 and loaded == err  # the same once the model is loaded
    argv = command_in(err)
    assert argv[:7] == ["clara-index", "rebuild", "--recompress", "--index", str(index),
                        "--collection", "default"]  # fmt: skip
    assert argv[-2:] == ["--checkpoint", str(other)]

    rc, out, err = run(capsys, *argv[1:], "--json")
    assert rc == 0 and json.loads(out)["recompressed"] == 2, err
    rc, out, _ = run(capsys, "add", folder, *model, "--checkpoint", other)
    assert rc == 0 and "1 added, 2 unchanged" in out


def manifest(**values) -> Manifest:
    return Manifest.from_dict({"fingerprint": "fp-old", "n_mem": 4, "hidden_size": 64, **values})


def refusal(stored: Manifest, loaded: Manifest, collection: str = "default") -> str:
    with pytest.raises(IndexMismatchError) as err:
        stored.check_matches(loaded, collection)
    return str(err.value)


def test_what_the_refusal_offers_to_load(tmp_path: Path) -> None:
    from clara.loader import DEFAULT_MODEL as LOADER_DEFAULT

    assert DEFAULT_MODEL == LOADER_DEFAULT  # what the command leaves out
    loaded = manifest(fingerprint="fp-new", base_model=DEFAULT_MODEL, base_fingerprint="w1")
    # The default model's default adapters, changed by an upgrade: nothing else to load.
    stored = manifest(base_model=DEFAULT_MODEL, base_fingerprint="w1")
    message = refusal(stored, loaded)
    assert "earlier clara" in message and "load what built it" not in message
    assert command_in(message) == [
        "clara-index", "rebuild", "--recompress", "--collection", "default"
    ]  # fmt: skip
    # The same name, other weights: still nothing else to load, and it says why.
    message = refusal(manifest(base_model=DEFAULT_MODEL, base_fingerprint="w0"), loaded)
    assert "other weights of smollm2-135m (base fingerprint w0, now w1)" in message
    assert "load what built it" not in message
    # Another base model built it: loading it is an option.
    message = refusal(manifest(base_model="/models/other"), loaded)
    assert message.endswith("or load what built it: --model /models/other without --checkpoint")
    # A checkpoint is loaded now: loading the default adapters instead is an option.
    message = refusal(stored, manifest(fingerprint="fp-new", base_model=DEFAULT_MODEL,
                                       checkpoint="/runs/s3 final"))  # fmt: skip
    assert message.endswith(f"or load what built it: --model {DEFAULT_MODEL} without --checkpoint")
    assert command_in(message)[-2:] == ["--checkpoint", "/runs/s3 final"]
    assert "'/runs/s3 final'" in message
    # A checkpoint built it.
    message = refusal(manifest(base_model=DEFAULT_MODEL, checkpoint="/runs/a"), loaded, "papers")
    assert message.endswith("or load what built it: --checkpoint /runs/a")
    assert command_in(message)[-2:] == ["--collection", "papers"]


def test_the_server_names_the_rebuild_of_its_own_index_folder(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """Before: clara-serve --index DIR stopped at startup (and answered 400 index_mismatch for
    another collection) saying `clara-index rebuild --recompress`, which re-encodes
    $CLARA_HOME/indexes/default, not DIR's collection."""
    from clara.checkpoint import load_clara

    cm = load_clara(tiny_llama_dir, None, dtype=None)
    index = tmp_path / "server index"
    add_documents(index, cm, [("river.txt", "The river runs past the old mill.")])
    add_documents(index, cm, [("cat.txt", "The cat sat on the mat.")], "notes")
    as_if_built_by_an_earlier_clara(index, "notes")
    want = ["clara-index", "rebuild", "--recompress", "--index", str(index),
            "--collection", "notes", "--model", str(tiny_llama_dir.resolve())]  # fmt: skip
    env = {"CLARA_HOME": str(tmp_path / "home")}

    args = ["--model", str(tiny_llama_dir), "--index", str(index)]
    with ServerProcess(*args, env=env, log=tmp_path / "ok.log").wait_ready() as server:
        body = {"messages": [{"role": "user", "content": "cat"}], "max_tokens": 1}
        r = httpx.post(f"{server.url}/v1/chat/completions", json={**body, "collection": "notes"})
        error = r.json()["error"]
        assert r.status_code == 400 and error["code"] == "index_mismatch", r.text
        assert "earlier clara" in error["message"] and "load what built it" not in error["message"]
        assert command_in(error["message"]) == want

    proc = ServerProcess(*args, "--collection", "notes", env=env, log=tmp_path / "stale.log")
    try:
        assert proc.wait_exit() == 1
    finally:
        proc.stop()
    lines = [x for x in proc.log().splitlines() if x.startswith("clara-serve: error:")]
    assert len(lines) == 1 and command_in(lines[0]) == want, proc.log()


def test_a_server_with_a_checkpoint_names_it_in_the_rebuild(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """Before: clara-serve --checkpoint C checked indexes against the model alone, so the
    rebuild it printed left out --checkpoint C (re-encoding with other adapters) and blamed
    an earlier clara for an index built without a checkpoint."""
    from clara.checkpoint import load_clara, save_checkpoint

    cm = load_clara(tiny_llama_dir, None, dtype=None)
    index = tmp_path / "index"
    add_documents(index, cm, [("cat.txt", "The cat sat on the mat.")], "notes")
    ckpt = save_checkpoint(load_clara(tiny_llama_dir, "fresh", dtype=None), tmp_path / "ckpt")
    args = ["--model", str(tiny_llama_dir), "--checkpoint", str(ckpt), "--index", str(index)]
    env = {"CLARA_HOME": str(tmp_path / "home")}
    with ServerProcess(*args, env=env, log=tmp_path / "server.log").wait_ready() as server:
        body = {"messages": [{"role": "user", "content": "cat"}], "max_tokens": 1}
        r = httpx.post(f"{server.url}/v1/chat/completions", json={**body, "collection": "notes"})
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "index_mismatch", r.text
    assert command_in(error["message"])[-2:] == ["--checkpoint", str(Path(ckpt).resolve())]
    assert "earlier clara" not in error["message"]
    assert error["message"].endswith("without --checkpoint"), error["message"]
