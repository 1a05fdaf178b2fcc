"""POST /v1/responses (JSON or the Responses event stream), GET / DELETE /v1/responses/{id}.

Built on the same engine interface as chat completions: the request becomes a conversation
(`instructions`, the stored `previous_response_id` chain, then `input`), submitted as one chat
job; the job's `Ready` (retrieval done) becomes the `file_search_call` output item, its
generation chunks the output message, whose `output_text` cites the retrieved files with
`file_citation` annotations.

A file_search tool searches its vector stores (clara collections, up to MAX_SEARCHED, as
one). Without one the default collection is searched as chat completions does (the `retrieval` extension
turns that off); `tool_choice: "none"` searches nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from clara_cli.http import CALLER, SCOPE, APIError, by_caller, client_gone_error
from indexing.service.handler import IndexService, is_vector_store
from indexing.service.search import clara_attributes, with_own_attributes
from indexing.service.state import key_sees
from server.jobs import Ready, SourceInfo
from server.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    ToolCall,
    checked_filters,
    collection_names,
)
from server.responses.protocol import (
    CALL_ITEMS,
    RESULT_ITEMS,
    FileCitation,
    FileSearchCall,
    FileSearchCallInput,
    FileSearchResult,
    FunctionCallInput,
    FunctionCallOutputInput,
    InputItemList,
    ItemReference,
    ReasoningInput,
    Response,
    ResponseCreateRequest,
    ResponseDeleted,
    new_id,
)
from server.responses.store import Chain, ResponseStore, items_of
from server.responses.stream import ResponseRun, sse_event
from server.serving import OpenAIServing

INDEXING_WAIT_S = 120.0
log = logging.getLogger("clara.serve")


def _not_found(response_id: str) -> APIError:
    return APIError(
        404,
        f"No response found with id '{response_id}' (only responses made with store true are "
        "kept, until deleted)",
        param="response_id",
        code="not_found",
    )


def _no_store(store_id: str, tool: int = 0) -> APIError:
    return APIError(
        404, f"No vector store found with id '{store_id}'",
        param=f"tools.[{tool}].vector_store_ids", code="not_found",
    )  # fmt: skip


def _tool_item(item: FunctionCallInput | FunctionCallOutputInput) -> dict[str, Any]:
    """A tool call or result of the input, as kept and listed (`input_items`) with an id."""
    fields = ("type", "call_id", "name", "arguments", "input", "output", "status")
    kept = {k: v for k, v in item.model_dump(exclude_none=True).items() if k in fields}
    kept["id"] = _sent_id(item) or new_id("fc" if item.type in CALL_ITEMS else "fco")
    kept.setdefault("status", "completed")
    return kept


def _tool_message(item: dict[str, Any]) -> ChatMessage:
    """A kept tool call or result (`_tool_item`) as the chat message the model reads: an
    assistant's call, or a tool's result (`server.protocol.conversation`)."""
    if item["type"] in RESULT_ITEMS:
        text = FunctionCallOutputInput.model_validate(item).text()
        return ChatMessage(role="tool", tool_call_id=item["call_id"], content=text)
    if item["type"] == "function_call":
        call = ToolCall(
            id=item["call_id"],
            function=FunctionCall(name=item["name"], arguments=item.get("arguments") or ""),
        )
    else:
        call = ToolCall(
            id=item["call_id"], type="custom",
            custom={"name": item["name"], "input": item.get("input") or ""},
        )  # fmt: skip
    return ChatMessage(role="assistant", content=None, tool_calls=[call])


def _text_echo(text: dict[str, Any] | None) -> dict[str, Any]:
    """The response's `text`: the format it was written in, and the verbosity asked (other
    keys are not echoed: stored with every response, they could be megabytes)."""
    fmt = (text or {}).get("format") or {"type": "text"}
    kept = ("type", "name", "schema", "strict", "description")  # (what OpenAI's format has)
    echo: dict[str, Any] = {"format": {k: fmt[k] for k in kept if k in fmt}}
    verbosity = (text or {}).get("verbosity")
    if verbosity in ("low", "medium", "high"):
        echo["verbosity"] = verbosity
    return echo


def _message_item(
    role: str, text: str, part: str = "input_text", item_id: str | None = None
) -> dict[str, Any]:
    content = [{"type": part, "text": text}]
    if part == "output_text":
        content[0]["annotations"] = []
    return {"id": item_id or new_id("msg"), "type": "message", "role": role, "content": content,
            "status": "completed"}  # fmt: skip


def _sent_id(item: Any) -> str | None:
    """The id an input item was sent with (an earlier item sent back carries its own, an
    `item_reference` names one)."""
    found = item.id if isinstance(item, ItemReference) else (item.model_extra or {}).get("id")
    return found if isinstance(found, str) and found else None


def _conversation_items(chain: Chain) -> list[dict[str, Any]]:
    """Every item of a stored conversation, oldest first: each earlier turn's input and
    output items, then the last turn's input."""
    items: list[dict[str, Any]] = []
    for n, (turn, response) in enumerate(chain.turns, 1):
        items += turn
        if n < len(chain.turns):  # (a search's results only where a listing asks for them,
            items += [  # as OpenAI's `include`; this one takes none)
                {k: v for k, v in item.items() if k != "results"}
                for item in response.get("output") or []
            ]
    return items


