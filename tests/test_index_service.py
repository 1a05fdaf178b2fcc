"""`clara-index serve` against a real uvicorn process, driven by the official openai SDK:
files, vector stores, queued compression jobs (with failures and their reasons), search,
OpenAI-shaped errors, the API key, and clara-serve answering from what the service indexed.
The 503-while-loading and resume-after-restart checks run the app in-process.

A fresh model's query and compressor adapters are equal, so a chunk's own text finds it with
cosine 1, even with a tiny random model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import threading
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from clara.errors import CollectionLockedError
from clara.retrieval import Fusion
from indexing import cli as index_cli
from indexing.service.app import ServiceSettings
from indexing.service.handler import IndexService
from indexing.service.state import FileRecord, Link, Registry, StoreRecord
from indexing.store import Collection
from tests.test_readers import make_pdf, make_pdf_bomb
from tests.test_server_harness import ROOT, ServerProcess, lock_held_elsewhere, metric

API_KEY = "index-key"
WATER = "Water boils at one hundred degrees Celsius at sea level and freezes at zero degrees."
TRAIN = "The train leaves the station at seven o'clock and arrives in the city two hours later."
LIMIT_MB = 0.25


class ServiceProcess(ServerProcess):
    """`python -m indexing.cli serve ...` on a free port (waits like ServerProcess)."""

    MODULE = ("indexing.cli", "serve")
    NAME = "clara-index serve"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service") / "index"


@pytest.fixture(scope="module")
def service(root: Path, tiny_llama_dir: Path):
    with ServiceProcess(
        "--model", str(tiny_llama_dir), "--index", str(root), "--api-key", API_KEY,
        "--max-upload-mb", str(LIMIT_MB), "--log-level", "warning",
        log=root.parent / "service.log", env={"CLARA_HOME": str(root.parent / "home")},
    ) as proc:  # fmt: skip
        yield proc.wait_ready()  # (stopped on leaving, ready or not)


@pytest.fixture(scope="module")
def client(service: ServiceProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key=API_KEY, max_retries=0)


def upload(client: openai.OpenAI, name: str, data: bytes | str):
    data = data.encode() if isinstance(data, str) else data
    return client.files.create(file=(name, data), purpose="assistants")


def attach(client: openai.OpenAI, store: str, file_id: str, **kw):
    return client.vector_stores.files.create_and_poll(
        file_id=file_id, vector_store_id=store, poll_interval_ms=50, max_wait_seconds=120, **kw
    )


def test_files_upload_list_retrieve_delete(client: openai.OpenAI, root: Path) -> None:
    f = upload(client, "../notes.md", "# Notes\n\n" + WATER)
    assert f.object == "file" and f.id.startswith("file-") and f.purpose == "assistants"
    assert f.filename == "notes.md" and f.bytes == len("# Notes\n\n" + WATER)
    assert (root / "uploads" / f.id / "notes.md").read_text().endswith(WATER)
    assert client.files.retrieve(f.id) == f
    assert f.id in [x.id for x in client.files.list()]
    assert f.id in [x.id for x in client.files.list(purpose="assistants")]
    assert f.id not in [x.id for x in client.files.list(purpose="user_data")]
    deleted = client.files.delete(f.id)
    assert (deleted.id, deleted.deleted) == (f.id, True)
    assert not (root / "uploads" / f.id).exists()
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_an_upload_whose_media_type_is_written_in_capitals(service, client) -> None:
    """Media types are case-insensitive (RFC 9110): Multipart/Form-Data was a 400. A body
    cut off is said to be (a protocol audit)."""
    body = (
        b"--XX\r\nContent-Disposition: form-data; name=purpose\r\n\r\nassistants\r\n"
        b'--XX\r\nContent-Disposition: form-data; name=file; filename="caps.txt"\r\n\r\n'
        + WATER.encode() + b"\r\n--XX--\r\n"
    )  # fmt: skip
    r = httpx.post(
        f"{service.url}/v1/files", content=body, timeout=30,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "Multipart/Form-Data; boundary=XX"},
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["filename"] == "caps.txt", r.text
    client.files.delete(r.json()["id"])
    r = httpx.post(  # cut off in the file's part: it was only "missing 'file'"
        f"{service.url}/v1/files", content=body[: len(body) - 30], timeout=30,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "multipart/form-data; boundary=XX"},
    )  # fmt: skip
    assert r.status_code == 400 and "was the upload cut off?" in r.text, r.text


def test_an_upload_whose_content_is_gone_from_disk_is_a_404(client, root: Path) -> None:
    """Its content was a 500 and a traceback in the log (an operator's audit)."""
    f = upload(client, "gone.txt", WATER)
    (root / "uploads" / f.id / "gone.txt").unlink()
    with pytest.raises(openai.NotFoundError) as info:
        client.files.content(f.id)
    assert info.value.code == "file_content_missing" and "upload it again" in info.value.message
    client.files.delete(f.id)


def test_a_long_non_ascii_file_name_is_shortened_by_bytes(client: openai.OpenAI, root: Path):
    """File systems allow 255 bytes a name: 100 CJK characters are 300. The name is cut to
    whole characters, its extension kept, and nothing is left behind."""
    f = upload(client, "猫" * 100 + ".md", "# Cats\n\n" + WATER)
    assert f.filename.endswith(".md") and f.filename.startswith("猫")
    assert len(f.filename.encode()) <= 200
    assert (root / "uploads" / f.id / f.filename).read_text().endswith(WATER)
    assert not list((root / "uploads").glob(".file-*.tmp"))
    client.files.delete(f.id)


def test_names_with_hidden_characters_are_cleaned_or_refused(
    service: ServiceProcess, client: openai.OpenAI, root: Path
) -> None:
    """Before (a security audit): control characters reached the server's log and
    `clara-index list` (terminal escapes), a right-to-left override disguised a name, and a
    vector store named 'docs\\n' was made (Python's `$` lets a final newline through)."""
    f = upload(client, "\t\x1b[31mred\u202etxt.exe", WATER)
    assert f.filename.endswith("_[31mred_txt.exe")  # (httpx sends the tab as '%09')
    assert f.filename.isprintable() and (root / "uploads" / f.id / f.filename).exists()
    client.files.delete(f.id)
    # a right-to-left mark is part of a Hebrew name (it disguises nothing); a Mac's
    # decomposed name is kept composed
    marked = upload(client, "דוח\u200f (2).txt", WATER)
    nfd = upload(client, unicodedata.normalize("NFD", "회의록.txt"), WATER)
    assert (marked.filename, nfd.filename) == ("דוח\u200f (2).txt", "회의록.txt")
    for x in (marked, nfd):
        client.files.delete(x.id)
    r = httpx.post(f"{service.url}/v1/vector_stores", json={"name": "docs\n"},
                   headers={"Authorization": f"Bearer {API_KEY}"})  # fmt: skip
    assert r.status_code == 200 and r.json()["id"] != "docs\n"  # a name of its own, made usable
    assert not (root / "docs\n").exists()
    client.vector_stores.delete(r.json()["id"])


def test_file_names_are_read_as_their_clients_wrote_them(
    service: ServiceProcess, client: openai.OpenAI
) -> None:
    """.NET's HttpClient sends `filename` in ASCII and the real name as `filename*`; browsers
    write a name's '"' as %22. Before: 'file.txt' and 'quote%22and.txt' were stored, and a
    part with `filename*` alone was 'missing required parameter: file'."""

    def post(disposition: str) -> httpx.Response:
        body = (f'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
                f"--B\r\nContent-Disposition: form-data; {disposition}\r\n"
                f"Content-Type: text/plain\r\n\r\n{WATER}\r\n--B--\r\n").encode()  # fmt: skip
        headers = {"Authorization": f"Bearer {API_KEY}",
                   "Content-Type": "multipart/form-data; boundary=B"}  # fmt: skip
        return httpx.post(f"{service.url}/v1/files", content=body, headers=headers)

    both = post('name="file"; filename="file.txt"; filename*=UTF-8\'\'%ED%9A%8C%EC%9D%98.txt')
    quoted = post('name="file"; filename="quote%22and.txt"')
    assert [both.json()["filename"], quoted.json()["filename"]] == ["회의.txt", 'quote"and.txt']
    for r in (both, quoted):
        client.files.delete(r.json()["id"])
    alone = post("name=\"file\"; filename*=UTF-8''%ED%9A%8C%EC%9D%98.txt")
    assert alone.status_code == 400 and "filename=" in alone.json()["error"]["message"]


def test_file_batches_content_and_updates_with_the_sdk(client: openai.OpenAI) -> None:
    """The SDK calls of OpenAI's file_search guide beyond single files: a batch uploaded and
    polled to completion, its files listed, a file's bytes read back, a store renamed, a
    file's attributes replaced; what clara cannot do (expiry) is a 400, not silently dropped."""
    vs = client.vector_stores.create(name="batched")
    batch = client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=vs.id, files=[("water.txt", WATER.encode()), ("train.txt", TRAIN.encode())],
        poll_interval_ms=50,
    )  # fmt: skip
    assert batch.object == "vector_store.files_batch" and batch.id.startswith("vsfb_")
    assert batch.status == "completed" and batch.vector_store_id == vs.id
    assert (batch.file_counts.completed, batch.file_counts.total) == (2, 2)
    assert client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=vs.id) == batch
    files = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=vs.id).data
    assert sorted(f.status for f in files) == ["completed", "completed"]
    hits = client.vector_stores.search(vs.id, query="When does the train leave?").data
    assert hits[0].filename == "train.txt"

    water = next(f for f in files if client.files.retrieve(f.id).filename == "water.txt")
    assert client.files.content(water.id).read() == WATER.encode()
    updated = client.vector_stores.files.update(
        file_id=water.id, vector_store_id=vs.id, attributes={"topic": "physics"}
    )
    assert updated.attributes == {"topic": "physics"}
    renamed = client.vector_stores.update(vs.id, name="Batched docs", metadata={"team": "a"})
    assert (renamed.id, renamed.name, renamed.metadata) == (vs.id, "Batched docs", {"team": "a"})
    assert client.vector_stores.retrieve(vs.id).name == "Batched docs"

    with pytest.raises(openai.BadRequestError) as e:  # nothing honoured silently
        client.vector_stores.update(vs.id, expires_after={"anchor": "last_active_at", "days": 1})
    assert e.value.body["param"] == "expires_after"
    assert e.value.body["code"] == "unsupported_parameter"  # (OpenAI's: clients branch on it)
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.create(
            name="expiring", expires_after={"anchor": "last_active_at", "days": 1}
        )
    assert "expiring" not in [s.id for s in client.vector_stores.list()]
    with pytest.raises(openai.NotFoundError) as e:  # one wrong id: no batch, nothing attached
        client.vector_stores.file_batches.create(vs.id, file_ids=[water.id, "file-missing"])
    assert e.value.body["param"] == "file_ids"
    cancelled = client.vector_stores.file_batches.cancel(batch.id, vector_store_id=vs.id)
    assert cancelled.status == "completed"  # nothing left to stop: finished files stay
    client.vector_stores.delete(vs.id)


