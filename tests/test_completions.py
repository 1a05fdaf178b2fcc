"""POST /v1/completions (OpenAI's legacy text completion) on a real clara-serve process, through
the openai SDK and httpx: the prompt as it is to the bare model, JSON and SSE, logprobs, echo,
token-id prompts, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from clara.checkpoint import load_clara
from clara.generate import generate
from clara.prompt import Prompt
from clara.stream import SamplingParams, TextStream
from tests.test_server_harness import API_KEY, ServerProcess, metric

MODEL = "clara-tiny"
PROMPT = "The river runs past the old"


@pytest.fixture(scope="module")
def cm(tiny_llama_dir: Path):
    return load_clara(tiny_llama_dir, None, dtype=None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path):
    tmp = tmp_path_factory.mktemp("completions")
    with ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp / "index"),
        "--served-model-name", MODEL, "--api-key", API_KEY,
        env={"CLARA_HOME": str(tmp / "home")}, log=tmp / "server.log",
    ) as proc:  # fmt: skip
        yield proc.wait_ready()  # (stopped on leaving, ready or not)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)


def post(server: ServerProcess, body: dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.post(f"{server.url}/v1/completions", json=body, headers=headers, timeout=60)


def test_the_prompt_goes_as_it_is_to_the_bare_model(client: openai.OpenAI, cm) -> None:
    """Before: 404 (Continue's autocomplete, LiteLLM's text-completion models and
    `completions.create` had nothing to call). The answer is the bare model's greedy
    continuation of the prompt's own tokens: no chat template, no retrieval."""
    ids = cm.tokenizer.encode(PROMPT)
    prompt = Prompt(list(ids), None, continues=True)
    want = [c for c in generate(cm, prompt, adapter=None, max_tokens=12)]
    got = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12)
    assert got.object == "text_completion" and got.id.startswith("cmpl-")
    assert got.model == MODEL and len(got.choices) == 1
    assert got.choices[0].text == "".join(c.text for c in want)
    assert got.choices[0].finish_reason == want[-1].finish_reason
    assert got.usage.prompt_tokens == len(ids)
    assert got.usage.completion_tokens == want[-1].generation_tokens
    by_ids = client.completions.create(model=MODEL, prompt=list(ids), max_tokens=12)
    assert by_ids.choices[0].text == got.choices[0].text
    assert client.completions.create(model=MODEL, prompt=PROMPT).usage.completion_tokens <= 16


def test_a_continuation_keeps_its_first_space(cm) -> None:
    """mlx-lm's detokenizers drop the leading space of an answer's first token, right for a
    chat turn. A continuation of "... France is" by " Paris" came back as "Paris": glued to
    the prompt, one char off in every `text_offset`, and a stop of " Paris" never fired."""
    tok = cm.tokenizer
    head, tail = tok.encode("The capital of France is"), tok.encode(" Paris today")
    assert tok.decode(head + tail) == "The capital of France is Paris today"  # (no merge)
    limit = 4096

    def answer(prompt: Prompt, **kw) -> tuple[str, str | None]:
        stream = TextStream.create(cm, SamplingParams(max_tokens=20, **kw), prompt, limit)
        text = ""
        for t in tail:
            chunk = stream.accept(t)
            text += chunk.text
            if chunk.finish_reason:
                return text, chunk.finish_reason
        return text, None

    assert answer(Prompt(head, None, continues=True))[0] == " Paris today"
    assert answer(Prompt(head, None))[0] == "Paris today"  # a chat answer starts afresh
    assert answer(Prompt(head, None, continues=True), stop=[" Paris"]) == ("", "stop")


def test_an_answer_cut_inside_a_character_drops_it(cm) -> None:
    """An answer that ran out of tokens between the bytes of "울" ended in U+FFFD."""
    tok = cm.tokenizer
    ids = tok.encode("서울 Seoul")
    assert tok.decode(ids) == "서울 Seoul"
    cut = next(n for n in range(1, len(ids)) if tok.decode(ids[:n]).endswith("\ufffd"))
    stream = TextStream.create(cm, SamplingParams(max_tokens=cut), Prompt([1], None), 4096)
    chunks = [stream.accept(t) for t in ids[:cut]]
    text = "".join(c.text for c in chunks)
    assert chunks[-1].finish_reason == "length"
    assert "\ufffd" not in text and text == tok.decode(ids[:cut]).rstrip("\ufffd")


