"""POST /v1/completions: OpenAI's legacy text completion, JSON or SSE.

The prompt goes as it is to the bare base model, through the same queue, prefill batches and
decode batch as chat (`RagParams.raw`): no chat template, no retrieval. Tools that still use
this route: Continue's autocomplete, LiteLLM's `text-completion-openai/` models, and
`client.completions.create` of the OpenAI SDKs; mlx_lm.server, llama.cpp and Ollama serve it.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from clara.errors import ClaraError
from clara.stream import GenerationChunk
from clara_cli.http import APIError, to_api_error
from server.jobs import Job, Ready
from server.protocol import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    PromptTokensDetails,
    RagParams,
    Usage,
    legacy_completion_id,
)
from server.serving import OpenAIServing, usage_of


@dataclass
class _Text:
    """The completion so far: its text, and with logprobs the legacy per-token lists."""

    logprobs: bool
    offset: int  # characters before the first generated token (the echoed prompt)
    parts: list[str] = field(default_factory=list)
    chars: int = 0  # characters the generated tokens' bytes have completed so far
    utf8: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )
    lp: CompletionLogprobs | None = None

    def add(self, serving: OpenAIServing, chunk: GenerationChunk) -> CompletionLogprobs | None:
        """Take `chunk`; returns the logprobs entries it adds (with logprobs)."""
        self.parts.append(chunk.text)
        if not self.logprobs or chunk.logprob is None:
            return None
        entry = serving.token_logprob(chunk)
        top = {alt.token: alt.logprob for alt in entry.top_logprobs}
        top.setdefault(entry.token, entry.logprob)  # always the sampled token (OpenAI's, vLLM's)
        # where the token's text starts, in characters of the answer: a token holding part
        # of a character ("bytes:\\xec") starts where that character does; one after a
        # byte the answer never finished starts after its U+FFFD
        piece = self.utf8.decode(bytes(entry.bytes or b""))
        whole = not entry.token.startswith("bytes:") and piece.endswith(entry.token)
        at = self.chars + (len(piece) - len(entry.token) if whole else 0)
        self.chars += len(piece)
        new = CompletionLogprobs(
            tokens=[entry.token],
            token_logprobs=[entry.logprob],
            top_logprobs=[top],
            text_offset=[self.offset + at],
        )
        if self.lp is None:
            self.lp = CompletionLogprobs()
        for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            getattr(self.lp, name).extend(getattr(new, name))
        return new


class CompletionServing:
    """The legacy completions route, on top of the chat serving's queue and helpers."""

    def __init__(self, serving: OpenAIServing) -> None:
        self.serving = serving

    async def create(self, req: CompletionRequest, request: Request):
        s = self.serving
        start = time.perf_counter()
        s.engine.check_ready()
        s.check_model(req.model)
        req.check_supported()
        prompts = req.prompts()
        room = s.engine.settings.queue_size  # each prompt waits in the queue as a request
        if len(prompts) > max(1, room):
            raise APIError(
                400, f"{len(prompts)} prompts in one request; this server queues at most {room} "
                "(--queue-size): send fewer per request", param="prompt",
            )  # fmt: skip
        s.check_token_ids(prompts, "prompt")
        params = [req.to_params(s.defaults, prompt) for prompt in prompts]
        cm = s.engine.worker.cm
        echoes = [
            "" if not req.echo else p.raw if isinstance(p.raw, str) else cm.tokenizer.decode(p.raw)
            for p in params
        ]
        head = Completion(
            id=legacy_completion_id(),
            created=int(time.time()),
            model=s.model_name(s.is_bare(req.model), req.model),
            choices=[],
            system_fingerprint=s.engine.info.fingerprint,
        )
        texts = [_Text(logprobs=p.logprobs, offset=len(e)) for p, e in zip(params, echoes)]
        jobs = self._queue(params)  # (then nothing between may fail and leave them running)
        if req.stream:  # (one prompt: the schema says so)
            usage = bool(req.stream_options and req.stream_options.include_usage)
            job = jobs[0]

            def answer(_: Ready) -> AsyncIterator[str]:
                return self._stream(job, head, echoes[0], texts[0], usage, start)

            waiting = asyncio.ensure_future(self._wait_ready(jobs, 0, request))
            return StreamingResponse(
                await s.stream_when_ready(waiting, job, answer),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        for i in range(len(jobs)):
            await self._wait_ready(jobs, i, request)
        # several prompts decode side by side, in the one batch; one failing ends all
        tasks = [
            asyncio.ensure_future(self._whole(j, e, t, request, start))
            for j, e, t in zip(jobs, echoes, texts)
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # the first prompt's error, as HTTP
        finally:
            for job in jobs:
                job.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # (none left unretrieved)
        done = [task.result() for task in tasks]
        choices = [choice.model_copy(update={"index": i}) for i, (choice, _) in enumerate(done)]
        usage = Usage(
            prompt_tokens=sum(u.prompt_tokens for _, u in done),
            completion_tokens=sum(u.completion_tokens for _, u in done),
            total_tokens=sum(u.total_tokens for _, u in done),
            prompt_tokens_details=PromptTokensDetails(
                cached_tokens=sum(u.prompt_tokens_details.cached_tokens for _, u in done)
            ),
        )
        return JSONResponse(
            head.model_copy(update={"choices": choices, "usage": usage}).model_dump()
        )

    def _queue(self, params: list[RagParams]) -> list[Job]:
        """Queue every prompt's job first (so they are admitted and prefilled together); one
        refused before queueing (far too long) cancels those queued, as HTTP."""
        jobs: list[Job] = []
        try:
            for which, p in enumerate(params):
                try:
                    jobs.append(self.serving.engine.chat(p))
                except ClaraError as exc:
                    raise self._named(to_api_error(exc), which, len(params)) from None
        except BaseException:
            for job in jobs:
                job.cancel()
            raise
        return jobs

    async def _wait_ready(self, jobs: list[Job], which: int, request: Request) -> Ready:
        """Wait until prompt `which` is ready (retrieval and prompt done); a failure cancels
        every job of the request."""
        try:
            return await self.serving.until_ready(jobs[which], request)
        except APIError as exc:
            for job in jobs:
                job.cancel()
            raise self._named(exc, which, len(jobs)) from None
        except BaseException:
            for job in jobs:
                job.cancel()
            raise

    @staticmethod
    def _named(exc: APIError, which: int, count: int) -> APIError:
        """A prompt too long for the context names its parameter, and which prompt it is."""
        if exc.code == "context_length_exceeded":
            exc.param = "prompt"
            if count > 1:
                exc.message = f"prompt {which} (counting from 0): {exc.message}"
        return exc

    async def _whole(
        self, job: Job, echo: str, text: _Text, request: Request, start: float
    ) -> tuple[CompletionChoice, Usage]:
        async with aclosing(self.serving.tokens(job, request, start)) as chunks:
            async for event in chunks:
                text.add(self.serving, event)
        choice = CompletionChoice(
            text=echo + "".join(text.parts),
            logprobs=(text.lp or CompletionLogprobs()) if text.logprobs else None,
            finish_reason=event.finish_reason,
        )
        return choice, usage_of(event)

    async def _stream(
        self, job: Job, head: Completion, echo: str, text: _Text, include_usage: bool, start: float
    ) -> AsyncIterator[str]:
        def chunk(**fields) -> str:
            body = head.model_copy(update={"choices": [CompletionChoice(**fields)]})
            return _sse(body)

        lead = [chunk(text=echo)] if echo else []
        async with aclosing(self.serving.streamed(job, start, lead)) as events:
            async for event in events:
                if isinstance(event, str):
                    yield event
                    continue
                added = text.add(self.serving, event)
                if event.text or added is not None:
                    yield chunk(text=event.text, logprobs=added)
                if event.finish_reason is not None:
                    yield chunk(text="", finish_reason=event.finish_reason)
                    if include_usage:
                        yield _sse(head.model_copy(update={"usage": usage_of(event)}))
        yield "data: [DONE]\n\n"


def _sse(body: Completion) -> str:
    data = body.model_dump()
    if data["usage"] is None:
        del data["usage"]
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