def test_vector_store_jobs_search_and_removal(client: openai.OpenAI, root: Path) -> None:
    vs = client.vector_stores.create(name="papers", metadata={"team": "physics"})
    assert (vs.id, vs.name, vs.object, vs.status) == (
        "papers",
        "papers",
        "vector_store",
        "completed",
    )
    assert (root / "papers" / "manifest.json").exists()  # a clara collection
    water = upload(client, "water.txt", WATER)
    train = upload(client, "train.md", "# Trains\n\n" + TRAIN)

    job = client.vector_stores.files.create(vector_store_id="papers", file_id=water.id)
    assert job.status in ("in_progress", "completed") and job.vector_store_id == "papers"
    done = attach(client, "papers", water.id)
    assert done.status == "completed" and done.last_error is None and done.usage_bytes > 0
    assert done.chunking_strategy.type == "static"
    # doc_max_tokens (256) less the room kept for the chunk's context line
    assert done.chunking_strategy.static.max_chunk_size_tokens == 224
    static = {"type": "static", "static": {"max_chunk_size_tokens": 64, "chunk_overlap_tokens": 8}}
    done = attach(
        client, "papers", train.id, attributes={"topic": "rail"}, chunking_strategy=static
    )
    assert done.status == "completed" and done.attributes == {"topic": "rail"}
    assert done.chunking_strategy.static.max_chunk_size_tokens == 64
    # the file's content as indexed, chunk by chunk (the route was missing: a 404)
    parts = list(client.vector_stores.files.content(file_id=train.id, vector_store_id="papers"))
    assert parts and all(p.type == "text" for p in parts)
    assert " ".join(TRAIN.split()) in " ".join(" ".join(p.text for p in parts).split())
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.content(file_id="file-0", vector_store_id="papers")
    # idle again, the service gives the collection's writer lock back (clara-index may write)
    from indexing.durable import WriterLock

    deadline = time.monotonic() + 10
    while True:
        try:
            WriterLock(root / "papers", "papers").release()
            break
        except CollectionLockedError:
            assert time.monotonic() < deadline, "the service kept the writer lock while idle"
            time.sleep(0.1)

    store = client.vector_stores.retrieve("papers")
    assert (store.file_counts.completed, store.file_counts.total) == (2, 2)
    assert store.metadata == {"team": "physics"} and store.usage_bytes > 0
    assert "papers" in [s.id for s in client.vector_stores.list()]
    listed = client.vector_stores.files.list(vector_store_id="papers")
    assert {f.id for f in listed} == {water.id, train.id}
    assert [f.id for f in client.vector_stores.files.list("papers", filter="failed")] == []

    page = client.vector_stores.search("papers", query=WATER, max_num_results=5)
    assert page.search_query == [WATER] and len(page.data) == 2
    top = page.data[0]
    assert (top.file_id, top.filename) == (water.id, "water.txt")
    assert top.content[0].type == "text" and top.content[0].text == WATER
    # hybrid (the default): first in both rankings (1/61 + 1/61 at k=60)
    assert top.attributes["retrieval_mode"] == "hybrid"
    assert top.attributes["rank_dense"] == top.attributes["rank_lexical"] == 1
    both = Fusion().score({"dense": 1, "lexical": 1})
    assert top.score == pytest.approx(both, abs=1e-5) and page.data[1].score < top.score
    dense = client.vector_stores.search(
        "papers", query=WATER, max_num_results=5, extra_body={"retrieval_mode": "dense"}
    )
    top = dense.data[0]
    assert top.attributes["retrieval_mode"] == "dense" and "rank_lexical" not in top.attributes
    assert top.score == pytest.approx(1.0, abs=1e-3) and dense.data[1].score < top.score
    lexical = client.vector_stores.search(
        "papers", query="train timetable", extra_body={"retrieval_mode": "lexical"}
    )
    assert [r.file_id for r in lexical.data] == [train.id]  # only it has the words
    weights = {"hybrid_search": {"embedding_weight": 2.0, "text_weight": 0.0}}
    weighted = client.vector_stores.search("papers", query=WATER, ranking_options=weights)
    k = Fusion().k  # dense ranks 1 and 2 count, at weight 2; words not at all
    assert [r.score for r in weighted.data] == pytest.approx([2 / (k + 1), 2 / (k + 2)], abs=1e-5)
    assert "page_start" not in top.attributes  # plain text: no pages made up
    assert str(top.attributes["document_id"]).startswith("doc-")
    rail = client.vector_stores.search("papers", query=TRAIN, max_num_results=1).data[0]
    assert rail.file_id == train.id and rail.attributes["topic"] == "rail"
    high = {"score_threshold": 0.999}
    dense = {"retrieval_mode": "dense"}
    found = client.vector_stores.search(
        "papers", query=WATER, ranking_options=high, extra_body=dense
    )
    assert len(found.data) == 1
    for body, param in [  # (a fused score's scale is its own: 0.9 silently found nothing)
        ({"ranking_options": high}, "ranking_options.score_threshold"),
        ({"rewrite_query": True}, "rewrite_query"),
    ]:
        with pytest.raises(openai.BadRequestError) as err:
            client.vector_stores.search("papers", query=WATER, **body)
        assert err.value.body["param"] == param
        assert err.value.body["code"] == "unsupported_value"  # (OpenAI's: clients branch)
    # attribute filters (an R2R user's audit: a 400, "not supported here"), on the upload's
    # own attributes and clara's (filename): the water text is searched for, the rail file found
    rail_only = {"type": "eq", "key": "topic", "value": "rail"}
    for filters in (rail_only, {"type": "in", "key": "filename", "value": ["train.md"]}):
        found = client.vector_stores.search("papers", query=WATER, filters=filters).data
        assert found and {h.file_id for h in found} == {train.id}, filters
    none = {"type": "and", "filters": [rail_only, {"type": "eq", "key": "topic", "value": "x"}]}
    assert client.vector_stores.search("papers", query=WATER, filters=none).data == []
    with pytest.raises(openai.BadRequestError) as err:
        client.vector_stores.search("papers", query=WATER, filters={"type": "like", "key": "a"})
    assert err.value.body["param"] == "filters.type" and "'like'" in err.value.message
    # where inside the filter, without pydantic's union tags (it said
    # 'filters.and.filters.[0].eq.value'), and a filter too deep is told so (it was told that
    # its type was unknown)
    deep = {"type": "eq", "key": "a", "value": 1}
    for _ in range(3):
        deep = {"type": "and", "filters": [deep]}
    for filters, param, says in [
        ({"type": "and", "filters": [{"type": "eq", "key": "a", "value": [1]}]},
         "filters.filters.[0].value", "'eq' compares with a string, a number or a boolean"),
        (deep, "filters.filters.[0].filters.[0].filters.[0]", "nest 2 levels deep at most"),
    ]:  # fmt: skip
        with pytest.raises(openai.BadRequestError) as err:
            client.vector_stores.search("papers", query=WATER, filters=filters)
        assert err.value.body["param"] == param and says in err.value.message, err.value.body

    removed = client.vector_stores.files.delete(file_id=water.id, vector_store_id="papers")
    assert (removed.id, removed.deleted, removed.object) == (
        water.id, True, "vector_store.file.deleted",
    )  # fmt: skip
    hits = client.vector_stores.search("papers", query=WATER).data
    assert [h.file_id for h in hits] == [train.id]
    assert client.files.retrieve(water.id).id == water.id  # the upload stays
    client.files.delete(train.id)  # deleting a file removes it from every store
    assert client.vector_stores.search("papers", query=TRAIN).data == []

    gone = client.vector_stores.delete("papers")
    assert (gone.id, gone.deleted, gone.object) == ("papers", True, "vector_store.deleted")
    assert not (root / "papers").exists()
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve("papers")


