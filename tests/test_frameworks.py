"""LangChain's ChatOpenAI and LlamaIndex's OpenAILike (clients nobody here wrote) against a
real clara-serve: chat completions (and, for LangChain, the Responses API), plain and
streamed, with only the base URL and the key set.
A tiny random model answers gibberish; what is checked is that the framework gets answers.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.test_server_harness import API_KEY, DOCS, ServerProcess, add_documents, metric

langchain_openai = pytest.importorskip("langchain_openai", reason="langchain-openai: dev extra")
MODEL = "clara-tiny"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path):
    from clara.checkpoint import load_clara

    tmp = tmp_path_factory.mktemp("frameworks")
    add_documents(tmp / "index", load_clara(tiny_llama_dir, None, dtype=None), DOCS)
    proc = ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp / "index"), "--api-key", API_KEY,
        "--served-model-name", MODEL, "--max-tokens", "8",
        env={"CLARA_HOME": str(tmp / "home")}, log=tmp / "server.log",
    )  # fmt: skip
    yield proc.wait_ready()
    proc.stop()


@pytest.mark.parametrize("responses_api", [False, True], ids=["chat", "responses"])
def test_langchain_chat_openai(server: ServerProcess, responses_api: bool) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    llm = langchain_openai.ChatOpenAI(
        model=MODEL, base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0,
        use_responses_api=responses_api, temperature=0,
    )  # fmt: skip
    messages = [SystemMessage("Answer briefly."), HumanMessage(DOCS[0][1])]
    answer = llm.invoke(messages)
    assert answer.text and answer.usage_metadata["output_tokens"] >= 1
    streamed = "".join(chunk.text for chunk in llm.stream(messages))
    assert streamed == answer.text  # greedy: the stream says what the plain call said
    assert answer.response_metadata["model_name"] == MODEL
    endpoint = "/v1/responses" if responses_api else "/v1/chat/completions"
    metrics = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    assert (
        metric(metrics.text, "clara_requests_total", method="POST", endpoint=endpoint, status="200")
        >= 2
    )


@pytest.mark.parametrize("responses_api", [False, True], ids=["chat", "responses"])
def test_langchain_agent_history_with_tool_calls(server: ServerProcess, responses_api: bool):
    """An agent audit: LangGraph's loop sends the tools bound to the model, and a history with
    an AIMessage's tool calls and a ToolMessage; both APIs refused it (400). Now answered
    with text (clara calls no tools), the calls and results read as lines of the history."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "Sunny"

    llm = langchain_openai.ChatOpenAI(
        model=MODEL, base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0,
        use_responses_api=responses_api, temperature=0,
    ).bind_tools([get_weather])  # fmt: skip
    call = {"id": "call_1", "name": "get_weather", "args": {"city": "Paris"}}
    history = [
        HumanMessage("Weather in Paris?"),
        AIMessage("", tool_calls=[call]),
        ToolMessage("Sunny", tool_call_id="call_1"),
        HumanMessage(DOCS[0][1]),
    ]
    answer = llm.invoke(history)
    assert answer.text and not answer.tool_calls
    plain = llm.invoke([history[0], history[-1]])
    assert answer.usage_metadata["input_tokens"] > plain.usage_metadata["input_tokens"]


@pytest.mark.parametrize("responses_api", [False, True], ids=["chat", "responses"])
def test_langchain_structured_output(server: ServerProcess, responses_api: bool) -> None:
    """`with_structured_output(method="json_schema")` (LangChain's default for OpenAI) was a
    400: decoding is now held to the schema, and LangChain parses the answer."""
    from typing import Literal

    from pydantic import BaseModel

    class Verdict(BaseModel):
        answer: Literal["yes", "no"]

    llm = langchain_openai.ChatOpenAI(
        model=MODEL, base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0,
        use_responses_api=responses_api, temperature=0, max_tokens=24,
    )  # fmt: skip
    verdict = llm.with_structured_output(Verdict, method="json_schema").invoke("Is it true?")
    assert isinstance(verdict, Verdict) and verdict.answer in ("yes", "no")


def test_langchain_openai_embeddings(server: ServerProcess) -> None:
    """OpenAIEmbeddings sending text (its token-id path needs tiktoken's files from the
    network, and other ids than this model's: README) gets the server's query embeddings."""
    import numpy as np

    emb = langchain_openai.OpenAIEmbeddings(
        model=MODEL, base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0,
        check_embedding_ctx_length=False,
    )  # fmt: skip
    docs = emb.embed_documents([DOCS[0][1], DOCS[1][1]])
    direct = httpx.post(
        f"{server.url}/v1/embeddings", headers={"Authorization": f"Bearer {API_KEY}"},
        json={"model": MODEL, "input": DOCS[0][1], "encoding_format": "float"},
    ).json()["data"][0]["embedding"]  # fmt: skip
    np.testing.assert_allclose(docs[0], direct, atol=1e-5)
    assert len(docs) == 2 and not np.allclose(docs[0], docs[1])
    np.testing.assert_allclose(emb.embed_query(DOCS[0][1]), direct, atol=1e-5)


def test_llamaindex_openai_like(server: ServerProcess) -> None:
    openai_like = pytest.importorskip("llama_index.llms.openai_like", reason="make install")
    from llama_index.core.llms import ChatMessage

    llm = openai_like.OpenAILike(
        model=MODEL, api_base=f"{server.url}/v1", api_key=API_KEY, is_chat_model=True,
        temperature=0.0, max_retries=0, timeout=60,
    )  # fmt: skip
    messages = [ChatMessage(role="system", content="Answer briefly."),
                ChatMessage(role="user", content=DOCS[0][1])]  # fmt: skip
    answer = llm.chat(messages)
    assert answer.message.content
    sources = answer.raw.choices[0].message.model_extra["sources"]  # clara's extension
    assert sources[0]["filename"] == "river.txt"
    streamed = "".join(chunk.delta or "" for chunk in llm.stream_chat(messages))
    assert streamed == answer.message.content  # greedy: the same answer, token by token