def _check_ids(req: ResponseCreateRequest, chain: Chain | None, previous: str | None) -> None:
    """OpenAI's 400 for an item id sent twice: twice in the input (its listing's `after`
    cursor then went round in a loop), or again beside `previous_response_id`, which already
    holds it (an app re-sending the earlier output, as it would without the id, read every
    earlier turn twice)."""
    if isinstance(req.input, str):
        return
    known = set() if chain is None else {
        item["id"] for turn, response in chain.turns for item in items_of(turn, response)
    }  # fmt: skip
    seen: set[str] = set()
    for i, item in enumerate(req.input):
        sent = _sent_id(item)
        if sent is None:
            continue
        if sent in known:
            raise APIError(
                400, f"Duplicate item found with id {sent} (input[{i}]): it is already in the "
                f"conversation of previous_response_id '{previous}'. Send only the new turn's "
                "items with previous_response_id, or the whole conversation without it",
                param="input",
            )  # fmt: skip
        if sent in seen:
            raise APIError(
                400, f"Duplicate item found with id {sent} (input[{i}]): each item of the input "
                "needs an id of its own", param="input",
            )  # fmt: skip
        seen.add(sent)


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
        found = self.store.get(response_id, CALLER.get())
        if found is None:
            raise _not_found(response_id)
        return found

    def cancel(self, response_id: str) -> dict[str, Any]:
        """OpenAI cancels background responses only, which clara-serve does not run: a 400
        for a stored response (it was a 404 "Unknown request URL", as if it were gone)."""
        self.get(response_id)  # (404 if unknown)
        raise APIError(
            400, "Only a response created with background: true can be cancelled, and "
            "clara-serve does not run background responses (a streamed one stops when its "
            "client closes the stream)", param="response_id",
        )  # fmt: skip

    def delete(self, response_id: str) -> ResponseDeleted:
        if not self.store.delete(response_id, CALLER.get()):
            raise _not_found(response_id)
        log.info("response %s deleted%s", response_id, by_caller())
        return ResponseDeleted(id=response_id)

    def input_items(
        self, response_id: str, order: str = "desc", limit: int = 20, after: str | None = None
    ) -> InputItemList:
        """A page of the items a response was made from (OpenAI's: `limit` of them after the
        cursor item `after`, newest first unless `order` is "asc"): with `previous_response_id`
        the whole conversation, each earlier turn's input and output items, then its own
        input (it listed its own input only, as if the conversation began there). A deleted
        earlier turn ends the listing at the turns after it."""
        chain = self.store.chain(response_id, CALLER.get())
        if chain is None:
            raise _not_found(response_id)
        items = _conversation_items(chain)
        items = items[::-1] if order == "desc" else items
        ids = [item["id"] for item in items]
        if after is not None:
            if after not in ids:  # (it was ignored: the first page again, as if in a loop)
                raise APIError(400, f"after: no input item '{after}' in response "
                               f"'{response_id}'", param="after")  # fmt: skip
            items = items[ids.index(after) + 1 :]
        items, more = items[:limit], len(items) > limit
        first, last = (items[0]["id"], items[-1]["id"]) if items else (None, None)
        return InputItemList(data=items, first_id=first, last_id=last, has_more=more)

    # ---- request -> chat job ---------------------------------------------------------------
    def _turn_items(self, req: ResponseCreateRequest) -> list[dict[str, Any]]:
        """This request's input as message items (what GET .../input_items lists), each with
        the id it was sent with, if any; an `item_reference` as the stored message it names
        (a search it names is skipped, as one sent back is)."""
        if isinstance(req.input, str):
            return [_message_item("user", req.input)]
        out = []
        for i, item in enumerate(req.input):
            if isinstance(item, ItemReference):
                found = self.store.item(item.id, CALLER.get())
                if found is None:
                    raise APIError(
                        404, f"Item with id '{item.id}' not found (input[{i}]): it is not an "
                        "item of a stored response (deleted, or stored with store: false)",
                        param="input",
                    )  # fmt: skip
                if found.get("type", "message") == "message" and "role" in found:
                    out.append(found)
                elif found.get("type") in CALL_ITEMS + RESULT_ITEMS:
                    out.append(found)
                continue
            if isinstance(item, FileSearchCallInput | ReasoningInput):
                continue
            if isinstance(item, FunctionCallInput | FunctionCallOutputInput):
                out.append(_tool_item(item))
                continue
            part = "output_text" if item.role == "assistant" else "input_text"
            out.append(_message_item(item.role, item.text(), part, _sent_id(item)))
        return out

    def _messages(
        self, req: ResponseCreateRequest, turn: list[dict]
    ) -> tuple[list[ChatMessage], dict[str, Any] | None]:
        """The conversation a response answers: `instructions`, the stored chain of
        `previous_response_id` (its inputs and answers), then `input`; and how the previous
        response searched (its `retrieval`), which a follow-up that names nothing to search
        searches again."""
        history: list[dict[str, Any]] = []
        searched = None
        if (previous := req.previous_response_id) is not None:
            key = CALLER.get()  # (another key's response is none: a 404)
            latest = self.store.get(previous, key)  # (one whose server died reads "failed")
            chain = self.store.chain(previous, key) if latest is not None else None
            if latest is None or chain is None:
                raise APIError(
                    404, f"Previous response with id '{previous}' not found",
                    param="previous_response_id", code="previous_response_not_found",
                )  # fmt: skip
            if latest.get("status") == "in_progress":  # (its answer would read as empty)
                raise APIError(
                    400, f"Previous response with id '{previous}' is still in progress: "
                    "chain to it once it has completed", param="previous_response_id",
                )  # fmt: skip
            if chain.gap is not None and req.truncation == "disabled":
                raise APIError(
                    404, f"Response '{chain.gap}', an earlier turn of the conversation of "
                    f"'{previous}', was deleted, so that conversation cannot be read whole: "
                    'leave truncation out (or send "auto") to go on from the turns after '
                    "it, or start a new conversation", param="previous_response_id",
                    code="previous_response_not_found",
                )  # fmt: skip
            _check_ids(req, chain, previous)
            for items, response in chain.turns:
                history += items
                answer = Response.model_validate(response).output_text
                if answer:  # (a failed one may have none: no empty assistant turn)
                    history.append(_message_item("assistant", answer, "output_text"))
            searched = latest.get("retrieval")
        messages = (
            [ChatMessage(role="system", content=req.instructions)] if req.instructions else []
        )
        for item in history + turn:
            if item.get("type") in CALL_ITEMS + RESULT_ITEMS:
                messages.append(_tool_message(item))
                continue
            text = "\n".join(p.get("text", "") for p in item["content"])
            messages.append(ChatMessage(role=item["role"], content=text))
        if not any(m.role != "system" for m in messages):  # no message to answer: an empty one
            messages.append(ChatMessage(role="user", content=""))
        return messages, searched

    async def _indexing(self, store_ids: list[str]) -> set[tuple[str, str]]:
        """(store, file id) of the files being indexed into these vector stores now."""
        if self.files is None:
            return set()
        found = set()
        for store_id in store_ids:
            links = await asyncio.to_thread(self.files.registry.links, store_id=store_id)
            found |= {(store_id, ln.file_id) for ln in links if ln.status == "in_progress"}
        return found

    async def _indexed(
        self, store_ids: list[str], request: Request, waiting: set[tuple[str, str]]
    ) -> None:
        """Wait (up to INDEXING_WAIT_S) for `waiting`, the files being indexed into the vector
        stores when the question came, so that a file attached just before it is searched
        (OpenAI's guide asks right after `vector_stores.files.create`). Files attached later
        are not waited for, and a client that leaves stops the wait."""
        deadline = time.monotonic() + INDEXING_WAIT_S
        while waiting:
            if time.monotonic() > deadline:
                log.info(
                    "file_search in %s: %d file(s) still being indexed after %.0f s; answering "
                    "from what is indexed", ", ".join(sorted({s for s, _ in waiting})),
                    len(waiting), INDEXING_WAIT_S,
                )  # fmt: skip
                return
            if await request.is_disconnected():
                raise client_gone_error()
            if (stopping := self.serving.stop_error()) is not None:  # the grace period's end
                raise stopping
            await asyncio.sleep(0.1)
            waiting &= await self._indexing(sorted({s for s, _ in waiting}))

    def _file_search(self, req: ResponseCreateRequest) -> tuple[list[str], int] | None:
        """(vector stores, top_k) of the request's file_search tool; None without one."""
        tools = req.file_searches()
        if not tools:
            return None
        for at, tool in tools:
            for store_id in collection_names(tool.vector_store_ids):
                if not key_sees(self.root, store_id, SCOPE.get()) or not is_vector_store(
                    self.root, store_id
                ):  # (another key's: none, before its files being indexed are waited for;
                    raise _no_store(store_id, at)  # looked at first: one there took longer)
        if len(tools) > 1:
            raise APIError(
                400, "one file_search tool per request is supported: list every vector store "
                "in its vector_store_ids", param=f"tools.[{tools[1][0]}]",
                code="unsupported_value",
            )  # fmt: skip
        at, tool = tools[0]
        store_ids = collection_names(tool.vector_store_ids)
        threshold = tool.ranking_options.score_threshold if tool.ranking_options else None
        if threshold:
            raise APIError(
                400, "ranking_options.score_threshold is not supported by clara-serve (the "
                "retrieved chunks are all read by the generator)",
                param=f"tools.[{at}].ranking_options.score_threshold", code="unsupported_value",
            )  # fmt: skip
        return store_ids, tool.max_num_results or self.serving.defaults.top_k

    def _chat_request(
        self,
        req: ResponseCreateRequest,
        messages: list[ChatMessage],
        named: list[str] | None,
        bare: bool = False,
        searched_before: dict[str, Any] | None = None,
    ):
        """The chat request a response runs (`named`: the collections of the request's model
        NAME@WHICH, resolved by `create`), and whether it searches (not with `bare`, the
        served model without retrieval: then a file_search tool is not used, as with
        tool_choice "none"). A follow-up (`previous_response_id`) with no file_search tool
        and no `collection` searches what the previous response searched, if it is still
        there (`searched_before`): a question after one about an uploaded file searched the
        server's default collection, and was answered from other documents."""
        search = None if bare else self._file_search(req)
        chat = ChatCompletionRequest(
            messages=messages,
            max_completion_tokens=req.max_output_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            mode=req.mode,
            retrieval_mode=req.retrieval_mode,
            logprobs=(lp := "message.output_text.logprobs" in (req.include or [])),
            top_logprobs=req.top_logprobs if lp else None,  # (asked for by `include` only)
        )
        if req.tool_choice == "none" or bare:
            chat.retrieval = False
        elif search is not None:
            chat.collection, chat.top_k = search
            # a model NAME@COLLECTION searches its collection: a tool's others are a 400, as
            # `collection` is (they were searched, and the answer named the model's)
            at, tool = req.file_search() or (0, None)
            assert tool is not None  # (`search`: there is one)
            self.serving.agree(req.model, named, search[0], f"tools.[{at}].vector_store_ids")
            chat.filters = tool.filters or req.filters  # (a proxy's, beside an app's tool)
            if tool.filters is not None and req.filters is not None:  # (one of them
                raise APIError(  # would be dropped without a word)
                    400, "give the filters in the file_search tool or beside it, not both",
                    param="filters",
                )  # fmt: skip
        else:
            # the collection asked for: `collection`, or a model NAME@COLLECTION's (which a
            # follow-up's previous collection does not override: a review)
            asked = self.serving.agree(req.model, named, req.collection, "collection")
            asked = asked or req.collection
            chat.retrieval, chat.collection, chat.top_k = req.retrieval, asked, req.top_k
            chat.filters = req.filters
            before = searched_before or {}
            names = before.get("collections") or [before.get("collection")]
            names = [n for n in names if isinstance(n, str) and n]  # (as stored: checked)
            there = [n for n in names if is_vector_store(self.root, n)]
            if collection_names(asked) in ([], names) and names and there == names:
                chat.collection = names
                if req.top_k is None and isinstance(before.get("top_k"), int):
                    chat.top_k = before["top_k"]
                if req.filters is None and isinstance(before.get("filters"), dict):  # (a follow-up
                    chat.filters = checked_filters(before["filters"], "previous_response_id")
                    # searched the whole store, past a filter that kept it to one team's)
            elif (
                asked is None
                and req.retrieval
                and names
                and names != [self.serving.defaults.collection]
            ):  # (it searched the server's default collection, another team's documents:
                gone = [n for n in names if n not in there]  # an audit)
                which = ", ".join(f"'{n}'" for n in gone or names)
                raise APIError(
                    404, f"the vector store {which} this conversation searched was deleted: "
                    "give a file_search tool or `collection` to search another one, or send "
                    "`retrieval: false` to go on without documents",
                    param="previous_response_id", code="collection_not_found",
                )  # fmt: skip
        return chat, search is not None and req.tool_choice != "none" and not bare

    # ---- create ----------------------------------------------------------------------------
    async def create(self, req: ResponseCreateRequest, request: Request):
        serving = self.serving
        serving.engine.check_ready()
        serving.check_model(req.model, resolve=False)
        named = serving.collections_of(req.model)  # (NAME@WHICH resolved once, here)
        req.check_supported()
        if req.previous_response_id is None:
            _check_ids(req, None, None)
        turn = await asyncio.to_thread(self._turn_items, req)  # (references read the store)
        messages, before = await asyncio.to_thread(self._messages, req, turn)  # reads the store
        bare = serving.is_bare(req.model)
        chat, searched = self._chat_request(req, messages, named, bare, before)
        stores = collection_names(chat.collection)
        waiting = await self._indexing(stores) if searched else set()
        if req.stream and waiting:  # headers and keep-alives now, not after the wait
            wait_then = self._wait_then_stream(req, request, chat, turn, bare, waiting)
            return self._streamed(wait_then)
        if waiting:
            await self._indexed(stores, request, waiting)
        if req.stream:  # a queue longer than a keep-alive: headers and keep-alives while it
            # waits (a proxy cut a silent request: a container audit)
            starting = asyncio.ensure_future(self._start(req, request, chat, searched, turn, bare))
            if await self.serving.done_within_keepalive(starting):  # (its refusal as HTTP)
                return self._streamed(starting.result().events())
            return self._streamed(self._when_started(starting))
        run = await self._start(req, request, chat, searched, turn, bare)
        return JSONResponse(await run.complete(request))

    @staticmethod
    def _streamed(events: AsyncIterator[str]) -> StreamingResponse:
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _wait_then_stream(
        self, req: ResponseCreateRequest, request: Request, chat, turn: list[dict], bare: bool,
        waiting: set[str],
    ) -> AsyncIterator[str]:  # fmt: skip
        """A stream whose vector store has files being indexed: keep-alive comments while
        they finish (a proxy would cut a silent request), then the response's events; what
        fails before the first of them is an `error` event, as headers are sent."""
        stores = collection_names(chat.collection)
        wait = asyncio.ensure_future(self._indexed(stores, request, waiting))
        try:
            async with aclosing(self.serving.keep_alive(wait)) as comments:
                async for comment in comments:
                    yield comment
            wait.result()
        except APIError as exc:
            yield sse_event("error", 0, code=exc.code, message=exc.message, param=exc.param)
            return
        finally:
            wait.cancel()
        starting = asyncio.ensure_future(self._start(req, request, chat, True, turn, bare))
        async with aclosing(self._when_started(starting)) as events:
            async for event in events:
                yield event

    async def _when_started(self, starting: asyncio.Future) -> AsyncIterator[str]:
        """Keep-alive comments until `starting` (`_start`: its turn in the queue, retrieval,
        the prompt) is done, then the response's events; a failure meanwhile is an `error`
        event, as headers are sent."""
        try:
            async with aclosing(self.serving.keep_alive(starting)) as comments:
                async for comment in comments:
                    yield comment
            run = starting.result()
        except APIError as exc:
            yield sse_event("error", 0, code=exc.code, message=exc.message, param=exc.param)
            return
        finally:
            if not starting.done():  # (the client left: the stream was closed)
                starting.cancel()
        async with aclosing(run.events()) as events:  # (a client gone: its job ends now)
            async for event in events:
                yield event

    async def _start(
        self, req: ResponseCreateRequest, request: Request, chat, searched: bool,
        turn: list[dict], bare: bool,
    ) -> ResponseRun:  # fmt: skip
        """Start generating the response: retrieval, the prompt, the job on the model thread."""
        serving = self.serving
        # "disabled": the whole conversation, or a 400 if it does not fit (before, a chain was
        # cut to --history-turns even so, without a word); "auto", and clara's default: the
        # last --history-turns exchanges (the small default model reads long histories
        # badly), fewer if need be. (OpenAI's default is "disabled": a conversation that grew
        # past a small model's context would then be refused at every turn after.)
        truncation = req.truncation or "auto"
        params = chat.to_params(serving.defaults, whole_history=truncation == "disabled")
        params.truncate = truncation == "auto"
        if req.text is not None:  # (a schema's grammar: off the event loop, once)
            params.grammar = await asyncio.to_thread(req.grammar)
        try:
            job, ready = await serving.start_chat(params, request)
        except APIError as exc:
            if exc.param == "messages":  # chat's name for what a response takes as `input`
                exc.param = "input"
            if exc.param == "response_format":  # (and as `text.format`)
                exc.param = "text.format"
            if searched and exc.code == "collection_not_found":  # deleted while its files
                stores = collection_names(chat.collection)  # were waited for
                gone = [n for n in stores if not is_vector_store(self.root, n)] or stores
                raise _no_store(gone[0], (req.file_search() or (0, None))[0]) from None
            raise
        response = Response(
            model=serving.model_name(bare, req.model),
            instructions=req.instructions,
            max_output_tokens=params.max_tokens,  # (the server's cap when none was asked)
            previous_response_id=req.previous_response_id,
            store=req.store is not False,
            temperature=params.temperature,
            top_p=params.top_p,
            top_logprobs=req.top_logprobs,
            # (a tool_choice object can only be {"type": "file_search"}: its other keys dropped)
            tool_choice={"type": "file_search"} if isinstance(req.tool_choice, dict)
            else req.tool_choice or "auto",
            tools=[t.model_dump(exclude_none=True) for t in req.tools or []],
            # echoed as asked (clara calls no tools and has one tier)
            parallel_tool_calls=req.parallel_tool_calls is not False,
            service_tier=req.service_tier,
            text=_text_echo(req.text),
            user=req.user,
            metadata=req.metadata or {},
            truncation=truncation,
            retrieval={
                "status": ready.retrieved.status, "collection": ready.retrieved.collection,
                **({"collections": r} if (r := ready.retrieved.collections) else {}),
                "mode": params.mode, "top_k": params.top_k,
                "retrieval_mode": params.retrieval_mode,
                **({"filters": params.filters} if params.filters is not None else {}),
            },
        )  # fmt: skip
        call = None
        # the search made without a file_search tool is shown as one when `include` asks for
        # its results (an agent audit: they were dropped without a word)
        include = req.include or []
        if searched or (params.retrieval and "file_search_call.results" in include):
            results = None
            if "file_search_call.results" in (req.include or []):
                sources = ready.retrieved.sources
                own = await asyncio.to_thread(self._own_attributes, {s.collection for s in sources})
                results = [self._result(s, own.get((s.collection, s.file_id))) for s in sources]
            call = FileSearchCall(queries=[params.query], results=results)
        return ResponseRun(self, job, ready, response, call, turn, params.logprobs)

    def file_id(self, s: SourceInfo) -> str:
        """The Files API id of an uploaded file, else the document id (documents
        `clara-index add` indexed have no upload)."""
        return s.file_id or s.document_id

    def _own_attributes(self, store_ids: set[str]) -> dict[tuple[str, str], dict[str, Any]]:
        """(store, file id) -> the attributes the app gave the file in that vector store."""
        if self.files is None:
            return {}
        return {
            (store_id, link.file_id): link.attributes
            for store_id in store_ids
            for link in self.files.registry.links(store_id=store_id)
            if link.attributes
        }

    def _result(self, s: SourceInfo, own: dict[str, Any] | None) -> FileSearchResult:
        path = None if s.file_id else s.path  # (an upload's is the server's folder)
        clara = clara_attributes(
            s.document_id,
            s.chunk_id,
            s.page_start,
            s.page_end,
            path,
            s.retrieval_mode,
            s.ranks,
            s.context,
            s.collection,  # (a file of one name in two stores searched: which one)
        )
        attributes = with_own_attributes(own, clara)
        return FileSearchResult(
            file_id=self.file_id(s), filename=s.filename, score=round(s.score, 6), text=s.text,
            attributes=attributes,
        )  # fmt: skip

    def citations(self, ready: Ready, text: str) -> list[FileCitation]:
        """One `file_citation` per file the answer draws on (`Retrieved.cited`), at its end,
        in retrieval order."""
        seen: dict[str, FileCitation] = {}
        for i in ready.retrieved.cited(text):
            s = ready.retrieved.sources[i]
            fid = self.file_id(s)
            seen.setdefault(fid, FileCitation(file_id=fid, filename=s.filename, index=len(text)))
        return list(seen.values())
