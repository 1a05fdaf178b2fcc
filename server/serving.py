"""What the routes hand their work to: chat completions (JSON or SSE), embeddings, models.

Errors before the first byte become HTTP errors with the right status; once a stream has
started, an error is sent as an SSE `data: {"error": ...}` event (the OpenAI SDK raises it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from clara.errors import ClaraError
from clara.paths import path_bytes
from clara.retrieval import RETRIEVAL_MODES
from clara.stream import GenerationChunk, token_bytes, token_text
from clara.text import pages_label, printable, snippet
from clara_cli.http import SCOPE, APIError, client_gone_error, shutting_down_error, to_api_error
from indexing.service.state import key_sees, store_names, visible_to
from indexing.store import list_collections
from server.engine import Engine, too_long_to_embed
from server.jobs import DONE, Embedded, Failed, Job, Ready, SourceInfo
from server.protocol import (
    MAX_SEARCHED,
    NO_MATCH_LINE,
    Annotation,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    DeltaMessage,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    RagParams,
    RetrievalInfo,
    ServingDefaults,
    Source,
    TokenLogprob,
    TopLogprob,
    URLCitation,
    Usage,
    collection_names,
    completion_id,
    default_collection,
)

DISCONNECT_CHECK_S = 0.25  # how often a non-streamed request looks for its client
#: `/v1/models` also lists the served model under its name plus this: the same model without
#: retrieval (a chat app's "task model" for titles and tags)
BARE_SUFFIX = "-no-retrieval"
log = logging.getLogger("clara.serve")
SNIPPET_CHARS = 240
MAX_EMBEDDING_INPUTS = 2048
#: Seconds before the stop deadline (uvicorn's graceful-shutdown timeout) that answers still
#: running end with a `shutting_down` error, so it reaches the client before the cut.
STOP_MARGIN_S = 2.0


def _final(event: object) -> bool:
    """Whether `event` completes its request (kept even past the stop deadline)."""
    if isinstance(event, GenerationChunk):
        return event.finish_reason is not None
    return isinstance(event, (Embedded, Failed)) or event is DONE


def source_url(s: SourceInfo, files_url: str | None = None) -> str:
    """Where the source's file is: an upload's Files API content route (relative to the
    server: the server's folders are none of a client's business; under `files_url`, the
    `clara-index serve` beside a server started with --no-files-api, where that route is),
    the `file://` URL of a file `clara-index add` indexed on this machine (with `#page=` for
    PDFs), else a clara:// reference."""
    if s.file_id:
        url = f"{(files_url or '').rstrip('/')}/v1/files/{s.file_id}/content"
    elif s.path:  # (a name that is not UTF-8 as its bytes: `\xe9` in the text is %E9)
        url = "file://" + urllib.parse.quote_from_bytes(path_bytes(os.path.abspath(s.path)))
    else:
        url = f"clara://{s.collection}/{s.document_id}"
    if s.page_start is not None and s.filename.lower().endswith(".pdf"):
        url += f"#page={s.page_start}"
    return url


def _title(s: Source) -> str:
    where = pages_label(s.filename, s.page_start, s.page_end)
    return f"{s.filename}, {where}" if where else s.filename


def usage_of(last: GenerationChunk) -> Usage:
    """The usage of a request whose last chunk is `last`."""
    return Usage(
        prompt_tokens=last.prompt_positions,
        completion_tokens=last.generation_tokens,
        total_tokens=last.prompt_positions + last.generation_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=last.cached_positions),
    )


def sources_of(ready: Ready, files_url: str | None = None) -> list[Source]:
    return [
        Source(
            index=i,
            chunk_id=s.chunk_id,
            document_id=s.document_id,
            filename=s.filename,
            page_start=s.page_start,
            page_end=s.page_end,
            section=s.context or None,
            score=round(s.score, 6),
            snippet=snippet(s.text, SNIPPET_CHARS),
            url=source_url(s, files_url),
            collection=s.collection,
            ranks=s.ranks,
            retrieval_mode=s.retrieval_mode,
            file_id=s.file_id,
        )
        for i, s in enumerate(ready.retrieved.sources, start=1)
    ]


def annotations_of(ready: Ready, sources: list[Source], content: str) -> list[Annotation]:
    """One `url_citation` per place the answer draws on (`Retrieved.cited`), spanning it:
    two chunks of one page cite it once (they read as the same citation twice)."""
    out: dict[tuple[str, str], Annotation] = {}
    for s in (sources[i] for i in ready.retrieved.cited(content)):
        title = _title(s)
        out.setdefault((s.url, title), Annotation(
            url_citation=URLCitation(start_index=0, end_index=len(content), title=title, url=s.url)
        ))  # fmt: skip
    return list(out.values())


