"""One Responses API response being generated from a chat job: the plain JSON result, or
OpenAI's Responses event stream (response.created ... response.completed), filled in and
stored (store: true) when generation finishes, or as "cancelled" when a streaming client
hangs up."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from fastapi import Request

from clara.stream import GenerationChunk
from clara_cli.http import CALLER, APIError, to_api_error
from server.jobs import DONE, Failed, Job, Ready
from server.responses.protocol import (
    FileSearchCall,
    IncompleteDetails,
    InputTokensDetails,
    OutputMessage,
    OutputText,
    Response,
    ResponseError,
    ResponseUsage,
)
from server.responses.store import INTERRUPTED

if TYPE_CHECKING:
    from server.responses.serving import ResponsesServing

log = logging.getLogger("clara.serve")


def sse_event(kind: str, sequence_number: int, **data: Any) -> str:
    """One event of OpenAI's Responses stream, as server-sent-events text."""
    body = {"type": kind, "sequence_number": sequence_number, **data}
    return f"event: {kind}\ndata: {json.dumps(body, ensure_ascii=False)}\n\n"


class ResponseRun:
    """One response being generated: the non-streamed result or the event stream."""

    def __init__(self, owner: ResponsesServing, job: Job, ready: Ready, response: Response,
                 call: FileSearchCall | None, turn: list[dict], logprobs: bool) -> None:  # fmt: skip
        self.owner, self.job, self.ready, self.response = owner, job, ready, response
        self.call, self.turn = call, turn
        self.key = CALLER.get()  # (the API key's name: the one that may read it back)
        self.message = OutputMessage()
        self.text: list[str] = []
        self.logprobs: list[dict[str, Any]] = []
        self.want_logprobs = logprobs
        self.start = time.perf_counter()
        self.first: float | None = None

    async def _finish(self, chunk: GenerationChunk) -> None:
        """Fill in the finished response and store it (store: true)."""
        r, text = self.response, "".join(self.text)
        done = "completed" if chunk.finish_reason == "stop" else "incomplete"
        self.message.status = done
        self.message.content = [
            OutputText(
                text=text,
                annotations=self.owner.citations(self.ready, text),
                logprobs=self.logprobs,
            )
        ]
        r.status = done
        if done == "incomplete":
            r.incomplete_details = IncompleteDetails(reason="max_output_tokens")
        r.output = ([self.call] if self.call else []) + [self.message]
        r.usage = ResponseUsage(
            input_tokens=chunk.prompt_positions, output_tokens=chunk.generation_tokens,
            total_tokens=chunk.prompt_positions + chunk.generation_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=chunk.cached_positions),
        )  # fmt: skip
        await self._store()

    def _logprob(self, chunk: GenerationChunk) -> list[dict[str, Any]]:
        """The chunk's token logprob (as OpenAI's output_text logprobs), kept; [] if none."""
        if not self.want_logprobs or chunk.logprob is None:
            return []
        entry = self.owner.serving.token_logprob(chunk).model_dump()
        self.logprobs.append(entry)
        return [entry]

    async def _fail(self, error: APIError) -> None:
        """Store the failed response with what was generated before the error (a stop
        deadline, a worker failure): its message `incomplete`, as a cancelled one keeps it."""
        self.response.status = "failed"
        self.response.error = ResponseError.of(error)
        if self.message in self.response.output:
            self._cut_short()
        await self._store()

    def _cut_short(self) -> None:
        """The message as generated so far, `incomplete` (a stream cancelled or failed)."""
        self.message.status = "incomplete"
        self.message.content = [
            OutputText(text="".join(self.text), annotations=[], logprobs=self.logprobs)
        ]

    async def _store(self) -> None:
        """Store the response (store: true) off the event loop: a slow or locked disk holds
        up this request only."""
        if self.response.store:
            await asyncio.to_thread(
                self.owner.store.put, self.response.model_dump(), self.turn, self.key
            )

    def _keep_abandoned(self) -> None:
        """The client hung up mid-stream: keep what was generated as a "cancelled" response
        (store: true), so the id `response.created` announced can still be retrieved and
        chained from; cut by a forced stop of the server (a second Ctrl-C), it "failed", as
        one a crash cut. Synchronous (one SQLite row): the cancelled task cannot await."""
        r = self.response
        if r.status != "in_progress" or not r.store:
            return
        self._cut_short()
        if not self.owner.serving.forced:
            r.status = "cancelled"
        else:  # the server was forced to stop: not the client's doing
            r.status, r.error = "failed", ResponseError(**INTERRUPTED)
        r.output = ([self.call] if self.call else []) + [self.message]
        try:
            self.owner.store.put(r.model_dump(), self.turn, self.key)
        except Exception:  # noqa: BLE001 - the client is gone; the log keeps the reason
            log.exception("could not store the cancelled response %s", r.id)

    def _metrics(self) -> None:
        if self.first is not None:
            self.owner.serving.metrics.ttft.observe(self.first - self.start)

    async def complete(self, request: Request) -> dict[str, Any]:
        if self.call:
            self.call.status = "completed"
        tokens = self.owner.serving.tokens(self.job, request, self.start)  # (cancels, TTFT)
        async with aclosing(tokens) as chunks:
            async for event in chunks:
                self.text.append(event.text)
                self._logprob(event)
        await self._finish(event)
        return self.response.model_dump()

    async def events(self) -> AsyncIterator[str]:
        seq = 0

        def sse(kind: str, **data: Any) -> str:
            nonlocal seq
            seq += 1
            return sse_event(kind, seq - 1, **data)

        r, msg = self.response, self.message
        try:
            await self._store()  # the id is announced now: it must be there after a crash
            yield sse("response.created", response=r.model_dump())
            yield sse("response.in_progress", response=r.model_dump())
            index = 0
            if self.call is not None:
                call, results = self.call, self.call.results
                call.results = None
                r.output.append(call)
                yield sse("response.output_item.added", output_index=0, item=call.model_dump())
                ids = {"output_index": 0, "item_id": call.id}
                yield sse("response.file_search_call.in_progress", **ids)
                call.status = "searching"
                yield sse("response.file_search_call.searching", **ids)
                call.status, call.results = "completed", results
                yield sse("response.file_search_call.completed", **ids)
                yield sse("response.output_item.done", output_index=0, item=call.model_dump())
                index = 1
            r.output.append(msg)
            yield sse("response.output_item.added", output_index=index, item=msg.model_dump())
            ids = {"output_index": index, "item_id": msg.id, "content_index": 0}
            empty = OutputText(text="").model_dump()
            yield sse("response.content_part.added", part=empty, **ids)
            while True:
                event = await self.owner.serving.stream_event(self.job)
                if event is None:  # long prefill: keep proxies and clients from timing out
                    yield ": keep-alive\n\n"
                    continue
                if isinstance(event, Failed) or event is DONE:
                    error = (
                        to_api_error(event.error) if isinstance(event, Failed)
                        else APIError(500, "generation ended without a finish reason")
                    )  # fmt: skip
                    await self._fail(error)
                    yield sse("response.failed", response=r.model_dump())
                    return
                if not isinstance(event, GenerationChunk):
                    continue
                self.first = self.first or time.perf_counter()
                new = self._logprob(event)
                if event.text or new:
                    self.text.append(event.text)
                    yield sse("response.output_text.delta", delta=event.text, logprobs=new, **ids)
                if event.finish_reason is not None:
                    break
            await self._finish(event)
            part = msg.content[0]
            for i, note in enumerate(part.annotations):
                yield sse("response.output_text.annotation.added", annotation_index=i,
                          annotation=note.model_dump(), **ids)  # fmt: skip
            yield sse("response.output_text.done", text=part.text, logprobs=part.logprobs, **ids)
            yield sse("response.content_part.done", part=part.model_dump(), **ids)
            yield sse("response.output_item.done", output_index=index, item=msg.model_dump())
            kind = "response.completed" if r.status == "completed" else "response.incomplete"
            yield sse(kind, response=r.model_dump())
        except APIError as exc:  # the store refused it (a full disk): say so, then end
            if exc.code != "storage_error":
                raise
            r.status = "failed"  # (not stored again as abandoned)
            yield sse("error", code=exc.code, message=exc.message, param=None)
        finally:
            self.job.cancel()  # a client that hung up stops the generation at the next token
            self._keep_abandoned()
            self._metrics()