def test_detach_after_a_restart_elsewhere_removes_the_chunks(tiny_llama_dir, tmp_path) -> None:
    """A service started with a relative --index stores the upload's path relative to where
    it ran; restarted with the absolute path, detaching the file still removes its chunks
    (found by the document the job recorded, not by that path)."""
    idx = tmp_path / "index"

    def start(index: str) -> tuple[ServiceProcess, openai.OpenAI]:
        proc = ServiceProcess(
            "--model", str(tiny_llama_dir), "--index", index, "--api-key", API_KEY,
            "--log-level", "warning", log=tmp_path / "service.log",
            env={"CLARA_HOME": str(tmp_path / "home")},
        )  # fmt: skip
        proc.wait_ready()
        return proc, openai.OpenAI(base_url=f"{proc.url}/v1", api_key=API_KEY, max_retries=0)

    proc, client = start(os.path.relpath(idx, ROOT))
    try:
        client.vector_stores.create(name="rel")
        water = upload(client, "water.txt", WATER)
        attached = attach(client, "rel", water.id, attributes={"topic": "water"})
        assert attached.status == "completed"
    finally:
        proc.stop()
    # recompressed in between: the document gets a new id, the upload keeps its attributes
    argv = ["rebuild", "--recompress", "--model", str(tiny_llama_dir), "--index", str(idx)]
    assert index_cli.main([*argv, "--collection", "rel"]) == 0
    proc, client = start(str(idx))
    try:
        found = client.vector_stores.search("rel", query=WATER).data
        assert found and found[0].file_id == water.id
        assert found[0].attributes["topic"] == "water"
        client.vector_stores.files.delete(file_id=water.id, vector_store_id="rel")
        assert client.vector_stores.search("rel", query=WATER).data == []
        again = upload(client, "again.txt", WATER)
        assert attach(client, "rel", again.id).status == "completed"
    finally:
        proc.stop()
    # the whole folder moved (another disk, a new CLARA_HOME), recompressed there: stored
    # paths name the old place. Before: each upload was listed twice, the second time
    # without its file id, and detaching it said deleted but left its chunks searchable.
    moved = tmp_path / "elsewhere" / "index"
    moved.parent.mkdir()
    idx.rename(moved)
    argv = ["rebuild", "--recompress", "--model", str(tiny_llama_dir), "--index", str(moved)]
    assert index_cli.main([*argv, "--collection", "rel"]) == 0
    proc, client = start(str(moved))
    try:
        assert [f.id for f in client.vector_stores.files.list("rel")] == [again.id]
        found = client.vector_stores.search("rel", query=WATER).data
        assert [f.file_id for f in found] == [again.id]
        client.vector_stores.files.delete(file_id=again.id, vector_store_id="rel")
        assert client.vector_stores.search("rel", query=WATER).data == []
        third = upload(client, "third.txt", WATER)
        assert attach(client, "rel", third.id).status == "completed"
    finally:
        proc.stop()
    # removed with clara-index: no longer listed (it was, as completed, and counted)
    assert (
        index_cli.main(["remove", "third.txt", "--index", str(moved), "--collection", "rel"]) == 0
    )
    proc, client = start(str(moved))
    try:
        assert list(client.vector_stores.files.list("rel")) == []
        assert client.vector_stores.retrieve("rel").file_counts.completed == 0
        assert attach(client, "rel", third.id).status == "completed"  # and may come back
        assert [f.file_id for f in client.vector_stores.search("rel", query=WATER).data] == [third.id]  # fmt: skip
    finally:
        proc.stop()


def test_a_store_restored_from_a_backup_lets_go_of_a_deleted_file(tiny_llama_dir, tmp_path) -> None:
    """A team deployment audit: a store restored from a copy made before a file was detached
    from it (the README's backup restores a store's folder whole; the links between stores
    and uploads live in uploads/) listed the file under a document id no files call takes,
    and deleting the file said deleted while its text was still found."""
    idx = tmp_path / "index"

    def start() -> tuple[ServiceProcess, openai.OpenAI]:
        proc = ServiceProcess(
            "--model", str(tiny_llama_dir), "--index", str(idx), "--api-key", API_KEY,
            "--log-level", "warning", log=tmp_path / "service.log",
            env={"CLARA_HOME": str(tmp_path / "home")},
        )  # fmt: skip
        proc.wait_ready()
        return proc, openai.OpenAI(base_url=f"{proc.url}/v1", api_key=API_KEY, max_retries=0)

    proc, client = start()
    try:
        client.vector_stores.create(name="hr")
        water = upload(client, "water.txt", WATER)
        assert attach(client, "hr", water.id).status == "completed"
        shutil.copytree(idx / "hr", tmp_path / "backup")  # (the store idle)
        client.vector_stores.files.delete(file_id=water.id, vector_store_id="hr")
        assert client.vector_stores.search("hr", query=WATER).data == []
    finally:
        proc.stop()
    shutil.rmtree(idx / "hr")
    shutil.copytree(tmp_path / "backup", idx / "hr")
    # a file of the user's own, in a folder that looks like an uploads folder (a copy of one):
    # not that upload (a security audit: it was listed as it, and deleting the upload removed
    # it)
    lookalike = tmp_path / "copy" / "uploads" / water.id / "ledger.txt"
    lookalike.parent.mkdir(parents=True)
    lookalike.write_text("The ledger of the harbour board, 1887 to 1921.")
    argv = ["add", str(lookalike), "--collection", "archive", "--index", str(idx)]
    assert index_cli.main([*argv, "--model", str(tiny_llama_dir)]) == 0
    proc, client = start()
    try:
        assert [f.id for f in client.vector_stores.files.list("archive")] != [water.id]
        hits = client.vector_stores.search("archive", query="The ledger of the harbour board")
        assert hits.data and all(h.file_id != water.id for h in hits.data)  # (it was named so)
        assert [f.id for f in client.vector_stores.files.list("hr")] == [water.id]
        with Collection.open(idx, "hr", readonly=True) as col:  # its document id, as listed
            (doc,) = col.list_documents()  # before: still found
        got = client.vector_stores.files.retrieve(file_id=doc.id, vector_store_id="hr")
        assert got.id == water.id
        assert [f.file_id for f in client.vector_stores.search("hr", query=WATER).data] == [
            water.id
        ]
        assert client.files.delete(water.id).deleted
        assert client.vector_stores.search("hr", query=WATER).data == []
        assert list(client.vector_stores.files.list("hr")) == []
        assert len(list(client.vector_stores.files.list("archive"))) == 1  # (kept)
    finally:
        proc.stop()


def test_a_key_file_lets_each_colleague_in_and_names_who_deleted(tiny_llama_dir, tmp_path) -> None:
    """A team deployment audit: one shared key, so revoking a colleague meant a new key for
    everyone, and a deletion's log said only the client's address. --api-key-file takes a
    key per person; the log names the key a deletion came with."""
    keys = tmp_path / "keys"
    keys.write_text("# the team\nalice  sk-alice-1\n\nbob sk-bob-2\n")
    log = tmp_path / "service.log"
    with ServiceProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp_path / "index"), "--api-key-file",
        str(keys), log=log, env={"CLARA_HOME": str(tmp_path / "home")},
    ) as proc:  # fmt: skip
        proc.wait_ready()

        def as_(key: str) -> openai.OpenAI:
            return openai.OpenAI(base_url=f"{proc.url}/v1", api_key=key, max_retries=0)

        alice, bob = as_("sk-alice-1"), as_("sk-bob-2")
        alice.vector_stores.create(name="notes")
        water = upload(alice, "water.txt", WATER)
        assert attach(alice, "notes", water.id).status == "completed"
        with pytest.raises(openai.AuthenticationError):
            as_("sk-carol-3").vector_stores.list()
        bob.vector_stores.files.delete(file_id=water.id, vector_store_id="notes")
        bob.files.delete(water.id)
        alice.vector_stores.delete("notes")
    text = log.read_text()
    assert f"file {water.id} removed from notes (key bob)" in text
    assert f"file {water.id} ('water.txt') deleted (key bob)" in text
    assert "vector store notes deleted, with its documents (key alice)" in text
    assert "API keys accepted: alice, bob" in text and "sk-" not in text  # (no key in the log)


def test_each_key_makes_and_uploads_up_to_its_limits(tiny_llama_dir, tmp_path) -> None:
    """A SaaS operator audit: one customer's key made 150 vector stores in 4 s, and nothing
    kept it from filling the disk every other customer's uploads need. --max-stores-per-key
    and --max-upload-mb-per-key bound each key's (a 403 quota_exceeded, not a 429 that
    OpenAI's clients would send again)."""
    keys = tmp_path / "keys"
    keys.write_text("alice sk-alice\nbob sk-bob\n")
    keys.chmod(0o600)
    with ServiceProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp_path / "index"), "--api-key-file",
        str(keys), "--max-stores-per-key", "2", "--max-upload-mb-per-key", "0.0001",
        env={"CLARA_HOME": str(tmp_path / "home")},
    ) as proc:  # fmt: skip
        proc.wait_ready()
        alice, bob = (
            openai.OpenAI(base_url=f"{proc.url}/v1", api_key=k, max_retries=0)
            for k in ("sk-alice", "sk-bob")
        )
        made = [alice.vector_stores.create(name=f"s{i}") for i in range(2)]
        with pytest.raises(openai.PermissionDeniedError, match="has made 2 vector stores") as e:
            alice.vector_stores.create(name="s2")
        assert (e.value.code, e.value.body["type"]) == ("quota_exceeded", "insufficient_quota")
        assert bob.vector_stores.create(name="b0").id  # (another key's own limit)
        # bob's last place, asked for 8 times at once: one is made (8 of 10 were: an audit)
        from concurrent.futures import ThreadPoolExecutor

        def make(i: int) -> int:
            r = httpx.post(f"{proc.url}/v1/vector_stores", json={"name": f"b{i}"},
                           headers={"Authorization": "Bearer sk-bob"}, timeout=120)  # fmt: skip
            return r.status_code

        with ThreadPoolExecutor(8) as pool:
            assert sorted(pool.map(make, range(1, 9))) == [200] + [403] * 7
        alice.vector_stores.delete(made[0].id)
        assert alice.vector_stores.create(name="s3").id  # (a store deleted: room again)
        first = upload(alice, "a.txt", "x" * 60)  # 0.0001 MB: 104 bytes in all
        with pytest.raises(
            openai.PermissionDeniedError, match=r"60 bytes\) would take them past the 104 bytes"
        ):
            upload(alice, "b.txt", "y" * 60)
        assert [f.filename for f in alice.files.list()] == ["a.txt"]  # (the refused one gone)
        assert upload(bob, "c.txt", "z" * 60).id
        alice.files.delete(first.id)
        assert upload(alice, "b.txt", "y" * 60).id


