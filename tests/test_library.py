"""clara used as a Python library: what a program calling it directly (not over HTTP) meets.

A model belongs to the thread that loaded it; search hits feed the generator as they come;
paths are stored as found from any folder; a dropped writer frees its collection; mistakes are
`ClaraError`s that say what was wrong."""

from __future__ import annotations

import gc
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import clara  # noqa: F401  (first: OpenBLAS before mlx)
from clara.checkpoint import load_clara
from clara.errors import (
    ChunkNotFoundError,
    ClaraError,
    CollectionError,
    CollectionNotFoundError,
    DocumentNotFoundError,
    InvalidArgumentError,
    ModelThreadError,
)
from clara.generate import generate, stream_from_memory
from clara.prompt import text_prompt
from indexing.pipeline import FileResult, Indexer, IndexOptions
from indexing.store import ChunkRecord, Collection
from tests.tiny import STORE_D, STORE_MANIFEST, STORE_N_MEM


@pytest.fixture(scope="module")
def cm(tiny_llama_dir):
    return load_clara(tiny_llama_dir, "fresh", dtype=None)


def _on_a_thread(fn):
    """Run `fn` on a new thread: (its result, the exception it raised)."""
    out: list = [None, None]

    def run():
        try:
            out[0] = fn()
        except BaseException as exc:  # noqa: BLE001  (handed back to the test)
            out[1] = exc

    t = threading.Thread(target=run, name="app-thread")
    t.start()
    t.join(60)
    return out


def test_a_model_refuses_work_from_another_thread(cm):
    """Two threads sharing a model switched each other's adapters: wrong query vectors and
    answers, without an error. Work from another thread is now refused, saying why."""
    question = ["where is paris?"]
    alone = np.array(cm.encode_queries(question))
    _, exc = _on_a_thread(lambda: cm.encode_queries(question))
    assert isinstance(exc, ModelThreadError) and isinstance(exc, ClaraError)
    assert "loaded on thread 'MainThread' and called from 'app-thread'" in str(exc)
    _, exc = _on_a_thread(lambda: cm.compress(["Paris is the capital of France."]))
    assert isinstance(exc, ModelThreadError)
    prompt = text_prompt(cm, "Where is Paris?", None)
    _, exc = _on_a_thread(lambda: list(generate(cm, prompt, adapter=None, max_tokens=2)))
    assert isinstance(exc, ModelThreadError)
    # refused before they change anything (fit_memory_center had replaced the center first)
    from clara.lora import merge_adapter

    for work in (lambda: cm.fit_memory_center([[1, 2, 3]]), cm.pack_base_weights,
                 cm.release_packed, lambda: merge_adapter(cm, "generator")):  # fmt: skip
        _, exc = _on_a_thread(work)
        assert isinstance(exc, ModelThreadError), work
    np.testing.assert_array_equal(np.array(cm.encode_queries(question)), alone)  # still fine


def test_search_hits_memories_feed_the_generator(cm):
    """`SearchHit.memory` is NumPy; the generator took only MLX arrays (a TypeError from
    inside mx.concatenate)."""
    memory = cm.compress(["Paris is the capital of France."])[0]
    as_numpy = np.array(memory)

    def answer(block):
        chunks = stream_from_memory(cm, "Where is Paris?", [block], max_tokens=4)
        return "".join(c.text for c in chunks)

    assert answer(as_numpy) == answer(memory)


def test_an_unknown_adapter_is_a_clara_error(cm):
    prompt = text_prompt(cm, "Where is Paris?", None)
    with pytest.raises(ClaraError, match="unknown adapter 'nope'"):
        list(generate(cm, prompt, adapter="nope", max_tokens=2))


