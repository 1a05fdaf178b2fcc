"""What a chat app whose only settings are a base URL, a key and a model (Chatbox, Jan,
LibreChat, Msty) can do: pick collections by model name (`NAME@COLLECTION`, a vector store's
name, several joined by '+'), read sources in the answer's text (`--sources-in-text`), and
get a 404 that says what is wrong with the name. A real clara-serve, the openai SDK."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from tests.test_index_service import WATER, attach, upload
from tests.test_server_harness import DOCS, ServerProcess, add_documents

BIKES = "Bicycles in Amsterdam outnumber residents; the city has 767 km of cycle paths."


@pytest.fixture(scope="module")
def cm(tiny_llama_dir):
    from clara.checkpoint import load_clara

    return load_clara(tiny_llama_dir, None, dtype=None)


def test_models_by_store_name_and_several_at_once(tiny_llama_dir, cm, tmp_path) -> None:
    """A chat app audit: stores an app named "Team Handbook ü" (or any key limited to some
    collections made) were listed as NAME@vs_<hex>, typing their name was a 404 about the
    served model, and no model name searched two collections."""
    root = tmp_path / "index"
    add_documents(root, cm, DOCS[:2], collection="handbook")
    with ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(root), "--collection-models",
        "--sources-in-text", "--max-tokens-limit", "8",
        env={"CLARA_HOME": str(tmp_path / "home")},
    ) as server:  # fmt: skip
        server.wait_ready()
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        served = client.models.list().data[0].id
        stores = {}
        for name, text in [("Team Handbook ü", WATER), ("team@corp/docs", BIKES)]:
            stores[name] = client.vector_stores.create(name=name).id
            assert stores[name].startswith("vs_")
            f = upload(client, f"{len(stores)}.txt", text)
            assert attach(client, stores[name], f.id).status == "completed"
        twins = [client.vector_stores.create(name="my notes").id for _ in range(2)]
        # (named as the server's default collection: listed by its id, as that name searches
        # the default, a review)
        twins.append(client.vector_stores.create(name="default").id)
        # the picker shows a store's name where it tells it apart; else its id
        listed = {m.id: m.model_extra["collection"] for m in client.models.list().data[2:]}
        assert listed == {
            f"{served}@handbook": "handbook",
            f"{served}@Team Handbook ü": stores["Team Handbook ü"],
            f"{served}@team@corp/docs": stores["team@corp/docs"],
            **{f"{served}@{t}": t for t in twins},
        }
        chat = {"messages": [{"role": "user", "content": "How fast does water boil?"}],
                "max_tokens": 4}  # fmt: skip
        for model in listed:  # every listed id answers, and carries its name back
            if model.endswith(("@handbook", *twins)):
                continue
            got = client.chat.completions.create(model=model, **chat)
            assert got.model == model
            assert got.model_extra["retrieval"]["collection"] == listed[model]
            assert client.models.retrieve(model).model_extra["collection"] == listed[model]
        # several joined by '+', by name or id, spaces around the model name dropped
        both = client.chat.completions.create(
            model=f" {served}@handbook + Team Handbook ü\n", **chat
        )
        assert both.model_extra["retrieval"]["collections"] == [
            "handbook", stores["Team Handbook ü"]
        ]  # fmt: skip
        names = {s["collection"] for s in both.choices[0].message.model_extra["sources"]}
        assert names == {"handbook", stores["Team Handbook ü"]}
        card = client.models.retrieve(f"{served}@handbook+{stores['team@corp/docs']}")
        assert card.model_extra["collections"] == ["handbook", stores["team@corp/docs"]]
        # what is wrong with a name, said
        for model, says in [
            (f"{served}@my notes", "several vector stores are named 'my notes': name one by"),
            (f"{served}@nope", "there is no collection 'nope'"),
            (f"{served}@handbook+nope", "there is no collection 'nope'"),
            (f"{served}@", "no collection after its '@'"),
            (f"{served}@handbook++my notes", "an empty name beside a '+'"),
            (f"openai/{served}", f"leave the provider's prefix out: '{served}'"),
        ]:
            with pytest.raises(openai.NotFoundError, match=re.escape(says)) as e:
                client.chat.completions.create(model=model, **chat)
            assert (e.value.code, e.value.param) == ("model_not_found", "model")
        with pytest.raises(openai.NotFoundError, match="there is no collection 'nope'"):
            client.completions.create(model=f"{served}@nope", prompt="Hi", max_tokens=1)
        with pytest.raises(openai.NotFoundError, match="there is no collection 'nope'"):
            client.embeddings.create(model=f"{served}@nope", input="Hi")
        assert client.completions.create(model=f"{served}@handbook", prompt="Hi", max_tokens=1)
        nine = "+".join(["handbook"] * 9)
        with pytest.raises(openai.BadRequestError, match="searches at most 8"):
            client.chat.completions.create(model=f"{served}@{nine}", **chat)
        # --sources-in-text: the answer's text names its sources, or says none matched
        text = both.choices[0].message.content
        assert "\n\nSources: " in text or "\n\nSearched, not cited: " in text
        assert "(handbook)" in text or "(Team Handbook ü)" in text  # (the store's name)
        for line in ("Sources: ", "Searched, not cited: "):
            if line in text:  # each file once, with its collection (several searched)
                listed_files = text.split(line, 1)[1].split("; ")
                assert len(listed_files) == len(set(listed_files))
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model=f"{served}@team@corp/docs", stream=True, **chat
            )
            if c.choices
        )
        last = streamed.split("\n\n")[-1]  # (one collection: none named)
        assert last.startswith(("Sources: 2.txt", "Searched, not cited: 2.txt")), streamed
        empty = client.vector_stores.create(name="empty").id
        nothing = client.chat.completions.create(model=f"{served}@{empty}", **chat)
        assert nothing.choices[0].message.content.endswith(
            "\n\n(No document matched the question: this answer is not from your documents.)"
        )
        # the line comes back in the history an app sends: left out of what the model reads
        # (it wrote file names of its own, which the citations then matched: a review)
        said = text.split("\n\n")[0]

        def prompt_tokens(answer: str) -> int:
            history = [chat["messages"][0], {"role": "assistant", "content": answer},
                       {"role": "user", "content": "And ice?"}]  # fmt: skip
            return client.chat.completions.create(
                model=f"{served}-no-retrieval", messages=history, max_tokens=1
            ).usage.prompt_tokens

        assert prompt_tokens(f"{said}\n\n{last}") == prompt_tokens(said)
        bare = client.chat.completions.create(model=f"{served}-no-retrieval", **chat)
        assert "Sources" not in bare.choices[0].message.content  # (asked without retrieval)
        # the Responses API's file_search results say which store each came from
        r = httpx.post(
            f"{server.url}/v1/responses",
            json={
                "model": served, "input": "water?", "max_output_tokens": 1,
                "include": ["file_search_call.results"],
                "tools": [{"type": "file_search",
                           "vector_store_ids": ["handbook", stores["Team Handbook ü"]]}],
            },
            timeout=120,
        )  # fmt: skip
        results = r.json()["output"][0]["results"]
        assert {x["attributes"]["vector_store_id"] for x in results} == {
            "handbook", stores["Team Handbook ü"]
        }  # fmt: skip