def sources_line(
    ready: Ready, sources: list[Source], answer: str, names: dict[str, str] | None = None
) -> str:
    """What an answer's text ends with under `--sources-in-text`: the places it draws on
    (`Retrieved.cited`), each once, with its collection when several were searched (by the
    name its vector store was given, in `names`); else the retrieved ones, said to be
    uncited; else that no document matched. Nothing for an answer asked without retrieval."""
    r = ready.retrieved
    if r.status == "disabled":
        return ""
    if not sources:
        return f"\n\n{NO_MATCH_LINE}"
    several, names = len(r.collections) > 1, names or {}

    def listed(found: list[Source]) -> str:
        titles = [
            _title(s)
            + (f" ({printable(names.get(s.collection) or s.collection)})" if several else "")
            for s in found
        ]
        return "; ".join(dict.fromkeys(titles))

    if cited := r.cited(answer):
        return f"\n\nSources: {listed([sources[i] for i in cited])}"
    return f"\n\nSearched, not cited: {listed(sources)}"


def open_webui_source(source: Source, text: str) -> dict[str, Any]:
    """A source as Open WebUI reads one (`--source-events`): one citation card per retrieved
    chunk (Open WebUI makes a card of each `metadata.source`, named by its `metadata.name`:
    its file, section and pages), showing its `text` (the chunk's)."""
    name = source.filename + (f" ({source.section})" if source.section else "")
    if where := pages_label(source.filename, source.page_start, source.page_end):
        name += f", {where}"
    return {
        "source": {"name": name, "url": source.url},
        "document": [text],
        "metadata": [{
            "source": f"clara:{source.collection}/{source.chunk_id}", "name": name,
            "file": source.filename, "url": source.url, "score": source.score,
        }],
    }  # fmt: skip


def source_event(source: Source, text: str) -> str:
    """A source as the SSE line Open WebUI reads as a "source" event, in a stream."""
    event = {"type": "source", "data": open_webui_source(source, text)}
    return f"data: {json.dumps({'event': event})}\n\n"


def _sse(data: ChatCompletionChunk | dict, null_usage: bool = False) -> str:
    """One SSE event. Chunks are shaped like OpenAI's: a delta lists only what it carries,
    and `usage` is null in every chunk but the last when the client asked for it
    (`null_usage`: stream_options.include_usage), absent otherwise."""
    if isinstance(data, ChatCompletionChunk):
        data = data.model_dump()
        for choice in data["choices"]:
            choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
        for key in ("usage", "retrieval"):
            if data[key] is None and not (key == "usage" and null_usage):
                del data[key]
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


@dataclass
class _Reply:
    """Per-request constants shared by every chunk of one completion."""

    id: str
    created: int
    model: str
    fingerprint: str
    ready: Ready
    retrieval: RetrievalInfo
    logprobs: bool = False
    json: bool = False  # the answer is held to JSON: no sources line after it