def test_the_key_file_is_read_again_when_it_changes(tiny_llama_dir, tmp_path) -> None:
    """A SaaS operator audit: adding or revoking a key meant restarting the server for every
    customer, and a revoked key worked until then. The file is read again when it changes;
    one that cannot be used keeps the keys read before, and the log says why."""
    import os
    import time

    from clara_cli.http import KEY_FILE_CHECK_S

    keys = tmp_path / "keys"
    keys.write_text("alice sk-alice-1\nbob sk-bob-2 ask\n")
    keys.chmod(0o600)
    log = tmp_path / "service.log"

    def rewrite(text: str) -> None:  # (as an operator's script would: whole, then renamed)
        new = keys.with_suffix(".new")
        new.write_text(text)
        os.replace(new, keys)
        time.sleep(KEY_FILE_CHECK_S + 0.1)

    with ServiceProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp_path / "index"), "--api-key-file",
        str(keys), log=log, env={"CLARA_HOME": str(tmp_path / "home")},
    ) as proc:  # fmt: skip
        proc.wait_ready()

        def status(key: str, method: str = "GET") -> int:
            headers = {"Authorization": f"Bearer {key}"}
            if method == "POST":
                r = httpx.post(f"{proc.url}/v1/vector_stores", json={}, headers=headers)
            else:
                r = httpx.get(f"{proc.url}/v1/vector_stores", headers=headers)
            return r.status_code

        assert (status("sk-alice-1"), status("sk-bob-2"), status("sk-carol-3")) == (200, 200, 401)
        assert status("sk-bob-2", "POST") == 403  # (bob may ask only)
        rewrite("bob sk-bob-2\ncarol sk-carol-3 collections=\n")
        assert (status("sk-alice-1"), status("sk-bob-2"), status("sk-carol-3")) == (401, 200, 200)
        assert status("sk-bob-2", "POST") == 200  # (its new role)
        rewrite("bob sk-bob-2\ncarol\n")  # a line without its key: the keys before still count
        assert (status("sk-alice-1"), status("sk-bob-2"), status("sk-carol-3")) == (401, 200, 200)
        keys.unlink()
        time.sleep(KEY_FILE_CHECK_S + 0.1)
        assert (status("sk-bob-2"), status("sk-carol-3")) == (200, 200)
    text = log.read_text()
    assert "read again: 2 keys; added: carol; removed: alice" in text
    assert "changed and cannot be used (--api-key-file" in text and "line 2" in text
    assert "cannot be read: the keys read before still count" in text


