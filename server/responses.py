"""POST /v1/responses (JSON or the Responses event stream), GET / DELETE /v1/responses/{id}.

Built on the same engine interface as chat completions: the request becomes a conversation
(`instructions`, the stored `previous_response_id` chain, then `input`), submitted as one chat
job; the job's `Ready` (retrieval done) becomes the `file_search_call` output item, its
generation chunks the output message, whose `output_text` cites the retrieved files with
`file_citation` annotations.

A file_search tool searches its vector store (a clara collection; one per request). Without
one the default collection is searched as chat completions does (the `retrieval` extension
turns that off); `tool_choice: "none"` searches nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from clara.generate import GenerationChunk
from clara_cli.http import APIError, to_api_error
from indexing.service_handler import IndexService
from server.engine import DONE, Failed, Job, Ready, SourceInfo
from server.protocol import ChatCompletionRequest, ChatMessage
from server.responses_protocol import (
    FileCitation,
    FileSearchCall,
    FileSearchCallInput,
    FileSearchResult,
    IncompleteDetails,
    InputItemList,
    OutputMessage,
    OutputText,
    Response,
    ResponseCreateRequest,
    ResponseDeleted,
    ResponseError,
    ResponseUsage,
    new_id,
)
from server.responses_store import ResponseStore
from server.serving import OpenAIServing

INDEXING_WAIT_S = 120.0
UPLOADS = "uploads"  # <index root>/uploads/<file_id>/<name>: files the Files API received


def _not_found(response_id: str) -> APIError:
    return APIError(
        404,
        f"No response found with id '{response_id}' (stored responses only: store was true)",
        param="response_id",
        code="not_found",
    )


def _message_item(role: str, text: str, part: str = "input_text") -> dict[str, Any]:
    content = [{"type": part, "text": text}]
    if part == "output_text":
        content[0]["annotations"] = []
    return {"id": new_id("msg"), "type": "message", "role": role, "content": content,
            "status": "completed"}  # fmt: skip


class ResponsesServing:
    """The Responses API over `OpenAIServing`'s engine; lives on `app.state.responses`."""

    def __init__(
        self, serving: OpenAIServing, store: ResponseStore, files: IndexService | None = None
    ) -> None:
        self.serving = serving
        self.store = store
        self.files = files  # the mounted Files API: file_search waits for its indexing jobs
        self.root: Path = serving.engine.settings.root

    # ---- stored responses ------------------------------------------------------------------
    def get(self, response_id: str) -> dict[str, Any]:
        found = self.store.get(response_id)
        if found is None:
            raise _not_found(response_id)
        return found

    def delete(self, response_id: str) -> ResponseDeleted:
        if not self.store.delete(response_id):
            raise _not_found(response_id)
        return ResponseDeleted(id=response_id)

    def input_items(self, response_id: str, order: str = "desc") -> InputItemList:
        items = self.store.input_items(response_id)
        if items is None:
            raise _not_found(response_id)
        items = items[::-1] if order == "desc" else items
        first, last = (items[0]["id"], items[-1]["id"]) if items else (None, None)
        return InputItemList(data=items, first_id=first, last_id=last)

    # ---- request -> chat job ---------------------------------------------------------------
    def _turn_items(self, req: ResponseCreateRequest) -> list[dict[str, Any]]:
        """This request's input as message items (what GET .../input_items lists)."""
        if isinstance(req.input, str):
            return [_message_item("user", req.input)]
        out = []
        for item in req.input:
            if isinstance(item, FileSearchCallInput):
                continue
            part = "output_text" if item.role == "assistant" else "input_text"
            out.append(_message_item(item.role, item.text(), part))
        return out

    def _messages(self, req: ResponseCreateRequest, turn: list[dict]) -> list[ChatMessage]:
        history: list[dict[str, Any]] = []
        if req.previous_response_id is not None:
            chain = self.store.chain(req.previous_response_id)
            if chain is None:
                raise APIError(
                    404,
                    f"Previous response with id '{req.previous_response_id}' not found",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            for items, response in chain:
                history += items
                answer = Response.model_validate(response).output_text
                history.append(_message_item("assistant", answer, "output_text"))
        messages = (
            [ChatMessage(role="system", content=req.instructions)] if req.instructions else []
        )
        for item in history + turn:
            text = "".join(p.get("text", "") for p in item["content"])
            messages.append(ChatMessage(role=item["role"], content=text))
        if not any(m.role != "system" for m in messages):  # no message to answer: an empty one
            messages.append(ChatMessage(role="user", content=""))
        return messages

    async def _indexed(self, store_id: str) -> None:
        """Wait (up to INDEXING_WAIT_S) for files still being indexed into the vector store,
        so that a file attached just before the question is searched (OpenAI's guide asks
        right after `vector_stores.files.create`)."""
        if self.files is None:
            return
        deadline = time.monotonic() + INDEXING_WAIT_S
        while time.monotonic() < deadline:
            links = await asyncio.to_thread(self.files.registry.links, store_id=store_id)
            if not any(link.status == "in_progress" for link in links):
                return
            await asyncio.sleep(0.1)

    def _file_search(self, req: ResponseCreateRequest) -> tuple[str, int] | None:
        """(collection, top_k) of the request's file_search tool; None without one."""
        if not req.tools:
            return None
        tool = req.tools[0]
        if len(req.tools) > 1:
            raise APIError(400, "one file_search tool per request is supported", param="tools")
        store_id = tool.vector_store_ids[0]
        if not (self.root / store_id / "manifest.json").is_file() or store_id == UPLOADS:
            raise APIError(
                404, f"No vector store found with id '{store_id}'",
                param="tools.[0].vector_store_ids", code="not_found",
            )  # fmt: skip
        threshold = tool.ranking_options.score_threshold if tool.ranking_options else None
        if threshold:
            raise APIError(
                400, "ranking_options.score_threshold is not supported by clara-serve (the "
                "retrieved chunks are all read by the generator)",
                param="tools.[0].ranking_options.score_threshold",
            )  # fmt: skip
        return store_id, tool.max_num_results or self.serving.defaults.top_k

    def _chat_request(self, req: ResponseCreateRequest, messages: list[ChatMessage]):
        search = self._file_search(req)
        chat = ChatCompletionRequest(
            messages=messages,
            max_completion_tokens=req.max_output_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            mode=req.mode,
            retrieval_mode=req.retrieval_mode,
            logprobs="message.output_text.logprobs" in (req.include or []),
            top_logprobs=req.top_logprobs,
        )
        if req.tool_choice == "none":
            chat.retrieval = False
        elif search is not None:
            chat.collection, chat.top_k = search
        else:
            chat.retrieval, chat.collection, chat.top_k = req.retrieval, req.collection, req.top_k
        return chat, search is not None and req.tool_choice != "none"

    # ---- create ----------------------------------------------------------------------------
    async def create(self, req: ResponseCreateRequest, request: Request):
        serving = self.serving
        serving.engine.check_ready()
        serving.check_model(req.model)
        req.check_supported()
        turn = self._turn_items(req)
        chat, searched = self._chat_request(req, self._messages(req, turn))
        if searched:
            await self._indexed(chat.collection)
        params = chat.to_params(serving.defaults)
        job = serving.engine.chat(params)
        try:
            ready = await serving._until_ready(job, request)
        except BaseException:
            job.cancel()
            raise
        response = Response(
            model=serving.served_model_name,
            instructions=req.instructions,
            max_output_tokens=req.max_output_tokens,
            previous_response_id=req.previous_response_id,
            store=req.store is not False,
            temperature=params.temperature,
            top_p=params.top_p,
            tool_choice=req.tool_choice or "auto",
            tools=[t.model_dump(exclude_none=True) for t in req.tools or []],
            user=req.user,
            metadata=req.metadata or {},
            retrieval={
                "status": ready.retrieved.status, "collection": ready.retrieved.collection,
                "mode": params.mode, "top_k": params.top_k,
                "retrieval_mode": params.retrieval_mode,
            },
        )  # fmt: skip
        call = None
        if searched:
            include = "file_search_call.results" in (req.include or [])
            results = [self._result(s) for s in ready.retrieved.sources]
            call = FileSearchCall(queries=[params.query], results=results if include else None)
        run = _Run(self, job, ready, response, call, turn, params.logprobs)
        if req.stream:
            return StreamingResponse(
                run.events(),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return JSONResponse(await run.complete(request))

    def file_id(self, s: SourceInfo) -> str:
        """The Files API id of an uploaded file (`<root>/uploads/<id>/<name>`), else the
        document id (documents `clara-index add` indexed have no upload)."""
        if s.path:
            p = Path(s.path)
            if p.parent.parent == self.root / UPLOADS:
                return p.parent.name
        return s.document_id

    def _result(self, s: SourceInfo) -> FileSearchResult:
        attributes: dict[str, Any] = {"document_id": s.document_id, "chunk_id": s.chunk_id}
        if s.page_start is not None:
            attributes.update(page_start=s.page_start, page_end=s.page_end or s.page_start)
        return FileSearchResult(
            file_id=self.file_id(s), filename=s.filename, score=round(s.score, 6), text=s.text,
            attributes=attributes,
        )  # fmt: skip

    def citations(self, ready: Ready, text: str) -> list[FileCitation]:
        """One `file_citation` per retrieved file, at the end of the answer (all of it was
        generated from them), in retrieval order."""
        seen: dict[str, FileCitation] = {}
        for s in ready.retrieved.sources:
            fid = self.file_id(s)
            seen.setdefault(fid, FileCitation(file_id=fid, filename=s.filename, index=len(text)))
        return list(seen.values())


class _Run:
    """One response being generated: the non-streamed result or the event stream."""

    def __init__(self, owner: ResponsesServing, job: Job, ready: Ready, response: Response,
                 call: FileSearchCall | None, turn: list[dict], logprobs: bool) -> None:  # fmt: skip
        self.owner, self.job, self.ready, self.response = owner, job, ready, response
        self.call, self.turn = call, turn
        self.message = OutputMessage()
        self.text: list[str] = []
        self.logprobs: list[dict[str, Any]] = []
        self.want_logprobs = logprobs
        self.start = time.perf_counter()
        self.first: float | None = None

    def _finish(self, chunk: GenerationChunk) -> None:
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
        )  # fmt: skip
        self._store()

    def _logprob(self, chunk: GenerationChunk) -> list[dict[str, Any]]:
        """The chunk's token logprob (as OpenAI's output_text logprobs), kept; [] if none."""
        if not self.want_logprobs or chunk.logprob is None:
            return []
        entry = self.owner.serving._logprob(chunk).model_dump()
        self.logprobs.append(entry)
        return [entry]

    def _fail(self, error: APIError) -> None:
        self.response.status = "failed"
        self.response.error = ResponseError(
            code=error.code or "server_error", message=error.message
        )
        self._store()

    def _store(self) -> None:
        if self.response.store:
            self.owner.store.put(self.response.model_dump(), self.turn)

    def _metrics(self) -> None:
        if self.first is not None:
            self.owner.serving.metrics.ttft.observe(self.first - self.start)

    async def complete(self, request: Request) -> dict[str, Any]:
        if self.call:
            self.call.status = "completed"
        try:
            while True:
                event = await self.owner.serving._next(self.job, request)
                if isinstance(event, Failed):
                    raise to_api_error(event.error)
                if event is DONE:
                    raise APIError(500, "generation ended without a finish reason")
                if isinstance(event, GenerationChunk):
                    self.first = self.first or time.perf_counter()
                    self.text.append(event.text)
                    self._logprob(event)
                    if event.finish_reason is not None:
                        break
        finally:
            self.job.cancel()
            self._metrics()
        self._finish(event)
        return self.response.model_dump()

    async def events(self) -> AsyncIterator[str]:
        seq = 0

        def sse(kind: str, **data: Any) -> str:
            nonlocal seq
            body = {"type": kind, "sequence_number": seq, **data}
            seq += 1
            return f"event: {kind}\ndata: {json.dumps(body, ensure_ascii=False)}\n\n"

        r, msg = self.response, self.message
        keepalive = self.owner.serving.keepalive_s
        try:
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
                event = await self.job.next(timeout=keepalive)
                if event is None:  # long prefill: keep proxies and clients from timing out
                    yield ": keep-alive\n\n"
                    continue
                if isinstance(event, Failed) or event is DONE:
                    error = (
                        to_api_error(event.error) if isinstance(event, Failed)
                        else APIError(500, "generation ended without a finish reason")
                    )  # fmt: skip
                    self._fail(error)
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
            self._finish(event)
            part = msg.content[0]
            for i, note in enumerate(part.annotations):
                yield sse("response.output_text.annotation.added", annotation_index=i,
                          annotation=note.model_dump(), **ids)  # fmt: skip
            yield sse("response.output_text.done", text=part.text, logprobs=part.logprobs, **ids)
            yield sse("response.content_part.done", part=part.model_dump(), **ids)
            yield sse("response.output_item.done", output_index=index, item=msg.model_dump())
            kind = "response.completed" if r.status == "completed" else "response.incomplete"
            yield sse(kind, response=r.model_dump())
        finally:
            self.job.cancel()  # a client that hung up stops the generation at the next token
            self._metrics()
