"""Keys limited to some collections (`collections=` in --api-key-file): a team's key reads its
collections and what it made, and nothing else exists for it, through every route of both
servers (real servers, real clients)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import openai
import pytest

from clara.errors import ClaraError
from clara_cli.serve import read_api_keys
from tests.test_index_service import WATER, ServiceProcess, attach, upload
from tests.test_server_harness import DOCS, ServerProcess, add_documents

KEYS = (
    "admin sk-admin\n"
    "hr sk-hr all collections=handbook\n"
    "sales sk-sales collections=pricing,handbook\n"
    "guest sk-guest ask collections=\n"
    "typo sk-typo collections=Handbook\n"
)


def test_the_key_file_takes_a_scope_after_the_role(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(KEYS)
    roles: dict[str, str] = {}
    scopes: dict[str, tuple[str, ...]] = {}
    keys = read_api_keys(str(path), {}, roles, scopes)
    assert list(keys) == ["admin", "hr", "sales", "guest", "typo"] and keys["hr"] == "sk-hr"
    assert roles == {"guest": "ask"}
    assert scopes == {
        "hr": ("handbook",), "sales": ("pricing", "handbook"), "guest": (), "typo": ("Handbook",)
    }  # fmt: skip
    for bad, says in [
        ("bob sk-b collections=../etc\n", "'../etc' is not a collection name"),
        ("bob sk-b collections=a b\n", "write 'NAME KEY'"),
        ("bob collections=a\n", "write 'NAME KEY'"),  # (no key: the scope is not one)
        ("prom sk-p metrics collections=a\n", "a 'metrics' key reads /metrics only"),
    ]:
        path.write_text(bad)
        with pytest.raises(ClaraError, match=says):
            read_api_keys(str(path), {}, {}, {})


@pytest.fixture(scope="module")
def cm(tiny_llama_dir: Path):
    from clara.checkpoint import load_clara

    return load_clara(tiny_llama_dir, None, dtype=None)


def as_(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_a_limited_key_sees_its_collections_and_what_it_made(tiny_llama_dir, tmp_path) -> None:
    """The Files and Vector Stores API of `clara-index serve`: every route a store or an
    upload goes through is a 404 for a key that may not read it, as for one that is not
    there; listings show only what it may read."""
    keys = tmp_path / "keys"
    keys.write_text(KEYS)
    keys.chmod(0o600)
    log = tmp_path / "service.log"
    with ServiceProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp_path / "index"),
        "--api-key-file", str(keys), log=log, env={"CLARA_HOME": str(tmp_path / "home")},
    ) as proc:  # fmt: skip
        proc.wait_ready()
        admin, hr, sales = (as_(proc.url, f"sk-{n}") for n in ("admin", "hr", "sales"))
        admin.vector_stores.create(name="handbook")
        admin.vector_stores.create(name="payroll")
        secret = upload(admin, "salaries.txt", "Alice earns ninety thousand a year.")
        assert attach(admin, "payroll", secret.id).status == "completed"
        # a store hr makes is its own, under an id (its name could be a collection that
        # another key is given)
        mine = hr.vector_stores.create(name="payroll")
        assert mine.id.startswith("vs_") and mine.name == "payroll"
        water = upload(hr, "water.txt", WATER)
        assert attach(hr, mine.id, water.id).status == "completed"

        assert {s.id for s in hr.vector_stores.list()} == {"handbook", mine.id}
        assert {s.id for s in sales.vector_stores.list()} == {"handbook"}
        assert {s.id for s in admin.vector_stores.list()} == {"handbook", "payroll", mine.id}
        assert [f.id for f in hr.files.list()] == [water.id]
        assert [f.id for f in sales.files.list()] == []
        assert {f.id for f in admin.files.list()} == {secret.id, water.id}

        url, auth = f"{proc.url}/v1", {"Authorization": "Bearer sk-sales"}
        hidden = [
            ("GET", "/vector_stores/payroll", None),
            ("POST", "/vector_stores/payroll", {"name": "mine now"}),
            ("DELETE", "/vector_stores/payroll", None),
            ("POST", "/vector_stores/payroll/search", {"query": "salary"}),
            ("GET", "/vector_stores/payroll/files", None),
            ("GET", f"/vector_stores/payroll/files/{secret.id}", None),
            ("GET", f"/vector_stores/payroll/files/{secret.id}/content", None),
            ("POST", f"/vector_stores/payroll/files/{secret.id}", {"attributes": {"a": "b"}}),
            ("DELETE", f"/vector_stores/payroll/files/{secret.id}", None),
            ("POST", "/vector_stores/payroll/files", {"file_id": water.id}),
            ("POST", "/vector_stores/payroll/file_batches", {"file_ids": [water.id]}),
            ("GET", f"/vector_stores/{mine.id}", None),  # (hr's own: not sales')
            ("GET", f"/files/{secret.id}", None),
            ("GET", f"/files/{secret.id}/content", None),
            ("DELETE", f"/files/{secret.id}", None),
            ("POST", "/vector_stores/handbook/files", {"file_id": secret.id}),  # another's file
            ("POST", "/vector_stores", {"name": "x", "file_ids": [secret.id]}),
            ("POST", "/vector_stores/default/files", {"file_id": water.id}),  # (not made)
        ]
        for method, path, body in hidden:
            r = httpx.request(method, url + path, json=body, headers=auth, timeout=60)
            assert r.status_code == 404, (method, path, r.text)
            assert "payroll" not in r.text or "payroll" in path, r.text
        assert not (tmp_path / "index" / "default").exists()
        assert admin.vector_stores.retrieve("payroll").file_counts.completed == 1  # untouched
        assert [f.id for f in admin.vector_stores.files.list("payroll")] == [secret.id]
        assert httpx.get(f"{proc.url}/metrics", headers=auth, timeout=30).status_code == 403
        # a name on its line in another case than the store's: none (the error that says so
        # names the store there is, and the index's folder)
        typo = {"Authorization": "Bearer sk-typo"}
        for method, path in [
            ("GET", "/vector_stores/Handbook"),
            ("POST", "/vector_stores/Handbook/search"),
        ]:
            r = httpx.request(method, url + path, json={"query": "x"}, headers=typo, timeout=60)
            assert r.status_code == 404 and "handbook" not in r.text, r.text
        # what it may read, it reads: an upload of a store it is given too (the web chat's
        # "open" of a source), but it deletes only its own
        guide = upload(admin, "guide.txt", "Holidays are booked a month ahead.")
        assert attach(admin, "handbook", guide.id).status == "completed"
        assert sales.files.retrieve(guide.id).filename == "guide.txt"
        assert sales.files.content(guide.id).read().startswith(b"Holidays")
        with pytest.raises(openai.PermissionDeniedError, match="delete only the files it"):
            sales.files.delete(guide.id)
        assert admin.files.retrieve(guide.id).id == guide.id
        assert hr.vector_stores.search(mine.id, query="water").data
        assert hr.files.content(water.id).read().decode() == WATER
        assert sales.vector_stores.retrieve("handbook").id == "handbook"
    assert "hr (reads handbook and its own)" in log.read_text()
    # the operator sees who made each store, and lists a leaving customer's (an audit)
    import json
    import subprocess
    import sys

    def collections(*extra: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "indexing.cli", "collections", "--index",
                str(tmp_path / "index"), *extra]  # fmt: skip
        env = {**os.environ, "CLARA_HOME": str(tmp_path / "home")}
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)

    listed = {r["name"]: r.get("made_by") for r in json.loads(collections("--json").stdout)}
    assert listed == {"handbook": "admin", "payroll": "admin", mine.id: "hr"}
    out = collections("--made-by", "hr").stdout
    assert mine.id in out and "(name: payroll; made by key hr)" in out and "handbook" not in out
    assert "was made by the API key carol" in collections("--made-by", "carol").stdout


def test_a_limited_keys_chats_search_its_collections_only(tiny_llama_dir, cm, tmp_path) -> None:
    """clara-serve: a chat of a key limited to some collections searches the first of them
    when it names none, another one is a 404 (in chat completions and in a Responses
    file_search tool), its own stores answer, and a stored response made without keys (which
    may quote any collection) is not there for it."""
    root = tmp_path / "index"
    add_documents(root, cm, DOCS[:2], collection="default")
    add_documents(root, cm, DOCS[2:4], collection="handbook")
    add_documents(root, cm, DOCS[4:], collection="payroll")
    keys = tmp_path / "keys"
    keys.write_text(KEYS)
    keys.chmod(0o600)
    home = tmp_path / "home"
    # a response stored by a clara without keys (it searched the default collection)
    with ServerProcess("--model", str(tiny_llama_dir), "--index", str(root),
                       env={"CLARA_HOME": str(home)}) as server:  # fmt: skip
        server.wait_ready()
        ask = {"input": "Hi", "max_output_tokens": 1}
        r = httpx.post(f"{server.url}/v1/responses", json=ask, timeout=60)
        old = r.json()["id"]
    with ServerProcess("--model", str(tiny_llama_dir), "--index", str(root),
                       "--api-key-file", str(keys), "--accept-any-model", "--collection-models",
                       env={"CLARA_HOME": str(home)}) as server:  # fmt: skip
        server.wait_ready()
        hr, admin = as_(server.url, "sk-hr"), as_(server.url, "sk-admin")
        chat = {"model": "clara", "messages": [{"role": "user", "content": "Where is Paris?"}],
                "max_tokens": 1}  # fmt: skip
        answer = hr.chat.completions.with_raw_response.create(**chat).parse()
        sources = answer.choices[0].message.model_extra["sources"]
        assert answer.model_extra["retrieval"]["collection"] == "handbook"
        assert {s["filename"] for s in sources} <= {n for n, _ in DOCS[2:4]}
        assert hr.models.list().data[0].model_extra["collection"] == "handbook"
        assert admin.models.list().data[0].model_extra["collection"] == "default"
        # a model per collection (--collection-models), for apps whose only choice is the
        # model: each key's own
        served = admin.models.list().data[0].id
        listed = {m.id: m.model_extra["collection"] for m in admin.models.list().data[2:]}
        assert listed == {f"{served}@{n}": n for n in ("default", "handbook", "payroll")}
        assert [m.id for m in hr.models.list().data[2:]] == [f"{served}@handbook"]
        by_model = hr.chat.completions.create(**{**chat, "model": f"{served}@handbook"})
        assert by_model.model == f"{served}@handbook"
        assert by_model.model_extra["retrieval"]["collection"] == "handbook"
        with pytest.raises(openai.NotFoundError):  # (not hr's)
            hr.chat.completions.create(**{**chat, "model": f"{served}@payroll"})
        with pytest.raises(openai.BadRequestError, match="name one of them"):
            admin.chat.completions.create(
                **{**chat, "model": f"{served}@handbook"}, extra_body={"collection": "payroll"}
            )
        on = admin.responses.create(model=f"{served}@payroll", input="hi", max_output_tokens=1)
        assert on.model == f"{served}@payroll"
        assert on.model_extra["retrieval"]["collection"] == "payroll"
        follow = admin.responses.create(  # (its model's collection, not the previous one's)
            model=f"{served}@handbook", input="and?", previous_response_id=on.id,
            max_output_tokens=1,
        )  # fmt: skip
        assert follow.model_extra["retrieval"]["collection"] == "handbook"
        assert admin.models.retrieve(f"{served}@payroll").model_extra["collection"] == "payroll"
        with pytest.raises(openai.NotFoundError) as e:  # (a client audit: it was told to
            admin.chat.completions.create(**{**chat, "model": f"{served}@nope"})  # leave
        assert (e.value.code, e.value.param) == ("model_not_found", "model")  # 'collection' out)
        said = []
        for hidden in ("payroll", "nope", "default"):  # a limited key: one answer for another
            with pytest.raises(openai.NotFoundError) as e:  # key's, for none, and for the
                hr.chat.completions.create(**{**chat, "model": f"{served}@{hidden}"})  # server's
            assert (e.value.code, e.value.param) == ("model_not_found", "model")  # default (a
            said.append(str(e.value).replace(hidden, "X"))  # review: its name was confirmed)
            assert f"no collection '{hidden}' this key may read" in str(e.value)
            with pytest.raises(openai.NotFoundError) as e:
                hr.models.retrieve(f"{served}@{hidden}")
            said.append(str(e.value).replace(hidden, "X"))
        assert len(set(said[0::2])) == 1 and len(set(said[1::2])) == 1  # (a chat app audit:
        # the model's 404 spoke of 'collection' and file_search, which the app cannot send)
        for collection in ("payroll", "default", "nope"):
            with pytest.raises(openai.NotFoundError) as e:
                hr.chat.completions.create(**chat, extra_body={"collection": collection})
            assert e.value.code == "collection_not_found"
            assert "it reads the collections its line of the key file names (handbook)" in str(
                e.value
            )
        with pytest.raises(openai.NotFoundError):
            hr.responses.create(
                model="clara", input="salary?", max_output_tokens=1,
                tools=[{"type": "file_search", "vector_store_ids": ["payroll"]}],
            )  # fmt: skip
        guest = as_(server.url, "sk-guest")
        with pytest.raises(openai.NotFoundError, match=r"names \(none\)") as e:
            guest.chat.completions.create(**chat)  # (given none: it names one it made)
        assert "'default'" not in str(e.value)  # (nor is it told the server's default)
        assert guest.models.list().data[0].model_extra["collection"] is None
        typo = as_(server.url, "sk-typo")
        with pytest.raises(openai.NotFoundError) as e:
            typo.chat.completions.create(**chat)
        assert "'Handbook'" in str(e.value) and "'handbook'" not in str(e.value)
        assert guest.chat.completions.create(**chat, extra_body={"retrieval": False}).choices
        # its own store answers, in chats and in Responses
        store = hr.vector_stores.create(name="notes")
        assert attach(hr, store.id, upload(hr, "water.txt", WATER).id).status == "completed"
        own = hr.chat.completions.create(**chat, extra_body={"collection": store.id})
        assert own.model_extra["retrieval"]["status"] == "ok"
        searched = hr.responses.create(
            model="clara", input="water?", max_output_tokens=1,
            tools=[{"type": "file_search", "vector_store_ids": [store.id]}],
        )  # fmt: skip
        assert searched.output[0].type == "file_search_call"
        both = hr.chat.completions.create(**chat, extra_body={"collection": [store.id, "handbook"]})
        assert both.model_extra["retrieval"]["collections"] == [store.id, "handbook"]
        for mixed in ([store.id, "payroll"], ["handbook", "nope"]):  # one not its own: a 404
            with pytest.raises(openai.NotFoundError, match=f"no collection '{mixed[1]}'"):
                hr.chat.completions.create(**chat, extra_body={"collection": mixed})
            with pytest.raises(openai.NotFoundError, match=f"'{mixed[1]}'"):
                hr.responses.create(
                    model="clara", input="salary?", max_output_tokens=1,
                    tools=[{"type": "file_search", "vector_store_ids": mixed}],
                )  # fmt: skip
        assert as_(server.url, "sk-sales").vector_stores.list().data[0].id == "handbook"
        # the keyless response: every unlimited key's, no limited key's
        assert admin.responses.retrieve(old).id == old
        with pytest.raises(openai.NotFoundError):
            hr.responses.retrieve(old)
        with pytest.raises(openai.NotFoundError):
            hr.responses.delete(old)