def test_failed_files_show_status_and_reason(
    client: openai.OpenAI, service: ServiceProcess, tmp_path: Path, root: Path, capsys
) -> None:
    vs = client.vector_stores.create(name="My scans")  # not a collection name: gets an id
    assert vs.id.startswith("vs_") and vs.name == "My scans"
    cases = {
        "scan.pdf": (make_pdf([None, None]), "invalid_file", "no extractable text"),
        "photo.png": (b"\x89PNG\r\n\x1a\n" + bytes(64), "unsupported_file", "image"),
        "locked.pdf": (
            (ROOT / "tests/data/encrypted-aes128.pdf").read_bytes(), "invalid_file",
            "encrypted PDF: upload a copy without the password",  # no --password over HTTP
        ),
        "empty.txt": (b"", "invalid_file", "empty file"),
    }  # fmt: skip
    for name, (data, code, reason) in cases.items():
        f = upload(client, name, data)
        done = attach(client, vs.id, f.id)
        assert done.status == "failed", name
        assert done.last_error.code == code and done.last_error.message.startswith(f"{name}: ")
        assert reason in done.last_error.message and "/uploads/" not in done.last_error.message
    good = attach(client, vs.id, upload(client, "ok.txt", TRAIN).id)
    half = attach(client, vs.id, upload(client, "half.pdf", make_pdf([TRAIN, None])).id)
    store = client.vector_stores.retrieve(vs.id)
    assert good.status == half.status == "completed"
    assert (store.file_counts.failed, store.file_counts.completed) == (4, 2)
    # what the CLI prints as a warning, the service logs
    assert f"file {half.id} (half.pdf): page 2: no extractable text" in service.log()
    failed = client.vector_stores.files.list(vector_store_id=vs.id, filter="failed")
    assert len(list(failed)) == 4
    # `clara-index collections` shows the store's name beside its id (it showed the id alone)
    assert index_cli.main(["collections", "--index", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r.get("store_name") for r in rows}[vs.id] == "My scans"
    client.vector_stores.delete(vs.id)


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in body["error"]["message"]
    return body["error"]


def test_errors_are_openai_shaped(service: ServiceProcess, client: openai.OpenAI) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    url = service.url + "/v1"
    with pytest.raises(openai.NotFoundError) as e:
        client.vector_stores.retrieve("nope")
    assert e.value.body["type"] == "invalid_request_error" and "nope" in e.value.body["message"]
    vs = client.vector_stores.create(name="errors")
    with pytest.raises(openai.NotFoundError) as e:
        client.vector_stores.files.create(vector_store_id=vs.id, file_id="file-missing")
    assert e.value.body["param"] == "file_id"
    f = upload(client, "a.txt", TRAIN)
    stores = len(client.vector_stores.list().data)
    with pytest.raises(openai.NotFoundError) as e:  # one wrong id: nothing is created
        client.vector_stores.create(name="two-ids", file_ids=[f.id, "file-missing"])
    assert e.value.body["param"] == "file_ids" and "file-missing" in e.value.body["message"]
    assert len(client.vector_stores.list().data) == stores
    fixed = client.vector_stores.create(name="two-ids", file_ids=[f.id])  # so the retry
    assert fixed.id == "two-ids"  # keeps its name as id
    client.vector_stores.delete(fixed.id)
    too_big = {
        "type": "static",
        "static": {"max_chunk_size_tokens": 999, "chunk_overlap_tokens": 0},
    }
    with pytest.raises(openai.BadRequestError) as e:
        client.vector_stores.files.create(vs.id, file_id=f.id, chunking_strategy=too_big)
    assert (
        e.value.body["param"] == "chunking_strategy" and "doc_max_tokens" in e.value.body["message"]
    )
    with pytest.raises(openai.BadRequestError) as e:
        client.vector_stores.search(vs.id, query="")
    assert e.value.body["param"] == "query"

    big = b"x" * int((LIMIT_MB + 0.2) * 2**20)
    err = error_of(httpx.post(f"{url}/files", headers=auth, files={"file": ("big.txt", big)},
                              data={"purpose": "assistants"}, timeout=60), 413)  # fmt: skip
    assert err["code"] == "file_too_large" and err["type"] == "invalid_request_error"
    with pytest.raises(openai.APIStatusError) as e:  # the SDK gets the same 413
        upload(client, "big.txt", big)
    assert e.value.status_code == 413

    def chunked():  # no Content-Length: the limit is enforced while reading
        yield b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
        yield from [b"x" * 2**16] * (len(big) // 2**16)
        yield b"\r\n--b--\r\n"

    headers = {**auth, "Content-Type": "multipart/form-data; boundary=b"}
    r = httpx.post(f"{url}/files", headers=headers, content=chunked(), timeout=60)
    assert error_of(r, 413)["code"] == "file_too_large"
    err = error_of(httpx.post(f"{url}/files", headers=auth, files={"file": ("a.txt", b"hi")},
                              data={"purpose": "fine-tune"}), 400)  # fmt: skip
    assert err["param"] == "purpose"
    err = error_of(httpx.post(f"{url}/files", headers=auth, data={"purpose": "assistants"},
                              files={"other": ("a.txt", b"hi")}), 400)  # fmt: skip
    assert err["param"] == "file"
    err = error_of(httpx.post(f"{url}/vector_stores/{vs.id}/files", headers=auth, json={}), 400)
    assert err["param"] == "file_id"
    err = error_of(httpx.get(f"{url}/vector_stores", headers=auth, params={"limit": 0}), 400)
    assert err["param"] == "limit"
    err = error_of(httpx.get(f"{url}/vector_stores"), 401)
    assert err["code"] == "invalid_api_key"
    health = httpx.get(f"{service.url}/health").json()  # open without a key,
    assert health["status"] == "ok" and "index" not in health  # so no path on disk in it
    assert httpx.head(f"{service.url}/health").status_code == 200
    client.vector_stores.delete(vs.id)


def test_lists_paginate_like_openai(client: openai.OpenAI) -> None:
    ids = [client.vector_stores.create(name=f"page-{i}").id for i in range(3)]
    first = client.vector_stores.list(limit=2, order="asc")
    assert first.has_more and len(first.data) == 2
    rest = client.vector_stores.list(limit=100, order="asc", after=first.data[-1].id)
    seen = [s.id for s in first.data] + [s.id for s in rest.data]
    assert len(seen) == len(set(seen)) and set(ids) <= set(seen)
    for store_id in ids:
        client.vector_stores.delete(store_id)


def test_file_listings_page_like_openai(client: openai.OpenAI) -> None:
    """A test-suite audit: nothing paged /v1/files or a store's files, so a `has_more` that
    came back False one page early (the SDK's auto-paging then drops the last files) passed.
    Paged one at a time forward (the SDK's `after`) and backward (`before`), both orders,
    each listing is the whole listing, once each, in order."""
    store = client.vector_stores.create(name="paged-files").id
    mine = [upload(client, f"page-{i}.txt", f"Page {i} of the paging test.").id for i in range(3)]
    for file_id in mine:
        attach(client, store, file_id)
    listings = {  # (OpenAI's file list has no `before`)
        "files": (lambda **kw: client.files.list(**kw), False),
        "store files": (lambda **kw: client.vector_stores.files.list(store, **kw), True),
    }
    for what, (listing, backward) in listings.items():
        for order in ("asc", "desc"):
            whole = [f.id for f in listing(limit=100, order=order).data]
            assert set(mine) <= set(whole) and len(whole) == len(set(whole)), what
            assert [f.id for f in listing(limit=1, order=order)] == whole, (what, order)
            if not backward:
                continue
            back, before = [whole[-1]], whole[-1]
            for _ in whole:  # (at most one page per item)
                page = listing(limit=1, order=order, before=before)
                assert len(page.data) == 1, (what, order)
                back = [f.id for f in page.data] + back
                if not page.has_more:
                    break
                before = page.first_id
            assert back == whole, (what, order)
    client.vector_stores.delete(store)
    for file_id in mine:
        client.files.delete(file_id)


def test_a_json_body_past_the_limit_is_a_413(
    service: ServiceProcess, client: openai.OpenAI
) -> None:
    """The indexing service's JSON limit was tested only on a throwaway app: removing it from
    the service passed every test. Announced past it: refused from the headers; streamed in
    chunks past it: refused at the limit, the body never parsed."""
    import http.client
    import socket

    from clara_cli.http import MAX_JSON_BODY

    def send(head: bytes, body: bytes = b"") -> tuple[int, dict]:
        with socket.create_connection(("127.0.0.1", service.port), timeout=60) as sock:
            sock.sendall(
                b"POST /v1/vector_stores HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                + f"application/json\r\nAuthorization: Bearer {API_KEY}\r\n".encode()
                + head
                + b"\r\n"
            )
            with contextlib.suppress(OSError):  # (the server may answer and close first)
                sock.sendall(body)
            reply = http.client.HTTPResponse(sock)
            reply.begin()
            return reply.status, json.loads(reply.read())["error"]

    status, error = send(f"Content-Length: {MAX_JSON_BODY + 1}\r\n".encode())
    assert status == 413 and error["code"] == "request_too_large", error

    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    # just past the limit: the server reads it all before it refuses (nothing left unread
    # to reset the connection before the answer is read)
    half = b"x" * (MAX_JSON_BODY // 2)
    body = chunk(b'{"name": "' + half) + chunk(half) + b"0\r\n\r\n"
    status, error = send(b"Transfer-Encoding: chunked\r\n", body)
    assert status == 413 and error["code"] == "request_too_large", error
    assert client.vector_stores.list(limit=1) is not None  # still serving


def test_a_damaged_store_does_not_hide_the_others(client: openai.OpenAI, root: Path) -> None:
    kept = client.vector_stores.create(name="kept").id
    torn = "torn"  # a folder the service has not opened, its manifest cut short (a crash)
    (root / torn).mkdir()
    (root / torn / "manifest.json").write_text('{"trunc')
    listed = [s.id for s in client.vector_stores.list(limit=100)]
    assert kept in listed and torn not in listed
    with pytest.raises(openai.InternalServerError) as info:
        client.vector_stores.retrieve(torn)
    assert info.value.code == "collection_damaged" and "restore its folder" in str(info.value)
    assert client.vector_stores.delete(torn).deleted  # still removable
    client.vector_stores.delete(kept)


def test_an_upload_waits_while_another_process_writes_the_collection(
    client: openai.OpenAI, root: Path
) -> None:
    """`clara-index add` (here: its lock, taken by this test process) holds the collection: the
    upload's job waits instead of failing, and runs once the lock is let go."""
    from indexing.durable import WriterLock

    store = client.vector_stores.create(name="busy").id
    lock = WriterLock(root / store, "collection 'busy'")
    try:
        f = upload(client, "tide.txt", "The tide turns every six hours at the harbour mouth.")
        client.vector_stores.files.create(vector_store_id=store, file_id=f.id)
        time.sleep(3)
        job = client.vector_stores.files.retrieve(f.id, vector_store_id=store)
        assert job.status == "in_progress", job.last_error
    finally:
        lock.release()
    done = client.vector_stores.files.poll(f.id, vector_store_id=store, poll_interval_ms=200)
    assert done.status == "completed", done.last_error
    client.vector_stores.delete(store)


def test_generation_server_sees_files_the_service_indexes(
    service: ServiceProcess, client: openai.OpenAI, root: Path, tiny_llama_dir: Path
) -> None:
    """docker-compose.dev.yml's stack: clara-serve --no-files-api beside clara-index serve,
    its sources' links naming the service's Files API (--files-url: they named its own
    /v1/files, which answer 404 there: a team deployment audit)."""
    client.vector_stores.create(name="shared")
    chat = ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(root), "--collection", "shared",
        "--max-tokens", "4", "--no-files-api", "--files-url", f"{service.url}/v1/",
        log=root.parent / "serve.log", env={"CLARA_HOME": str(root.parent / "home")},
    ).wait_ready()  # fmt: skip
    try:
        gen = openai.OpenAI(base_url=f"{chat.url}/v1", api_key="-", max_retries=0)
        attach(client, "shared", upload(client, "timetable.txt", TRAIN).id)  # after it started
        answer = gen.chat.completions.create(
            model=gen.models.list().data[0].id, messages=[{"role": "user", "content": TRAIN}],
            extra_body={"top_k": 1},
        )  # fmt: skip
        sources = answer.choices[0].message.model_extra["sources"]
        assert [s["filename"] for s in sources] == ["timetable.txt"]
        assert sources[0]["ranks"] == {"dense": 1, "lexical": 1}
        assert sources[0]["url"] == f"{service.url}/v1/files/{sources[0]['file_id']}/content"
        got = httpx.get(sources[0]["url"], headers={"Authorization": f"Bearer {API_KEY}"})
        assert got.status_code == 200 and got.text == TRAIN
        # attribute filters read the attributes the service recorded (a filters audit: left
        # out there, a `ne` filter let every upload through)
        attach(client, "shared", upload(client, "rota.txt", WATER).id, attributes={"team": "x"})
        for kind, names in (("ne", ["timetable.txt"]), ("eq", ["rota.txt"])):
            answer = gen.chat.completions.create(
                model=gen.models.list().data[0].id, messages=[{"role": "user", "content": TRAIN}],
                extra_body={"top_k": 5, "filters": {"type": kind, "key": "team", "value": "x"}},
            )  # fmt: skip
            sources = answer.choices[0].message.model_extra["sources"]
            assert [s["filename"] for s in sources] == names, kind
    finally:
        chat.stop()
    client.vector_stores.delete("shared")


# ---- in-process: loading, restart ----------------------------------------------------------
def test_model_routes_answer_503_while_loading_and_jobs_resume(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    from fastapi.testclient import TestClient

    from clara.checkpoint import load_clara
    from indexing.pipeline import model_manifest
    from indexing.service.app import ServiceSettings, create_app
    from indexing.service.state import FileRecord, Link, Registry
    from indexing.store import Collection

    root = tmp_path / "index"
    # a job the last run left in progress (its upload is on disk)
    registry = Registry(root / "uploads")
    (root / "uploads" / "file-old").mkdir()
    (root / "uploads" / "file-old" / "old.txt").write_text(WATER)
    registry.add_file(FileRecord("file-old", "old.txt", len(WATER), int(time.time()), "assistants"))
    registry.put_link(Link("kept", "file-old", int(time.time()), "in_progress"))
    registry.close()

    release = threading.Event()

    def slow_load():
        release.wait(60)
        cm = load_clara(tiny_llama_dir, None, dtype=None)
        Collection.open(root, "kept", model_manifest(cm), create=True).close()
        return cm

    app = create_app(ServiceSettings(index_root=str(root)), load=slow_load)
    with TestClient(app) as http:
        r = http.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        error = error_of(http.post("/v1/vector_stores", json={"name": "x"}), 503)
        assert error["code"] == "model_loading"
        f = http.post(
            "/v1/files", files={"file": ("a.txt", b"hello")}, data={"purpose": "assistants"}
        )
        assert f.status_code == 200  # uploads do not need the model
        release.set()
        deadline = time.monotonic() + 60
        while http.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        status = None
        while time.monotonic() < deadline:
            status = http.get("/v1/vector_stores/kept/files/file-old").json()["status"]
            if status != "in_progress":
                break
            time.sleep(0.05)
        assert status == "completed"
        hits = http.post("/v1/vector_stores/kept/search", json={"query": WATER}).json()["data"]
        assert hits[0]["file_id"] == "file-old" and hits[0]["content"][0]["text"] == WATER


def test_a_starting_service_leaves_another_running_services_jobs_alone(
    tmp_path: Path, tiny_llama_dir: Path, caplog
) -> None:
    """Two services on one index root (clara-serve's Files API beside clara-index serve): a
    starting one resumed every job in progress, the other's running ones too, which then ran
    twice. It resumes those of a service that has stopped only (a service is told running by
    the lock it holds, not by its pid: in two containers both are pid 1)."""
    from fastapi.testclient import TestClient

    from clara.checkpoint import load_clara
    from indexing.pipeline import model_manifest
    from indexing.service.app import ServiceSettings, create_app
    from indexing.store import Collection

    root = tmp_path / "index"
    running = Registry(root / "uploads")  # another service, still running
    stopped = Registry(root / "uploads")  # one that stopped with a job in progress
    try:
        for file_id, owner in (("file-theirs", running), ("file-stopped", stopped)):
            (root / "uploads" / file_id).mkdir()
            (root / "uploads" / file_id / "w.txt").write_text(WATER)
            owner.add_file(FileRecord(file_id, "w.txt", len(WATER), 0, "assistants"))
            owner.put_link(Link("kept", file_id, 0, "in_progress"))
            assert owner.claim("kept", file_id)
        stopped.close()
        other = Registry(root / "uploads")
        try:
            assert not other.claim("kept", "file-theirs", unless_running=True)
        finally:
            other.close()

        def load():
            cm = load_clara(tiny_llama_dir, None, dtype=None)
            Collection.open(root, "kept", model_manifest(cm), create=True).close()
            return cm

        app = create_app(ServiceSettings(index_root=str(root)), load=load)
        with caplog.at_level("INFO"), TestClient(app) as http:
            deadline = time.monotonic() + 120
            status = {}
            while time.monotonic() < deadline:
                status = {f: http.get(f"/v1/vector_stores/kept/files/{f}").json()["status"]
                          for f in ("file-theirs", "file-stopped")}  # fmt: skip
                if status["file-stopped"] != "in_progress":
                    break
                time.sleep(0.05)
        assert status == {"file-stopped": "completed", "file-theirs": "in_progress"}
        assert any("file-theirs into kept: being indexed by another running service" in
                   r.getMessage() for r in caplog.records)  # fmt: skip
        claims = running.db.execute("SELECT file_id, owner FROM claims").fetchall()
        assert claims == [("file-theirs", running.owner)]  # the finished job's is let go
    finally:
        running.close()
    again = Registry(root / "uploads")  # once it has stopped, its job is anyone's
    try:
        assert again.claim("kept", "file-theirs", unless_running=True)
    finally:
        again.close()


def test_a_running_service_takes_the_jobs_of_one_that_stops_later(
    tmp_path: Path, tiny_llama_dir: Path, monkeypatch
) -> None:
    """A container audit: in a rolling upgrade the new replica starts while the old one is
    indexing, and leaves its jobs alone; once the old one stopped, they stayed
    "in_progress" until some service started again. A running service now looks for the
    jobs of services that stopped (every ADOPT_EVERY_S) and takes them."""
    from fastapi.testclient import TestClient

    from clara.checkpoint import load_clara
    from indexing.pipeline import model_manifest
    from indexing.service import app as service_app
    from indexing.store import Collection

    monkeypatch.setattr(service_app, "ADOPT_EVERY_S", 0.2)
    root = tmp_path / "index"
    old = Registry(root / "uploads")  # the replica being replaced, indexing
    (root / "uploads" / "file-old").mkdir(parents=True)
    (root / "uploads" / "file-old" / "w.txt").write_text(WATER)
    old.add_file(FileRecord("file-old", "w.txt", len(WATER), 0, "assistants"))
    old.put_link(Link("kept", "file-old", 0, "in_progress"))
    assert old.claim("kept", "file-old")

    def load():
        cm = load_clara(tiny_llama_dir, None, dtype=None)
        Collection.open(root, "kept", model_manifest(cm), create=True).close()
        return cm

    app = service_app.create_app(service_app.ServiceSettings(index_root=str(root)), load=load)
    try:
        with TestClient(app) as http:

            def status() -> str:
                return http.get("/v1/vector_stores/kept/files/file-old").json()["status"]

            deadline = time.monotonic() + 120
            while app.state.service.worker.state != "ready" and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # (several looks: the old one still runs)
            assert status() == "in_progress"
            old.close()  # the old replica stops mid-job
            while status() == "in_progress" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert status() == "completed"
    finally:
        old.close()


def test_a_failed_load_answers_model_failed_like_clara_serve(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from indexing.service.app import ServiceSettings, create_app

    def broken_load():
        raise RuntimeError("no weights in /nowhere")

    app = create_app(ServiceSettings(index_root=str(tmp_path / "index")), load=broken_load)
    with TestClient(app) as http:
        deadline = time.monotonic() + 30
        while http.get("/health").json().get("status") == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert http.get("/health").status_code == 503
        error = error_of(http.post("/v1/vector_stores", json={"name": "x"}), 503)
        assert error["code"] == "model_failed" and "no weights in /nowhere" in error["message"]


@contextlib.contextmanager
def two_stores_and_a_busy_model(tmp_path: Path, tiny_llama_dir: Path):
    """The service in-process, stores a and b, WATER uploaded and indexed into a; yields
    (http, file id, `busy`, `queued`): `busy()` occupies the model until the function it
    returns is called (or the block ends), `queued()` waits for a request to wait for it."""
    from fastapi.testclient import TestClient

    from clara.checkpoint import load_clara
    from clara_cli.worker import Task
    from indexing.service.app import ServiceSettings, create_app

    settings = ServiceSettings(index_root=str(tmp_path / "index"))
    app = create_app(settings, load=lambda: load_clara(tiny_llama_dir, None, dtype=None))
    gate = threading.Event()
    deadline = time.monotonic() + 60

    def busy() -> Callable[[], None]:
        started = threading.Event()
        task = Task(key=(":busy",), start=lambda cm: started.set() or gate.wait(60))
        app.state.service.worker.submit(task)
        assert started.wait(30)
        return gate.set

    def queued() -> None:
        while not app.state.service.worker.queue_depth():
            assert time.monotonic() < deadline
            time.sleep(0.05)

    with TestClient(app) as http:
        while http.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        for name in ("a", "b"):
            assert http.post("/v1/vector_stores", json={"name": name}).status_code == 200
        f = http.post(
            "/v1/files", files={"file": ("w.txt", WATER.encode())}, data={"purpose": "assistants"}
        ).json()["id"]
        http.post("/v1/vector_stores/a/files", json={"file_id": f})
        while http.get(f"/v1/vector_stores/a/files/{f}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        try:
            yield http, f, busy, queued
        finally:
            gate.set()


def test_a_search_waiting_for_the_model_keeps_its_store_open(
    tmp_path: Path, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third review of the open-files fix: a store let go (past the 128 kept open) was
    closed a fixed time later, and a search that waited longer for the model then read a
    closed collection (a 500). Here one store is kept open, the fixed time is none (as the
    old code allowed), and the search waits while another store is read."""
    from indexing import open_collections

    monkeypatch.setattr(open_collections, "MAX_OPEN", 1)
    for old in ("RETIRE_S", "BUSY_RETIRE_S"):  # (the old code's delays)
        monkeypatch.setattr(open_collections, old, 0.0, raising=False)
    with two_stores_and_a_busy_model(tmp_path, tiny_llama_dir) as (http, _, busy, queued):
        free = busy()
        found: list[httpx.Response] = []
        search = threading.Thread(
            target=lambda: found.append(
                http.post("/v1/vector_stores/a/search", json={"query": WATER})
            )
        )
        search.start()
        queued()  # the search holds store a and waits for the model
        for _ in range(2):  # store b read: a is let go from those kept open
            assert http.get("/v1/vector_stores/b").status_code == 200
        free()
        search.join(30)
    assert found[0].status_code == 200, found[0].text
    assert found[0].json()["data"][0]["content"][0]["text"] == WATER


def test_a_file_being_deleted_cannot_be_attached(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """A concurrency audit: DELETE /v1/files/F and an attach of F to another store both
    answered 200, and the deleted upload was then indexed there (searches found it) or
    failed as a missing file. An attach while F is being deleted is now a 404."""
    with two_stores_and_a_busy_model(tmp_path, tiny_llama_dir) as (http, f, busy, queued):
        free = busy()
        deleted: list[httpx.Response] = []
        deleting = threading.Thread(target=lambda: deleted.append(http.delete(f"/v1/files/{f}")))
        deleting.start()
        queued()  # the delete waits for the model to take F out of store a
        r = http.post("/v1/vector_stores/b/files", json={"file_id": f})
        free()
        deleting.join(30)
        assert r.status_code == 404 and r.json()["error"]["param"] == "file_id"
        assert deleted[0].status_code == 200
        time.sleep(1.0)  # (what an attach had queued would have run by now)
        for store in ("a", "b"):
            assert http.get(f"/v1/vector_stores/{store}/files").json()["data"] == []
        hits = http.post("/v1/vector_stores/b/search", json={"query": WATER}).json()["data"]
        assert hits == []


def test_a_store_clara_index_holds_answers_409_and_changes_nothing(
    client: openai.OpenAI, root: Path
) -> None:
    """A concurrency audit: removing a file from a store (or deleting the file, or the
    store) while clara-index held it answered 409, but had already stopped the file's
    indexing: it stayed "in progress" for good, and every file_search on the store waited
    two minutes for it."""
    vs = client.vector_stores.create(name="held")
    f = upload(client, "train.txt", TRAIN)
    other = client.vector_stores.create(name="other_held")  # (the file deleted from neither)
    attach(client, other.id, f.id)
    with lock_held_elsewhere(root / vs.id):
        client.vector_stores.files.create(vector_store_id=vs.id, file_id=f.id)  # (it waits)
        for remove in (
            lambda: client.vector_stores.files.delete(f.id, vector_store_id=vs.id),
            lambda: client.files.delete(f.id),
            lambda: client.vector_stores.delete(vs.id),
        ):
            with pytest.raises(openai.ConflictError):
                remove()
        assert client.vector_stores.files.retrieve(f.id, vector_store_id=vs.id).status == (
            "in_progress"
        )
    deadline = time.monotonic() + 60  # indexed once clara-index let go
    while (done := client.vector_stores.files.retrieve(f.id, vector_store_id=vs.id)).status == (
        "in_progress"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert done.status == "completed"
    assert client.vector_stores.files.retrieve(f.id, vector_store_id=other.id).status == (
        "completed"
    )
    for store in (vs, other):
        client.vector_stores.delete(store.id)


def test_the_name_of_a_store_whose_folder_is_gone_is_free_again(
    client: openai.OpenAI, root: Path
) -> None:
    """A crash audit: a server killed in the middle of deleting a store (its folder gone, its
    record not yet) kept the record for good, and with it the name: a new store named so got
    a vs_ id. The record is replaced when the name is asked for again (not forgotten at
    start: a folder moved away for a while came back without its name and files)."""
    import shutil

    gone = client.vector_stores.create(name="crashed_delete", metadata={"v": "1"})
    assert gone.id == "crashed_delete"
    shutil.rmtree(root / gone.id)  # what the crash left: the record only
    again = client.vector_stores.create(name="crashed_delete")
    assert again.id == "crashed_delete" and again.metadata is None
    assert again.file_counts.total == 0
    client.vector_stores.delete(again.id)


def test_text_that_is_not_unicode_is_refused_before_it_is_stored(
    client: openai.OpenAI, service: ServiceProcess
) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    for body in ('{"name": "s", "metadata": {"k": "\\ud800"}}',
                 '{"name": "s", "metadata": {"\\ud800": "v"}}'):  # fmt: skip
        r = httpx.post(f"{service.url}/v1/vector_stores", content=body, headers=auth)
        assert r.status_code == 400 and "not valid Unicode" in r.json()["error"]["message"]
    client.vector_stores.list()  # nothing half-stored breaks the listing
    r = httpx.post(f"{service.url}/v1/vector_stores/default/search", headers=auth,
                   content=json.dumps({"query": "w " * 10_000}))  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["param"] == "query"


def test_what_openai_bounds_is_bounded_and_attributes_keep_theirs(client: openai.OpenAI) -> None:
    """An app-developer audit: a store named as the default collection became what every
    tool-less chat searched; a 300-byte name was a 500; expiring uploads, an overlap above
    half a chunk, 17 attributes and an unknown ranker were taken without a word; integers
    came back as floats; and search results overwrote attributes named as clara's own."""
    default = client.vector_stores.create(name="default")
    assert default.id.startswith("vs_") and default.name == "default"
    long = client.vector_stores.create(name="x" * 300)
    assert long.id.startswith("vs_") and long.name == "x" * 300
    for vs in (default, long):
        client.vector_stores.delete(vs.id)
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(
            file=("a.txt", TRAIN.encode()), purpose="assistants",
            expires_after={"anchor": "created_at", "seconds": 3600},
        )  # fmt: skip
    assert e.value.body["param"] == "expires_after"
    assert e.value.body["code"] == "unsupported_parameter"
    vs = client.vector_stores.create(name="bounded")
    f = upload(client, "train.txt", TRAIN)
    overlap = {
        "type": "static",
        "static": {"max_chunk_size_tokens": 64, "chunk_overlap_tokens": 40},
    }
    with pytest.raises(openai.BadRequestError, match="at most half") as e:
        client.vector_stores.files.create(vs.id, file_id=f.id, chunking_strategy=overlap)
    assert e.value.body["param"] == "chunking_strategy.static.chunk_overlap_tokens"
    for wrong in ({f"k{i}": i for i in range(17)}, {"k" * 65: 1}, {"k": "v" * 513}):
        with pytest.raises(openai.BadRequestError):
            client.vector_stores.files.create(vs.id, file_id=f.id, attributes=wrong)
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.search(vs.id, query="train", ranking_options={"ranker": "bogus"})
    own = {"year": 1889, "document_id": "my-doc-7", "kind": "timetable", "late": False}
    attach(client, vs.id, f.id, attributes=own)
    raw = client.vector_stores.with_raw_response.search(
        vs.id, query=TRAIN, ranking_options={"ranker": "auto"}
    )
    (hit,) = raw.http_response.json()["data"]  # (the SDK's type makes every number a float)
    assert {k: hit["attributes"][k] for k in own} == own  # the app's, as it gave them
    assert type(hit["attributes"]["year"]) is int and hit["attributes"]["chunk_id"] >= 1
    assert hit["attributes"]["retrieval_mode"] == "hybrid"  # clara's, where the app's are not
    with pytest.raises(openai.BadRequestError, match="at most half"):  # attached already
        client.vector_stores.files.create(vs.id, file_id=f.id, chunking_strategy=overlap)
    client.vector_stores.delete(vs.id)


def test_numbers_json_lacks_and_unbounded_names_are_refused(
    service: ServiceProcess, client: openai.OpenAI
) -> None:
    """A security audit: NaN and Infinity (which Python's JSON parser takes) were stored as
    attributes, then every Responses answer carrying them was a 500 and streams sent them as
    text JSON.parse refuses; an infinite embedding_weight made every score null; and a store
    name of 30 MB was stored and sent in every listing of the stores."""
    vs = client.vector_stores.create(name="finite")
    f = upload(client, "train.txt", TRAIN)
    attach(client, vs.id, f.id)
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    url = f"{service.url}/v1/vector_stores/{vs.id}"
    for path, body, why in (
        (f"/files/{f.id}", '{"attributes": {"x": NaN}}', "NaN is not a JSON number"),
        (f"/files/{f.id}", '{"attributes": {"y": -Infinity}}', "-Infinity is not a JSON"),
        (f"/files/{f.id}", '{"attributes": {"z": 1e999}}', "1e999 is out of a number's range"),
        ("/search", '{"query": "train", "ranking_options": '
                    '{"hybrid_search": {"embedding_weight": Infinity}}}', "Infinity is not"),
    ):  # fmt: skip
        error = error_of(httpx.post(url + path, content=body, headers=auth), 400)
        assert why in error["message"], error
    assert not client.vector_stores.files.retrieve(f.id, vector_store_id=vs.id).attributes
    with pytest.raises(openai.BadRequestError) as e:
        client.vector_stores.create(name="n" * 513)
    assert e.value.body["param"] == "name"
    with pytest.raises(openai.BadRequestError) as e:
        client.vector_stores.update(vs.id, name="n" * 513)
    assert e.value.body["param"] == "name"
    assert client.vector_stores.update(vs.id, name="n" * 512).name == "n" * 512
    with pytest.raises(openai.BadRequestError) as e:  # (OpenAI's bound: 500 a batch)
        client.vector_stores.file_batches.create(vs.id, file_ids=[f.id] * 501)
    assert e.value.body["param"] == "file_ids"
    batch = client.vector_stores.file_batches.create(vs.id, file_ids=[f.id] * 50)
    assert batch.file_counts.total == 1  # the same file 50 times: one file, counted once
    client.vector_stores.delete(vs.id)


def test_a_slow_file_is_read_beside_the_model_not_on_it(client: openai.OpenAI) -> None:
    """A security audit: uploads were read on the model's thread, so a 7 KB PDF whose pages
    decode one big stream again and again held every chat and search for its whole read
    (18 s; minutes for a bigger one). It is now read beside it, and refused past the text a
    PDF of its size can hold."""
    other = client.vector_stores.create(name="searched-meanwhile")
    attach(client, other.id, upload(client, "train.txt", TRAIN).id)
    vs = client.vector_stores.create(name="bombed")
    bomb = upload(client, "bomb.pdf", make_pdf_bomb(2**20, 3))
    began = time.perf_counter()
    client.vector_stores.files.create(vector_store_id=vs.id, file_id=bomb.id)
    time.sleep(0.5)  # (the read is under way)
    assert client.vector_stores.search(other.id, query="train").data
    searched = time.perf_counter() - began
    assert client.vector_stores.files.retrieve(bomb.id, vector_store_id=vs.id).status == (
        "in_progress"
    )  # fmt: skip
    done = client.vector_stores.files.poll(bomb.id, vector_store_id=vs.id, poll_interval_ms=100)
    read = time.perf_counter() - began
    assert done.status == "failed" and done.last_error.code == "invalid_file"
    assert "decompression bomb" in done.last_error.message, done.last_error
    assert searched < read / 2, (searched, read)  # (the search did not wait for the read)
    for store in (vs, other):
        client.vector_stores.delete(store.id)


def test_a_front_ends_base_url_without_v1_gets_a_hint(service: ServiceProcess) -> None:
    """A chat front-end audit: a base URL without /v1, or ending in a slash, got a bare
    "Unknown request URL" (the user sees only that the connection failed)."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    error = error_of(httpx.get(f"{service.url}/vector_stores", headers=auth), 404)
    assert "did you mean /v1/vector_stores?" in error["message"], error
    error = error_of(httpx.get(f"{service.url}/v1//files", headers=auth), 404)
    assert "did you mean /v1/files?" in error["message"], error
    error = error_of(httpx.get(f"{service.url}/v1/nothing", headers=auth), 404)
    assert "did you mean" not in error["message"], error


def test_an_older_store_that_took_the_default_id_is_named_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade audit: a store an app named "default" under clara 0.2.3 kept that id, so
    every client's chats that name no collection still answered from that app's files, and
    nothing said so."""
    registry = Registry(tmp_path / "uploads")
    settings = ServiceSettings(index_root=str(tmp_path), default_collection="notes")
    try:
        IndexService(settings, None, registry)
        assert "vector store" not in caplog.text
        registry.add_store(StoreRecord("default", "default", 0))
        registry.add_store(StoreRecord("notes", "notes", 0))
        IndexService(settings, None, registry)
    finally:
        registry.close()
    assert "vector store 'default' was created by an app" in caplog.text
    assert "vector store 'notes' was created by an app" in caplog.text
    assert "clara-serve --collection NAME" in caplog.text


def test_a_store_the_web_chat_named_default_is_named_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade audit: the web chat of 0.2.4 to 0.2.8 uploaded into a new `vs_...` store it
    named "default" when no collection was picked, which chats naming none never search;
    after the upgrade nothing said where those files were, nor how to move them."""
    registry = Registry(tmp_path / "uploads")
    settings = ServiceSettings(index_root=str(tmp_path))
    try:
        registry.add_store(StoreRecord("vs_0123", "default", 0))
        registry.add_store(StoreRecord("vs_4567", "papers", 0))
        IndexService(settings, None, registry)
    finally:
        registry.close()
    assert "vector store vs_0123 is named 'default' but is not the collection" in caplog.text
    assert "POST /v1/vector_stores/default/files with its file_id), then delete vs_0123" in (
        caplog.text
    )
    assert "vs_4567" not in caplog.text


def test_pages_of_stores_skip_damaged_ones_and_go_on(tmp_path: Path) -> None:
    """A review of the paged listing (which opens only a page's stores): a page whose stores
    were all damaged came back empty with has_more, which ended the SDK's paging there (the
    stores after it never listed). Pages now take the next store instead, both ways."""
    from indexing.store import Collection
    from tests.test_store import MANIFEST

    registry = Registry(tmp_path / "uploads")
    for i, name in enumerate("abcde"):
        Collection.open(tmp_path / "index", name, manifest=MANIFEST, create=True).close()
        registry.add_store(StoreRecord(name, name, 100 + i))
    for torn in "bc":
        (tmp_path / "index" / torn / "manifest.json").write_text("{torn")
    try:
        service = IndexService(ServiceSettings(index_root=str(tmp_path / "index")), None, registry)
        for order, want in (("asc", "ade"), ("desc", "eda")):
            after, seen = None, []
            while True:  # as the SDK's auto-paging does
                page = service.list_stores(after, None, 1, order)
                seen += [s.id for s in page.data]
                if not page.data or not page.has_more:
                    break
                after = page.last_id
            assert "".join(seen) == want, order
        page = service.list_stores(None, "d", 1, "asc")  # (the store just before d: a)
        assert [s.id for s in page.data] == ["a"] and not page.has_more
        page = service.list_stores(None, None, 10, "asc")
        assert [s.id for s in page.data] == list("ade") and not page.has_more
    finally:
        registry.close()


def test_paginate_walks_every_item_once_either_way_and_skips_what_show_drops() -> None:
    """`paginate` is every listing's cursor rule. Walking pages forward (`after` = last id)
    and backward (`before` = first id) at every limit, both orders, ties in created_at, lists
    each shown item exactly once and in order; items `show` drops never appear and never
    leave a page empty while any are left. A cursor not in the list is ignored, as OpenAI's
    own listings do with an id from another list."""
    from types import SimpleNamespace

    from indexing.service.protocol import paginate

    items = [SimpleNamespace(id=c, created_at=t) for c, t in zip("abcdefg", [1, 1, 2, 3, 3, 3, 4])]
    for hidden in ("", "b", "cde", "abcdefg"):
        show = (lambda x, h=hidden: None if x.id in h else x) if hidden else None
        for order in ("asc", "desc"):
            want = [x.id for x in items if x.id not in hidden]
            want = want if order == "asc" else want[::-1]
            for limit in (1, 2, 3, 7, 8):
                seen, after = [], None
                while True:
                    page = paginate(
                        items, after=after, before=None, limit=limit, order=order, show=show
                    )
                    assert len(page.data) <= limit and (page.data or not page.has_more)
                    seen += [x.id for x in page.data]
                    if not page.has_more:
                        break
                    after = page.last_id
                assert seen == want, (hidden, order, limit)
                if not want:
                    continue
                back, before = [want[-1]], want[-1]  # from the last one, back to the start
                while True:
                    page = paginate(
                        items, after=None, before=before, limit=limit, order=order, show=show
                    )
                    assert len(page.data) <= limit and (page.data or not page.has_more)
                    back = [x.id for x in page.data] + back
                    if not page.has_more:
                        break
                    before = page.first_id
                assert back == want, ("backward", hidden, order, limit)
    page = paginate(items, after="zz", before="yy", limit=2, order="asc")
    assert [x.id for x in page.data] == ["a", "b"] and page.has_more


def test_uploads_waiting_at_a_graceful_stop_resume_at_the_next_start(tmp_path: Path) -> None:
    """A second-pass review: a graceful stop marked every upload that had not started
    "failed: internal error while indexing", though the stop's log said it would resume."""
    from clara_cli.worker import Worker

    registry = Registry(tmp_path / "uploads")
    settings = ServiceSettings(index_root=str(tmp_path))
    worker = Worker(lambda: object(), name="test-mlx")
    worker.start()
    while worker.state == "loading":
        time.sleep(0.01)
    service = IndexService(settings, worker, registry)
    rec = FileRecord("file-1", "a.txt", 3, 0, "assistants")
    link = Link("store", rec.id, 0, "in_progress")
    registry.add_file(rec)
    registry.put_link(link)
    (tmp_path / "store").mkdir()
    try:
        with lock_held_elsewhere(tmp_path / "store"):  # (it waits: it cannot start)
            service._queue(link, rec)
            worker.stop()
    finally:
        service.close()
        registry.close()
    again = Registry(tmp_path / "uploads")
    try:
        assert again.link("store", rec.id).status == "in_progress"
    finally:
        again.close()


def test_a_file_stored_with_a_wide_overlap_still_lists() -> None:
    """Attached before the half-chunk bound on requests: its listing (and its store's) must
    not fail the bound (the review of that bound)."""
    from indexing.service.handler import IndexService
    from indexing.service.state import Link

    link = Link("store", "file-1", 0, "completed", chunk_tokens=100, overlap=60)
    shown = IndexService._link_object(None, link)  # (uses nothing of the service)
    assert shown.chunking_strategy.static.chunk_overlap_tokens == 60


def test_an_upload_deleted_from_stores_keeps_no_store_locked_when_one_detach_fails(
    tmp_path: Path,
) -> None:
    """A review: `_detach_all` opens every store of the upload for writing first (so that
    clara-index cannot come in between); one detach failing left the stores after it open,
    and clara-index found them locked until the service stopped. Each is let go."""
    from clara_cli.worker import Worker
    from indexing.durable import WriterLock
    from indexing.store import Collection
    from tests.test_store import MANIFEST

    registry = Registry(tmp_path / "uploads")
    worker = Worker(lambda: object(), name="test-mlx")
    worker.start()
    while worker.state == "loading":
        time.sleep(0.01)
    service = IndexService(ServiceSettings(index_root=str(tmp_path)), worker, registry)
    rec = FileRecord("file-1", "a.txt", 3, 0, "assistants")
    registry.add_file(rec)
    links = [Link(name, rec.id, 0, "completed") for name in ("a", "b")]
    for link in links:
        Collection.open(tmp_path, link.store_id, manifest=MANIFEST, create=True).close()
        registry.put_link(link)

    def broken(store_id, rec, link, doc_id=None):
        raise OSError("disk went away")

    service._detach = broken  # (a disk error removing the first store's document)
    try:
        with pytest.raises(OSError):
            asyncio.run(worker.call(lambda cm: service._detach_all(links, rec)))
        assert service._writers == {}
        for name in ("a", "b"):
            WriterLock(tmp_path / name, name).release()  # free for clara-index
    finally:
        worker.stop()
        service.close()
        registry.close()


def test_an_overlap_the_model_cannot_take_is_refused_before_it_loads(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """--overlap is checked against the checkpoint's config before the port is bound and the
    model loads: found only at load, the service had started, and then answered 503
    model_failed (or, before that check, refused every upload)."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "indexing.cli", "serve", "--model", str(tiny_llama_dir),
         "--index", str(tmp_path / "index"), "--port", "0", "--overlap", "10000"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "CLARA_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("clara-index: error: --overlap 10000 does not fit"), run.stderr
    assert "does not fit this model's chunks of 224 tokens: give at most 223 (default: 32)" in last
    assert "loading" not in run.stderr and "Uvicorn running" not in run.stderr, run.stderr


def test_the_service_exports_prometheus_metrics(service, client) -> None:
    """It had no /metrics (an SRE's audit): nothing to watch while it does the indexing."""
    f = upload(client, "metered.txt", WATER)
    vs = client.vector_stores.create(name="metered")
    attach(client, vs.id, f.id)
    before = httpx.get(f"{service.url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    blank = upload(client, "blank.txt", "   \n")  # the file's fault, not the server's (an
    attach(client, vs.id, blank.id)  # SRE's audit: failures had no cause)
    r = httpx.get(f"{service.url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    failed = {c: metric(r.text, "clara_files_failed_total", code=c) - metric(before.text,
              "clara_files_failed_total", code=c) for c in ("invalid_file", "server_error")}  # fmt: skip
    assert failed == {"invalid_file": 1, "server_error": 0}
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "clara_model_ready 1" in text and "clara_files_in_progress 0" in text
    assert 'clara_files_indexed_total{status="completed"}' in text
    assert 'clara_requests_total{endpoint="/v1/files",method="GET",status="200"}' in text
    assert 'endpoint="/v1/vector_stores/*"' in text
    assert httpx.get(f"{service.url}/metrics").status_code == 401  # (the key, as clara-serve)
    client.vector_stores.delete(vs.id)
    client.files.delete(f.id)


def test_a_pdf_uploaded_without_its_extension_is_served_as_a_pdf(service, client) -> None:
    """Its content came as application/octet-stream, which the web chat shows as text (a
    citations audit)."""
    f = upload(client, "scan_0042", make_pdf(["A page of text."]))
    r = httpx.get(
        f"{service.url}/v1/files/{f.id}/content", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    client.files.delete(f.id)


def test_the_default_overlap_fits_a_model_of_short_chunks() -> None:
    """--overlap is cut to the chunks' length for "auto" chunking, as an upload takes it: a
    model of 32-token chunks starts with the default 32 (a review: the start-up check had
    refused it); one past every chunk size is refused."""
    from clara.errors import ChunkingError

    ServiceSettings().check_overlap(32)
    ServiceSettings(overlap=100).check_overlap(32)
    with pytest.raises(ChunkingError, match="chunks of 224 tokens: give at most 223"):
        ServiceSettings(overlap=300).check_overlap(256)


def test_the_default_collection_is_made_by_its_first_good_upload(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """The web chat's upload with no collection picked made a `vs_...` store named
    "default"; attaching to the server's --collection now makes it, but (a review) only once
    the file is known, and by a batch as by a single attach."""
    root = tmp_path / "index"
    with ServiceProcess(
        "--model", str(tiny_llama_dir), "--index", str(root), "--log-level", "warning",
        log=tmp_path / "service.log", env={"CLARA_HOME": str(tmp_path / "home")},
    ) as proc:  # fmt: skip
        api = openai.OpenAI(base_url=f"{proc.wait_ready().url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.NotFoundError):
            api.vector_stores.files.create(vector_store_id="default", file_id="file-unknown")
        assert not (root / "default").exists()  # (an unknown file makes nothing)
        f = upload(api, "water.txt", WATER)
        batch = api.vector_stores.file_batches.create_and_poll(
            vector_store_id="default", file_ids=[f.id], poll_interval_ms=50
        )
        assert batch.file_counts.completed == 1
        hits = api.vector_stores.search(vector_store_id="default", query=WATER).data
        assert hits[0].file_id == f.id


def test_a_deleted_uploads_name_and_attributes_leave_the_registrys_log(tmp_path: Path) -> None:
    """A privacy audit: the registry's WAL kept a deleted upload's name and its attributes
    until the service stopped."""
    from indexing.service.state import FileRecord, Link, Registry, StoreRecord

    registry = Registry(tmp_path / "uploads")
    try:
        registry.add_store(StoreRecord("hr", "hr", 1))
        registry.add_file(FileRecord("file-1", "salary_CANARY.txt", 3, 1, "assistants"))
        registry.put_link(Link("hr", "file-1", 1, "completed", attributes={"tag": "ATTRCANARY"}))
        registry.delete_link("hr", "file-1")
        registry.delete_file("file-1")
        on_disk = b"".join(p.read_bytes() for p in (tmp_path / "uploads").iterdir())
        assert b"CANARY" not in on_disk
    finally:
        registry.close()