class OpenAIServing:
    """The OpenAI-shaped front of the engine; one instance lives on `app.state.serving`."""

    def __init__(
        self,
        engine: Engine,
        defaults: ServingDefaults,
        served_model_name: str,
        keepalive_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.defaults = defaults
        self.served_model_name = served_model_name
        self.keepalive_s = keepalive_s
        self.metrics = engine.metrics
        self.created = int(time.time())
        self.accept_any_model = False  # --accept-any-model: answer whatever model is named
        self.stop_by: float | None = None  # monotonic time answers in progress end by
        self.forced = False  # a forced stop (a second Ctrl-C) cuts what still runs

    def stopping(self, grace_s: float) -> None:
        """The server stops (SIGTERM) and cuts the connections still open in `grace_s`
        seconds: answers still running end STOP_MARGIN_S (at most half the grace) before that
        with a `shutting_down` error, which a client can read, instead of a connection closed
        in mid-stream."""
        self.stop_by = time.monotonic() + grace_s - min(STOP_MARGIN_S, grace_s / 2)

    def stop_error(self) -> APIError | None:
        """The `shutting_down` error once a stop's deadline for answers has passed, else None."""
        if self.stop_by is None or time.monotonic() < self.stop_by:
            return None
        return shutting_down_error(
            "the server is shutting down and could not finish this answer in time; ask again"
        )

    async def stream_event(self, job: Job) -> object | None:
        """A stream's next event from `job`; None after `keepalive_s` without one (the stream
        sends a keep-alive), `Failed(shutting_down)` when the server's stop deadline is near."""
        timeout = self.keepalive_s
        if self.stop_by is not None:
            timeout = max(0.0, min(timeout, self.stop_by - time.monotonic()))
        stopped = self.stop_error()
        if stopped is None:
            event = await job.next(timeout=timeout)
        else:  # past the deadline: only what is already there (its final token, perhaps)
            try:
                event = job.events.get_nowait()
            except asyncio.QueueEmpty:
                event = None
        stopped = stopped or self.stop_error()
        if stopped is not None and not _final(event):
            job.cancel(server_stops=True)
            return Failed(stopped)
        return event

    # ---- models ----------------------------------------------------------------------------
    @property
    def bare_model_name(self) -> str:
        """The served model without retrieval: for a chat app's side requests (titles, tags,
        query rewrites), which would otherwise be answered from the documents."""
        return self.served_model_name + BARE_SUFFIX

    def is_bare(self, model: str | None) -> bool:
        return model == self.bare_model_name

    def model_name(self, bare: bool, asked: str | None = None) -> str:
        """The name an answer carries: the bare model's when it was asked for, a collection's
        model's (`asked`, NAME@COLLECTION) when it was, else the served one's (what OpenAI
        does: the name asked)."""
        if asked is not None and self._after_at(asked) is not None:
            return asked
        return self.bare_model_name if bare else self.served_model_name

    def _after_at(self, model: str | None) -> str | None:
        """What a model name NAME@WHICH names after the served model's name and its '@'
        (None for another model name)."""
        prefix = self.served_model_name + "@"
        return model[len(prefix) :] if model and model.startswith(prefix) else None

    def _readable(self) -> _Readable:
        """What the request's key may read, for model names NAME@WHICH."""
        root, scope = self.engine.settings.root, SCOPE.get()
        ids = set(visible_to(root, list_collections(root), scope))
        names = store_names(root) if ids - {self.defaults.collection} else {}
        default = self.defaults.collection
        sees = scope is None or key_sees(root, default, scope)  # (there or not yet: a key
        return _Readable(ids, names, default, sees)  # given it searches it, as when unnamed)

    def collections_of(self, model: str | None) -> list[str] | None:
        """The collections a model name NAME@WHICH searches (NAME: the served model's), so
        that a chat app whose only choice is the model (Open WebUI, Chatbox, Jan) can pick
        them; None for another model name. WHICH is a collection (a vector store's id), a
        vector store's name (one of those the request's key may read, which no other of them
        has), or up to MAX_SEARCHED of these joined by '+' ("handbook+Team notes"). One that
        is none of those is the model's 404 (the same for another key's as for none: the
        server's default too, for a key that may not read it)."""
        which = self._after_at(model)
        if which is None:
            return None
        readable = self._readable()
        parts = [which]
        if readable.resolve(which) is None and "+" in which:
            parts = [p.strip() for p in which.split("+")]
            if len(parts) > MAX_SEARCHED:
                raise APIError(
                    400, f"the model '{model}' names {len(parts)} collections: a model "
                    f"name searches at most {MAX_SEARCHED}", param="model",
                )  # fmt: skip
        out = []
        for part in parts:
            found = readable.resolve(part)
            if found is None:
                raise self._no_collection(model, part, readable, len(parts) > 1)
            out.append(found)
        return list(dict.fromkeys(out))

    def _no_collection(
        self, model: str | None, part: str, readable: _Readable | None, joined: bool = False
    ) -> APIError:
        """The 404 of a model NAME@WHICH whose `part` is no collection the key may read."""
        if not part:
            why = "an empty name beside a '+'" if joined else "no collection after its '@'"
        elif readable is not None and readable.named[part] > 1:
            why = (
                f"several vector stores are named '{part}': name one by its id, as GET "
                "/v1/models lists them"
            )
        else:
            scoped = SCOPE.get() is not None
            why = f"there is no collection '{part}'" + (" this key may read" if scoped else "")
        return APIError(
            404, f"The model '{model}' does not exist: {why} (GET /v1/models lists the "
            "served models)", param="model", code="model_not_found",
        )  # fmt: skip

    def named_collections(
        self, model: str | None, collection: str | list[str] | None, param: str
    ) -> list[str] | None:
        """The collections of a request's model name (`collections_of`), checked against
        those it names (`collection`, the request's `param`): both and not the same is a 400."""
        return self.agree(model, self.collections_of(model), collection, param)

    @staticmethod
    def agree(
        model: str | None, named: list[str] | None, collection: str | list[str] | None, param: str
    ) -> list[str] | None:
        """`named`, the collections model NAME@WHICH resolved to, checked against those the
        request names (`named_collections`, for a caller that resolved the name already)."""
        asked = collection_names(collection)
        if named is not None and asked and set(asked) != set(named):
            raise APIError(
                400, f"the model '{model}' searches {_listed('the collection', named)}, and "
                f"the request names {', '.join(repr(n) for n in asked)}: name one of them",
                param=param,
            )  # fmt: skip
        return named

    def model_names(self) -> set[str]:
        names = {self.served_model_name, self.bare_model_name, self.engine.settings.model}
        if self.engine.info is not None:
            names.add(self.engine.info.model_id)
        return names

    def check_model(self, model: str | None, resolve: bool = True) -> None:
        """A 404 for a model name this server does not serve: another name (unless
        --accept-any-model), or NAME@WHICH naming no collection the key may read (an audit:
        completions and embeddings took any, which /v1/models said did not exist; with
        `resolve` False the caller resolves it: `named_collections`)."""
        if self._after_at(model) is not None:
            if resolve:
                self.collections_of(model)
            return
        if model is not None and not self.accept_any_model and model not in self.model_names():
            near = next((n for n in self.model_names() if model.endswith("/" + n)), None)
            raise APIError(
                404,
                f"The model '{model}' does not exist; this server serves "
                f"'{self.served_model_name}' (GET /v1/models lists it; "
                + (f"leave the provider's prefix out: '{near}'; " if near else "")
                + "start clara-serve with --accept-any-model to answer any model name, e.g. "
                "OpenAI's in unchanged code)",
                type="invalid_request_error",
                param="model",
                code="model_not_found",
            )

    def card(
        self, bare: bool = False, collections: list[str] | None = None, label: str | None = None
    ) -> ModelCard:
        """The served model, its `bare` twin, or its twin NAME@`label` for `collections`."""
        info = self.engine.info
        return ModelCard(
            id=f"{self.served_model_name}@{label}" if collections else self.model_name(bare),
            created=self.created,
            root=info.model_id if info else self.engine.settings.model,
            max_model_len=info.context_limit if info else None,
            mode=self.defaults.mode,
            collection=None
            if bare
            else (collections or [default_collection(self.defaults)])[0] or None,
            collections=collections if collections and len(collections) > 1 else None,
            retrieval=not bare,
            retrieval_modes=None if bare else list(RETRIEVAL_MODES),
            retrieval_mode=None if bare else self.defaults.retrieval_mode,
        )

    def models(self) -> ModelList:
        """The served models, while the model loads too (their names are known from the
        start): a chat app that lists them then (Open WebUI) dropped the model, and told its
        user "Model '' was not found" instead of the chat's "still loading"."""
        if self.engine.state == "failed":
            self.engine.check_ready()  # (its model_failed 503)
        cards = [self.card(), self.card(bare=True)]
        if self.defaults.collection_models:  # (those the request's key may read, by name
            readable = self._readable()  # where the name tells them apart)
            cards += [
                self.card(collections=[i], label=readable.label(i)) for i in sorted(readable.ids)
            ]
        return ModelList(data=cards)

    def model(self, model_id: str) -> ModelCard:
        model_id = model_id.strip()  # (as a request's model name is)
        if not model_id:  # GET /v1/models/ (a base URL ending in a slash)
            raise APIError(
                404, "no model id after /v1/models/: GET /v1/models lists the served models",
                param="model", code="model_not_found",
            )  # fmt: skip
        if self.engine.state == "failed":
            self.engine.check_ready()
        self.check_model(model_id, resolve=False)
        collections = self.collections_of(model_id)
        there = list_collections(self.engine.settings.root)
        for name in collections or []:  # (NAME@X is taken by any request; its card is there
            if name not in there:  # for a collection there: the default may not be yet)
                raise self._no_collection(model_id, name, None)
        return self.card(
            bare=self.is_bare(model_id), collections=collections, label=self._after_at(model_id)
        )

    # ---- chat ------------------------------------------------------------------------------
    async def chat(self, req: ChatCompletionRequest, request: Request):
        start = time.perf_counter()
        self.engine.check_ready()
        self.check_model(req.model, resolve=False)  # (`named_collections` resolves it)
        req.check_supported()
        params = req.to_params(self.defaults)
        if named := self.named_collections(req.model, req.collection, "collection"):
            params.collections = named
        bare = self.is_bare(req.model)
        params.retrieval = params.retrieval and not bare
        model = self.model_name(bare, req.model)
        if req.response_format is not None:  # (a schema's grammar: off the event loop)
            params.grammar = await asyncio.to_thread(req.grammar)
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            job = self.queue_chat(params)
            waiting = asyncio.ensure_future(self.until_ready(job, request))

            def answer(ready: Ready) -> AsyncIterator[str]:
                return self._stream(job, self._reply(params, model, ready), usage, start)

            return StreamingResponse(
                await self.stream_when_ready(waiting, job, answer),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        job, ready = await self.start_chat(params, request)
        reply = self._reply(params, model, ready)
        done = (await self._complete(job, reply, request, start)).model_dump()
        if self.defaults.source_events:  # (Open WebUI shows an answer's top-level `sources`
            found = reply.ready.retrieved.sources  # when it does not stream: an audit)
            listed = zip(sources_of(reply.ready, self.defaults.files_url), found)
            done["sources"] = [open_webui_source(s, f.text) for s, f in listed]
        return JSONResponse(done)

    async def next_event(self, job: Job, request: Request) -> object:
        """The job's next event; a client that hung up cancels the job (checked every
        DISCONNECT_CHECK_S, whether events keep coming, as tokens of an answer do, or not)."""
        while True:
            event = await job.next(timeout=DISCONNECT_CHECK_S)
            stopped = self.stop_error()
            if stopped is not None and not _final(event):
                job.cancel(server_stops=True)
                raise stopped
            now = time.monotonic()
            if event is None or now - job.checked >= DISCONNECT_CHECK_S:
                job.checked = now
                if await request.is_disconnected():
                    job.cancel()
                    raise client_gone_error()
            if event is not None:
                return event

    def _reply(self, params: RagParams, model: str, ready: Ready) -> _Reply:
        """What every chunk of a chat's answer says of it."""
        r = ready.retrieved
        return _Reply(
            id=completion_id(),
            created=int(time.time()),
            model=model,
            fingerprint=self.engine.info.fingerprint,
            ready=ready,
            retrieval=RetrievalInfo(
                status=r.status,
                collection=r.collection,
                collections=r.collections or None,
                mode=params.mode,
                top_k=params.top_k,
                detail=r.detail,
                retrieval_mode=params.retrieval_mode,
                filters=params.filters,
            ),
            logprobs=params.logprobs,
            json=params.grammar is not None,
        )

    async def done_within_keepalive(
        self, waiting: asyncio.Future, cancel: Callable[[], None] = lambda: None
    ) -> bool:
        """Wait for `waiting` up to `keepalive_s`: whether it is done (a streamed request
        whose wait is longer sends its headers and keep-alives: `keep_alive`). The route
        cancelled, `waiting` is cancelled, and `cancel` called."""
        try:
            await asyncio.wait({waiting}, timeout=self.keepalive_s)
        except BaseException:
            waiting.cancel()
            cancel()
            raise
        return waiting.done()

    async def keep_alive(self, waiting: asyncio.Future) -> AsyncIterator[str]:
        """A keep-alive comment every `keepalive_s` until `waiting` is done: a stream's
        headers are sent and a proxy does not cut it while it waits (its turn in the queue,
        files being indexed)."""
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=self.keepalive_s)
            if not waiting.done():
                yield ": keep-alive\n\n"

    def _ended_unfinished(self) -> APIError:
        """The error of a job that ended without a finish reason: the model worker broke
        (its 503 model_failed), else a 500."""
        try:
            self.engine.check_ready()
        except APIError as exc:
            return exc
        return APIError(500, "generation ended without a finish reason")

    def queue_chat(self, params: RagParams) -> Job:
        """Queue a chat job (refused before queueing, e.g. far too long: as HTTP)."""
        try:
            return self.engine.chat(params)
        except ClaraError as exc:
            raise to_api_error(exc) from None

    @staticmethod
    def _ready_of(waiting: asyncio.Future, job: Job) -> Ready:
        """The `Ready` of a finished `until_ready`; its error cancels the job."""
        try:
            return waiting.result()
        except BaseException:
            job.cancel()
            raise

    async def stream_when_ready(
        self, waiting: asyncio.Future, job: Job, answer: Callable[[Ready], AsyncIterator[str]]
    ) -> AsyncIterator[str]:
        """A streamed request's events once `waiting` (its `until_ready`) is done: its
        refusal within a keep-alive is raised as HTTP; a queue longer than that sends the
        answer's headers and keep-alive comments while it waits (`_wait_then_stream`: a proxy
        cut a silent request, a container audit). Chat and legacy completions stream so."""
        if await self.done_within_keepalive(waiting, job.cancel):
            return answer(self._ready_of(waiting, job))
        return self._wait_then_stream(waiting, job, answer)

    async def _wait_then_stream(
        self, waiting: asyncio.Future, job: Job, then: Callable[[Ready], AsyncIterator[str]]
    ) -> AsyncIterator[str]:
        """A streamed request still waiting for its turn: keep-alive comments until its
        retrieval and prompt are done (`waiting`, an `until_ready`), then the stream `then`
        makes of them; a failure meanwhile is the stream's error event (its headers are sent).
        Chat and legacy completions stream this way."""
        try:
            async with aclosing(self.keep_alive(waiting)) as comments:
                async for comment in comments:
                    yield comment
            ready = self._ready_of(waiting, job)
        except APIError as exc:
            yield _sse(exc.body())
            yield "data: [DONE]\n\n"
            return
        finally:
            if not waiting.done():  # (the client left: the stream was closed)
                waiting.cancel()
                job.cancel()
        async with aclosing(then(ready)) as events:
            async for event in events:
                yield event

    async def start_chat(self, params: RagParams, request: Request) -> tuple[Job, Ready]:
        """Queue a chat job and wait until its retrieval and prompt are done (`Ready`); the
        job is cancelled if that fails or the client leaves. Chat and Responses both start here."""
        job = self.queue_chat(params)
        try:
            return job, await self.until_ready(job, request)
        except BaseException:
            job.cancel()
            raise

    async def until_ready(self, job: Job, request: Request) -> Ready:
        """The job's `Ready` (its retrieval and prompt done), or its failure as HTTP."""
        event = await self.next_event(job, request)
        if isinstance(event, Ready):
            return event
        if isinstance(event, Failed):
            raise to_api_error(event.error)
        raise client_gone_error()

    def observe_ttft(self, start: float, first: float | None) -> None:
        """Time to first token of a request that began at `start` (none if it produced none)."""
        if first is not None:
            self.metrics.ttft.observe(first - start)

    def _store_names(self, reply: _Reply) -> dict[str, str]:
        """The vector stores' names, where an answer's sources come from several (for
        `sources_line`)."""
        if len(reply.ready.retrieved.collections) < 2:
            return {}
        return store_names(self.engine.settings.root)

    async def _complete(
        self, job: Job, reply: _Reply, request: Request, start: float
    ) -> ChatCompletion:
        text: list[str] = []
        tokens: list[TokenLogprob] = []
        async with aclosing(self.tokens(job, request, start)) as chunks:
            async for event in chunks:
                text.append(event.text)
                if reply.logprobs and event.logprob is not None:
                    tokens.append(self.token_logprob(event))
        content = "".join(text)
        sources = sources_of(reply.ready, self.defaults.files_url)
        notes = annotations_of(reply.ready, sources, content)
        if self.defaults.sources_in_text and not reply.json:
            content += sources_line(reply.ready, sources, content, self._store_names(reply))
        message = ChatCompletionMessage(content=content, annotations=notes, sources=sources)
        return ChatCompletion(
            id=reply.id,
            created=reply.created,
            model=reply.model,
            choices=[
                Choice(
                    message=message,
                    finish_reason=event.finish_reason,
                    logprobs=ChoiceLogprobs(content=tokens) if reply.logprobs else None,
                )
            ],
            usage=usage_of(event),
            system_fingerprint=reply.fingerprint,
            retrieval=reply.retrieval,
        )

    async def tokens(
        self, job: Job, request: Request, start: float
    ) -> AsyncIterator[GenerationChunk]:
        """A non-streamed request's chunks, up to the one with its finish reason; a failure
        is raised as its HTTP error. Then the job is cancelled (a no-op once it is done) and
        its time to first token observed."""
        first: float | None = None
        try:
            while True:
                event = await self.next_event(job, request)
                if isinstance(event, Failed):
                    raise to_api_error(event.error)
                if event is DONE:
                    raise self._ended_unfinished()
                if isinstance(event, GenerationChunk):
                    first = first or time.perf_counter()
                    yield event
                    if event.finish_reason is not None:
                        return
        finally:
            job.cancel()
            self.observe_ttft(start, first)

    def check_token_ids(self, inputs: list[str | list[int]], param: str, hint: str = "") -> None:
        """A 400 for token ids past the model's vocabulary (another tokenizer's), naming the
        input that holds one."""
        vocab = self.engine.info.vocab_size
        for i, x in enumerate(inputs):
            if vocab and not isinstance(x, str) and max(x) >= vocab:
                where = f"{param} {i}" if len(inputs) > 1 else f"the {param}"
                raise APIError(
                    400,
                    f"{where}: token id {max(x)} is past this model's vocabulary ({vocab} "
                    f"tokens): token ids must come from its own tokenizer{hint}",
                    param=param,
                )

    def _token(self, token_id: int) -> TopLogprob:
        raw = token_bytes(self.engine.worker.cm.tokenizer, token_id)
        return TopLogprob(token=token_text(raw), logprob=0.0, bytes=list(raw))

    def token_logprob(self, chunk: GenerationChunk) -> TokenLogprob:
        """The OpenAI logprobs entry of the chunk's token (and its best alternatives)."""
        top = []
        for token_id, logprob in chunk.top_logprobs or []:
            alt = self._token(token_id)
            alt.logprob = round(float(logprob), 6)
            top.append(alt)
        entry = self._token(chunk.token)
        return TokenLogprob(
            token=entry.token, logprob=round(float(chunk.logprob), 6), bytes=entry.bytes,
            top_logprobs=top,
        )  # fmt: skip

    def _chunk(self, reply: _Reply, delta: DeltaMessage | None, **fields) -> ChatCompletionChunk:
        choices = [] if delta is None else [ChunkChoice(delta=delta, **fields)]
        return ChatCompletionChunk(
            id=reply.id,
            created=reply.created,
            model=reply.model,
            system_fingerprint=reply.fingerprint,
            choices=choices,
        )

    async def streamed(
        self, job: Job, start: float, lead: Sequence[str] = ()
    ) -> AsyncIterator[GenerationChunk | str]:
        """A streamed request's chunks, up to the one with its finish reason, and between
        them SSE text to send as it is: `lead` first, keep-alive comments during a long
        prefill, an error event that ends the stream. Then the job is cancelled (a client that
        hung up stops the generation at the next token) and its time to first token observed."""
        first: float | None = None
        try:
            for text in lead:
                yield text
            while True:
                event = await self.stream_event(job)
                if event is None:  # long prefill: keep proxies and clients from timing out
                    yield ": keep-alive\n\n"
                elif isinstance(event, Failed):
                    yield _sse(to_api_error(event.error).body())
                    return
                elif event is DONE:
                    yield _sse(self._ended_unfinished().body())
                    return
                elif isinstance(event, GenerationChunk):
                    first = first or time.perf_counter()
                    yield event
                    if event.finish_reason is not None:
                        return
        finally:
            job.cancel()
            self.observe_ttft(start, first)

    async def _stream(
        self, job: Job, reply: _Reply, include_usage: bool, start: float
    ) -> AsyncIterator[str]:
        said: list[str] = []

        def sse(chunk: ChatCompletionChunk) -> str:
            return _sse(chunk, null_usage=include_usage)

        first = [sse(self._chunk(reply, DeltaMessage(role="assistant", content="")))]
        if self.defaults.source_events:  # (before the answer: one stopped keeps them)
            found = reply.ready.retrieved.sources
            sources = sources_of(reply.ready, self.defaults.files_url)
            first += [source_event(s, f.text) for s, f in zip(sources, found)]
        async with aclosing(self.streamed(job, start, first)) as events:
            async for event in events:
                if isinstance(event, str):
                    yield event
                    continue
                token = (
                    self.token_logprob(event)
                    if reply.logprobs and event.logprob is not None
                    else None
                )
                if event.text or token is not None:
                    said.append(event.text)
                    logprobs = ChoiceLogprobs(content=[token]) if token is not None else None
                    delta = DeltaMessage(content=event.text)
                    yield sse(self._chunk(reply, delta, logprobs=logprobs))
                if event.finish_reason is None:
                    continue
                sources = sources_of(reply.ready, self.defaults.files_url)
                notes = annotations_of(reply.ready, sources, "".join(said))
                if (
                    self.defaults.sources_in_text
                    and not reply.json
                    and (
                        line := sources_line(
                            reply.ready, sources, "".join(said), self._store_names(reply)
                        )
                    )
                ):
                    yield sse(self._chunk(reply, DeltaMessage(content=line)))
                if self.defaults.source_events:  # (Open WebUI makes each a card of its own,
                    notes = None  # showing only the file's name, beside the events' cards)
                extra = DeltaMessage(sources=sources, annotations=notes)
                chunk = self._chunk(reply, extra)
                chunk.retrieval = reply.retrieval
                yield sse(chunk)
                yield sse(self._chunk(reply, DeltaMessage(), finish_reason=event.finish_reason))
                if include_usage:
                    chunk = self._chunk(reply, None)
                    chunk.usage = usage_of(event)
                    yield sse(chunk)
        yield "data: [DONE]\n\n"

    # ---- embeddings ------------------------------------------------------------------------
    async def embeddings(self, req: EmbeddingRequest, request: Request) -> EmbeddingResponse:
        self.engine.check_ready()
        self.check_model(req.model)
        inputs = req.input
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not inputs or any(len(x) == 0 for x in inputs):
            raise APIError(
                400, "'input' must not be empty (nor contain empty items)", param="input"
            )
        if len(inputs) > MAX_EMBEDDING_INPUTS:
            raise APIError(400, f"at most {MAX_EMBEDDING_INPUTS} inputs per request", param="input")
        ids = [i for i, x in enumerate(inputs) if not isinstance(x, str)]
        if ids and not self.defaults.embedding_token_ids:  # (they embedded other words)
            where = f"input {ids[0]} is" if len(inputs) > 1 else "the input is"
            raise APIError(
                400,
                f"{where} token ids: send text. Ids are of a tokenizer (LangChain's "
                "OpenAIEmbeddings sends tiktoken's unless check_embedding_ctx_length=False), "
                "and read as this model's they are other words; a server started with "
                "--embedding-token-ids takes ids of its own tokenizer",
                param="input",
            )
        self.check_token_ids(inputs, "input", ". Send text instead")
        info = self.engine.info
        truncate = self.defaults.truncate_embeddings if req.truncate is None else req.truncate
        if truncate:  # only the start is read: no need to tokenize a megabyte for it
            inputs = [_head_of(x, info.embed_tokens, info.max_token_chars) for x in inputs]
        found = []  # hopelessly long: refused before tokenizing them
        for i, x in enumerate(inputs):
            if isinstance(x, str):
                least = info.least_tokens(len(x))
                size = f"{len(x)} characters, at least {least} tokens"
            else:  # ids are decoded and tokenized again: 4x the limit cannot fit (2 million
                least, size = len(x) // IDS_PER_TOKEN, f"{len(x)} tokens"  # took 7.7 s)
            if least > info.embed_tokens and not truncate:
                found.append((i, size))
        if found:
            raise APIError(
                400, too_long_to_embed(info.embed_tokens, found, len(inputs)), param="input",
                code="context_length_exceeded",
            )  # fmt: skip
        dim = self.engine.info.embedding_dim
        if req.dimensions is not None and req.dimensions != dim:
            raise APIError(
                400,
                f"this model's embeddings have {dim} dimensions (n_mem x hidden size); "
                "other 'dimensions' are not supported",
                param="dimensions",
                code="unsupported_value",
            )
        job = self.engine.embed(list(inputs), truncate=truncate)
        try:
            event = await self.next_event(job, request)
        finally:
            job.cancel()
        if isinstance(event, Failed):
            error = to_api_error(event.error)
            if error.code == "context_length_exceeded":
                error.param = "input"
            raise error
        if not isinstance(event, Embedded):
            raise client_gone_error()
        data = [
            Embedding(
                embedding=base64.b64encode(v.astype("<f4").tobytes()).decode()
                if req.encoding_format == "base64"
                else v.tolist(),
                index=i,
            )
            for i, v in enumerate(event.vectors)
        ]
        usage = EmbeddingUsage(prompt_tokens=event.tokens, total_tokens=event.tokens)
        self.metrics.embedding_inputs.inc(len(data))
        self.metrics.embedding_tokens.inc(event.tokens)
        model = self.model_name(self.is_bare(req.model), req.model)
        return EmbeddingResponse(data=data, model=model, usage=usage)


#: token ids that read again as text could at most make one token of (a client that split
#: the text finer than this model's tokenizer): more than the encoder's limit times this is
#: refused before they are decoded
IDS_PER_TOKEN = 4


def _head_of(x: str | list[int], tokens: int, max_token_chars: int) -> str | list[int]:
    """As much of `x` as its first `tokens` tokens can span (all of it when that is unknown):
    a text cut to `tokens` times the longest token's characters still holds `tokens` tokens."""
    if not isinstance(x, str):
        return x[:tokens]
    return x[: tokens * max_token_chars] if max_token_chars else x


@dataclass
class _Readable:
    """What a request's key may read, to resolve and list model names NAME@WHICH: the
    collections there it may read (`ids`), the names their vector stores were given, the
    server's default collection and whether the key may read it."""

    ids: set[str]
    names: dict[str, str]  # id -> the name its vector store was given (any store's)
    default: str
    sees_default: bool

    def __post_init__(self) -> None:
        own = [self.names.get(i) for i in self.ids]
        self.named = Counter(n for n in own if n)  # name -> the readable stores that have it
        self.by_name = {self.names[i]: i for i in self.ids if self.named[self.names.get(i)] == 1}

    def resolve(self, part: str) -> str | None:
        """The collection `part` of a model name is, if any."""
        if part in self.ids or (part and part == self.default and self.sees_default):
            return part
        return self.by_name.get(part)

    def label(self, collection: str) -> str:
        """What a model NAME@... of `collection` shows in a model picker: the name its vector
        store was given, where a model name can say it (as typed: no spaces around it,
        printable) and it is the name of nothing else (no other store, no collection, not
        the server's default); else its id (vs_...: what a store an app named "Team
        Handbook", or a key limited to some collections, is given)."""
        name = self.names.get(collection)
        if (
            not name
            or name == collection
            or name != name.strip()
            or not name.isprintable()
            or name in self.ids
            or name == self.default
            or self.named[name] > 1
        ):
            return collection
        return name


def _listed(what: str, names: list[str]) -> str:
    """ "the collection 'a'" or "the collections 'a', 'b'"."""
    quoted = ", ".join(repr(n) for n in names)
    return f"{what}s {quoted}" if len(names) > 1 else f"{what} {quoted}"