def test_relative_paths_are_stored_as_found_from_any_folder(cm, tmp_path, monkeypatch):
    """A library call with a relative path stored it as given: a later `clara-index add` of the
    same folder from elsewhere added every file again, and searches found each twice."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Paris is the capital of France. " * 5)
    monkeypatch.chdir(tmp_path)
    with Collection.open(tmp_path / "index", "lib", dict(cm.manifest()), create=True) as col:
        options = IndexOptions(32, 0, batch_size=4)
        first = [
            e for e in Indexer(cm, col, options).run(["docs/a.txt"]) if isinstance(e, FileResult)
        ]
        assert first[0].status == "added"
        assert col.list_documents()[0].path == str(docs / "a.txt")
        again = [
            e for e in Indexer(cm, col, options).run([docs / "a.txt"]) if isinstance(e, FileResult)
        ]
        assert again[0].status == "unchanged" and len(col.list_documents()) == 1


def _store(tmp_path: Path) -> Collection:
    return Collection.open(tmp_path, "main", manifest=STORE_MANIFEST, create=True)


def test_a_writer_dropped_without_close_frees_the_collection(tmp_path):
    _store(tmp_path).close()

    def forget():
        Collection.open(tmp_path, "main")  # no close(): an exception in the caller's code

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # (its open files, as Python says)
        forget()
        gc.collect()
    with Collection.open(tmp_path, "main") as col:  # was "being written by pid <this one>"
        assert col.stats()["documents"] == 0


def test_library_mistakes_are_clara_errors_that_say_what_was_wrong(tmp_path):
    with pytest.raises(InvalidArgumentError, match="collection name '../x'") as bad:
        Collection.open(tmp_path, "../x", readonly=True)
    assert isinstance(bad.value, ValueError)  # (as before, for callers catching that)
    with pytest.raises(InvalidArgumentError, match="needs the model's manifest"):
        Collection.open(tmp_path, "new", create=True)
    col = _store(tmp_path)
    rows = [ChunkRecord("Paris is in France", 1, 1, 5)]
    vectors = np.ones((1, STORE_N_MEM, STORE_D), np.float32)
    col.add_document("/d/a.txt", "a.txt", "sha-a", rows, vectors)
    vector = vectors[0]
    with pytest.raises(InvalidArgumentError, match="retrieval mode"):
        col.retrieve("paris", vector, mode="bogus")
    with pytest.raises(InvalidArgumentError, match="needs the question's query vector"):
        col.retrieve("paris", None)
    with pytest.raises(InvalidArgumentError, match="k and rerank must be 0 or more"):
        col.retrieve("paris", vector, k=-1)
    with pytest.raises(InvalidArgumentError, match="k and rerank must be 0 or more"):
        col.retrieve("paris", vector, rerank=-5)  # (was accepted)
    # search and retrieve agree on k (search's k=0 and k=-1 each gave a hit)
    assert col.search(vector, k=0) == [[]] and len(col.search(vector, k=1)[0]) == 1
    with pytest.raises(InvalidArgumentError, match="k and rerank must be 0 or more"):
        col.search(vector, k=-1)
    # an unknown chunk's memory: a bare KeyError before (still one, for callers catching it)
    with pytest.raises(ChunkNotFoundError, match=r"no chunk\(s\) \[1000000000\]") as chunk:
        col.memories([10**9])
    assert isinstance(chunk.value, KeyError)
    with pytest.raises(InvalidArgumentError, match="query must be"):
        col.retrieve("paris", np.zeros((3, 3)), mode="dense")
    with pytest.raises(DocumentNotFoundError) as missing:
        col.remove_document("doc-nothere")
    assert not str(missing.value).startswith(("'", '"'))  # (KeyError's str quoted it)
    col.close()
    col.close()  # twice: fine
    with pytest.raises(CollectionError, match="collection 'main' is closed: open it again"):
        col.retrieve("paris", vector)  # was sqlite3.ProgrammingError


def test_a_reader_of_a_deleted_collection_is_told_so(tmp_path):
    """A library audit: stats() of a collection another process deleted was a bare
    FileNotFoundError."""
    from indexing.store import delete_collection

    _store(tmp_path).close()
    reader = Collection.open(tmp_path, "main", readonly=True)
    delete_collection(tmp_path, "main")
    with pytest.raises(CollectionNotFoundError, match="collection 'main' was deleted"):
        reader.stats()
    reader.close()


def test_one_string_where_a_list_is_asked_for_is_refused(cm, tmp_path):
    """A library audit: a string was iterated as its characters: `compress("hello world")`
    made 11 memories, `Indexer.run("docs/a.txt")` failed once per character, and
    `iter_inputs("docs")` walked "/" first."""
    from indexing.readers import iter_inputs, read_document

    with pytest.raises(InvalidArgumentError, match=r"expected a list of texts, got one str"):
        cm.compress("hello world")
    with pytest.raises(InvalidArgumentError, match=r"pass it in a list, \[text\]"):
        cm.encode_queries("hello")
    with pytest.raises(InvalidArgumentError, match="expected a list of paths"):
        iter_inputs(str(tmp_path))
    with pytest.raises(InvalidArgumentError, match="expected a list of sources"):
        with Collection.open(tmp_path / "i", "lib", dict(cm.manifest()), create=True) as col:
            next(Indexer(cm, col, IndexOptions(32, 0, batch_size=4)).run(tmp_path / "a.txt"))
    with pytest.raises(InvalidArgumentError, match="the path to read is empty"):
        read_document("")  # (was "`.`: is a directory")


def test_an_indexer_over_a_reader_is_refused_before_any_work(cm, tmp_path):
    """It compressed the first batch (seconds of a real model) before the write failed."""
    Collection.open(tmp_path, "lib", dict(cm.manifest()), create=True).close()
    with Collection.open(tmp_path, "lib", readonly=True) as reader:
        with pytest.raises(CollectionError, match="open read-only"):
            Indexer(cm, reader)


def test_vectors_from_the_model_may_be_read_on_another_thread(cm):
    """A library audit: the arrays encode_queries and compress returned were not computed
    yet, and MLX computes only on the thread that made them: the worker's own example,
    `await worker.call(lambda cm: cm.encode_queries([...]))`, handed the event loop an array
    it could not read ("There is no Stream(cpu, 0) in current thread")."""
    queries = cm.encode_queries(["where is paris?"])
    memories = cm.compress(["Paris is the capital of France."])
    read, exc = _on_a_thread(lambda: (np.array(queries), np.array(memories)))
    assert exc is None, exc
    assert read[0].shape == (1, cm.n_mem, cm.hidden_size) and np.isfinite(read[1]).all()


def test_sampling_mistakes_are_invalid_argument_errors(cm):
    """They were the base ClaraError: `except ValueError`, as for Python's own, missed them."""
    memory = cm.compress(["Paris is the capital of France."])[0]
    for bad in ({"temperature": -1}, {"top_p": 0}):
        with pytest.raises(InvalidArgumentError, match="temperature must be >= 0"):
            list(stream_from_memory(cm, "Where?", [memory], max_tokens=2, **bad))
    with pytest.raises(InvalidArgumentError, match="max_tokens must be >= 0, got -1"):
        list(stream_from_memory(cm, "Where?", [memory], max_tokens=-1))
    with pytest.raises(InvalidArgumentError, match="memory block has shape"):
        list(stream_from_memory(cm, "Where?", [np.zeros((2, 3))], max_tokens=2))