def test_streamed_echo_logprobs_and_usage(client: openai.OpenAI, server: ServerProcess) -> None:
    whole = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=6, extra_body={"ignore_eos": True}
    )
    chunks = list(
        client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=6, stream=True, echo=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )
    )  # fmt: skip
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert texts[0] == PROMPT and "".join(texts[1:]) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    with httpx.stream(
        "POST", f"{server.url}/v1/completions", timeout=60,
        json={"prompt": PROMPT, "max_tokens": 2, "stream": True},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as r:  # fmt: skip
        lines = [x for x in r.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and "usage" not in json.loads(lines[-2][6:])
    lp = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, logprobs=3)
    got = lp.choices[0].logprobs
    assert len(got.tokens) == len(got.token_logprobs) == len(got.top_logprobs) == 4
    assert "".join(got.tokens) == lp.choices[0].text  # (greedy: each is its best alternative)
    assert all(len(top) == 3 and max(top.values()) == v for top, v in zip(got.top_logprobs, got.token_logprobs))  # fmt: skip
    assert got.text_offset == [sum(len(t) for t in got.tokens[:i]) for i in range(4)]
    zero = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, logprobs=0)
    got = zero.choices[0].logprobs  # the sampled token's entry, as OpenAI and vLLM give
    assert got.top_logprobs == [{t: v} for t, v in zip(got.tokens, got.token_logprobs)]
    hot = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, logprobs=1,
                                    temperature=2.0, seed=3)  # fmt: skip
    got = hot.choices[0].logprobs  # a sampled token outside the top 1 is there as well
    for t, v, top in zip(got.tokens, got.token_logprobs, got.top_logprobs):
        assert top[t] == v and len(top) == (1 if v == max(top.values()) else 2), top
    korean = client.completions.create(model=MODEL, prompt="서울의 날씨는", max_tokens=12,
                                       logprobs=0, temperature=2.0, seed=5)  # fmt: skip
    text, got = korean.choices[0].text, korean.choices[0].logprobs
    assert any(t.startswith("bytes:") for t in got.tokens)  # (this seed's answer has some)
    for t, at in zip(got.tokens, got.text_offset):  # each whole token where its offset says
        assert t.startswith("bytes:") or text[at : at + len(t)] == t, (t, at, text)
    assert got.text_offset == sorted(got.text_offset) and got.text_offset[-1] <= len(text)
    echoed = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, echo=True)
    assert echoed.choices[0].text.startswith(PROMPT)


def test_several_prompts_are_answered_as_choices_side_by_side(
    client: openai.OpenAI, server: ServerProcess
) -> None:
    """LangChain's legacy OpenAI class sends a batch's prompts in one request, and LiteLLM a
    prompt list: refused before. Each prompt is its own choice, as alone."""
    prompts = [PROMPT, "Once upon a time", "The capital of"]
    alone = [client.completions.create(model=MODEL, prompt=p, max_tokens=5) for p in prompts]
    got = client.completions.create(model=MODEL, prompt=prompts, max_tokens=5)
    assert [c.index for c in got.choices] == [0, 1, 2]
    assert [c.text for c in got.choices] == [a.choices[0].text for a in alone]
    assert got.usage.total_tokens == sum(a.usage.total_tokens for a in alone)
    from langchain_openai import OpenAI

    llm = OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, model=MODEL, max_tokens=5,
                 temperature=0, max_retries=0)  # fmt: skip
    assert llm.batch(prompts) == [a.choices[0].text for a in alone]


def test_more_prompts_than_the_queue_holds_is_a_400_not_a_503(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """Each prompt waits in the queue as a request: 3 prompts with --queue-size 2 were a 503
    that clients retried, forever, on an idle server (a review)."""
    proc = ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp_path / "index"), "--queue-size", "2",
        env={"CLARA_HOME": str(tmp_path / "home")}, log=tmp_path / "server.log",
    ).wait_ready()  # fmt: skip
    try:
        r = httpx.post(f"{proc.url}/v1/completions", json={"prompt": ["a", "b", "c"]}, timeout=60)
        assert r.status_code == 400 and "--queue-size" in r.json()["error"]["message"], r.text
        two = httpx.post(f"{proc.url}/v1/completions", json={"prompt": ["a", "b"]}, timeout=60)
        assert two.status_code == 200 and len(two.json()["choices"]) == 2
    finally:
        proc.stop()


@pytest.mark.parametrize(
    "body,param",
    [
        ({"prompt": ["one", "two"], "stream": True}, "prompt"),
        ({"prompt": ["x"] * 17}, "prompt"),
        ({"prompt": "x", "suffix": "def f():"}, "suffix"),
        ({"prompt": "x", "n": 2}, "n"),
        ({"prompt": "x", "best_of": 3}, "best_of"),
        ({"prompt": "x", "logit_bias": {"1": 5}}, "logit_bias"),
        ({"prompt": "x", "echo": True, "logprobs": 1}, "echo"),
        ({"prompt": [1, 10**6]}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "river " * 3000}, "prompt"),
    ],
)
def test_what_it_cannot_do_is_a_400(server: ServerProcess, body: dict, param: str) -> None:
    r = post(server, body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_a_too_long_prompt_among_several_is_named(server: ServerProcess) -> None:
    r = post(server, {"prompt": ["short", "river " * 3000, "also short"]})
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "context_length_exceeded", r.text
    assert err["param"] == "prompt" and err["message"].startswith("prompt 1 (counting from 0): ")
    assert err["message"].endswith(": shorten the prompt")  # no chat advice
    one = post(server, {"prompt": "river " * 3000}).json()["error"]["message"]
    assert "counting from" not in one and one.endswith(": shorten the prompt")


def test_metrics_count_the_route(server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    text = httpx.get(f"{server.url}/metrics", headers=headers).text
    assert (
        metric(
            text, "clara_requests_total", method="POST", endpoint="/v1/completions", status="200"
        )
        >= 1
    )