def test_a_model_has_a_short_repr(cm):
    text = repr(cm)
    assert text.startswith("ClaraModel(") and "\n" not in text and len(text) < 300


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path):
    """The README's "From Python" example, as written, on the default model."""
    import re
    import subprocess
    import sys

    from clara.gguf import prepare_default_model

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### From Python") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "notes.md").write_text(
        "Paris is the capital of France. The Eiffel Tower was finished in 1889 for the World Fair."
    )
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(prepare_default_model().parent)  # the converted default model
    env = {**os.environ, "CLARA_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"added {tmp_path / 'notes.md'} "
    assert lines[1].endswith(
        "notes.md: Paris is the capital of France. The Eiffel Tower was finishe"
    )


def test_generate_holds_an_answer_to_a_json_schema(cm):
    """`generate(..., grammar=json_grammar(schema))`: the library's structured output (the
    server's response_format); a schema it cannot use is an InvalidArgumentError."""
    import json

    from clara.structured import json_grammar

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}  # fmt: skip
    prompt = text_prompt(cm, "Is it?", None)
    chunks = list(generate(cm, prompt, adapter=None, max_tokens=16, grammar=json_grammar(schema)))
    assert chunks[-1].finish_reason == "stop"
    assert isinstance(json.loads("".join(c.text for c in chunks))["ok"], bool)
    with pytest.raises(InvalidArgumentError, match="minLength"):
        json_grammar({"type": "string", "minLength": "x"})


def test_without_llguidance_a_json_answer_says_how_to_install_it(monkeypatch):
    """An upgrade audit: code updated without `make install` (no llguidance) answered each
    JSON request with a bare 500 "internal server error"."""
    import sys

    from clara import structured
    from clara_cli.http import to_api_error

    monkeypatch.setitem(sys.modules, "llguidance", None)  # (its import fails, as uninstalled)
    with pytest.raises(ClaraError) as failed:
        structured.json_grammar({"type": "object"})
    said = to_api_error(failed.value)
    assert said.status == 500 and "pip install 'llguidance" in said.message


def test_a_schema_past_the_grammar_limits_is_refused_not_answered_as_invalid_json(cm):
    """A review: a 52-byte pattern took 1.1 s per token for the whole batch, and a matcher
    that failed mid-answer forced end of sequence: invalid JSON with finish_reason "stop".
    Such a grammar is held to limits and refused before its answer starts; a schema over
    64 KiB before it is compiled."""
    from clara.structured import GrammarError, check_grammar, json_grammar

    slow = json_grammar({"type": "string", "pattern": "^(a{1000}){1000}$"})
    try:  # (the default model's 49k tokens: refused at once; this tiny model's: as it goes)
        check_grammar(cm.tokenizer, slow)
        prompt = text_prompt(cm, "Say a", None)
        with pytest.raises(GrammarError, match="within clara's limits"):
            list(generate(cm, prompt, adapter=None, max_tokens=64, grammar=slow))
    except GrammarError as exc:
        assert "within clara's limits" in str(exc)
    with pytest.raises(GrammarError, match="at most"):
        json_grammar({"enum": [str(i) for i in range(20000)]})
    from clara_cli.http import to_api_error  # (a 400: the SDKs retried its 500 thrice)

    said = to_api_error(GrammarError("too long"))
    assert (said.status, said.code, said.param) == (400, "invalid_schema", "response_format")


def test_a_hub_id_in_the_local_cache_is_loaded_without_asking_the_hub(tiny_llama_dir, tmp_path):
    """An air-gapped audit: a hub id always asked huggingface.co first; behind a proxy that
    accepts and never answers, `clara-index add --model org/name` hung with no word. A model
    in the local hub cache is used without a network request."""
    import shutil
    import socket
    import subprocess
    import sys

    snapshot = tmp_path / "hub" / "models--local--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_llama_dir, snapshot)
    (tmp_path / "hub" / "models--local--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--local--tiny" / "refs" / "main").write_text("0" * 40)
    dead = socket.socket()  # a proxy that takes connections and never answers
    dead.bind(("127.0.0.1", 0))
    dead.listen(8)
    proxy = f"http://127.0.0.1:{dead.getsockname()[1]}"
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HTTPS_PROXY": proxy,
           "HTTP_PROXY": proxy, "NO_PROXY": "", "HF_HUB_OFFLINE": "0"}  # fmt: skip
    code = "import clara.loader as l; print(l.resolve_model_path('local/tiny')[0])"
    try:
        found = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        dead.close()
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == snapshot
