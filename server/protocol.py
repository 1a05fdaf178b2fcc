"""Request and response models mirroring OpenAI's chat completions, embeddings and models API.

Fields follow OpenAI's schema and order. CLaRa's additions sit in marked extension blocks:
request options the official SDK sends through `extra_body`, and response fields (`sources`,
`retrieval`) that the SDK keeps as extra attributes. Unknown request fields are ignored, as
vLLM ignores them, and named in the server's log (`note_unknown`).

The OpenAPI schema states exactly what is accepted: OpenAI fields clara cannot honour keep
their OpenAI type (so `check_supported` can refuse them with a message that names them) but
the schema narrows them (`only`) to the values that pass: null, false, "none", 0, [] or {}.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NoReturn

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from clara.errors import InvalidArgumentError
from clara.paths import COLLECTION_NAME
from clara.retrieval import READING_MODES
from clara.structured import json_grammar
from clara.text import printable
from clara_cli.http import SCOPE, APIError, JSONInt, KeyScope, json_int, valid_unicode
from indexing.filters import AttributeFilter, check_filter

log = logging.getLogger("clara.serve")


class _Request(BaseModel):
    # clients send fields we do not know: tolerate; a value of the wrong JSON type is an error
    model_config = ConfigDict(extra="ignore", strict=True)


def note_unknown(cls: type[BaseModel], data: Any) -> Any:
    """A before-validator for a request: fields it does not know are ignored, as vLLM does
    (clients send other servers' options: `min_p`, `cache_prompt`, ...), and named in the
    server's log, once for each set of them, so that a typo ('max_token') is found there."""
    if isinstance(data, dict):
        unknown = tuple(sorted(str(k) for k in data if k not in cls.model_fields))
        if unknown and (cls.__name__, unknown) not in _NOTED:
            if len(_NOTED) >= 256:
                _NOTED.clear()
            _NOTED.add((cls.__name__, unknown))
            names = ", ".join(printable(k[:64]) for k in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            log.warning("%s: ignored fields not in its API: %s%s", cls.__name__, names, more)
    return data


_NOTED: set[tuple[str, tuple[str, ...]]] = set()  # (request, unknown fields) already logged
_NOTED_TOOLS: list[bool] = []  # whether tools sent and not called were logged
#: tools (or functions) a chat completion may name (OpenAI takes 128)
MAX_TOOLS = 128
#: collections one request may search together (`collection` as a list, or a file_search
#: tool's vector stores)
MAX_SEARCHED = 8
CollectionName = Annotated[str, Field(pattern=COLLECTION_NAME)]


#: a request's model name, spaces around it dropped (a chat app's pasted id kept one: a 404
#: whose text looked like the name served)
ModelName = Annotated[str, AfterValidator(str.strip)]
#: (a name given twice is searched once: `collection_names`; it counts twice toward the
#: limit, as the API's schema says, which a client may check before sending)
CollectionNames = Annotated[list[CollectionName], Field(min_length=1, max_length=MAX_SEARCHED)]


def collection_names(collection: str | list[str] | None) -> list[str]:
    """A request's `collection` (a name, or several) as a list, without repeats."""
    if collection is None:
        return []
    return list(dict.fromkeys([collection] if isinstance(collection, str) else collection))


def note_tools() -> None:
    """Log, once, that requests with function tools are answered with text."""
    if not _NOTED_TOOLS:
        _NOTED_TOOLS.append(True)
        log.info("requests with function tools are answered with text: clara-serve calls no "
                 "tools but file_search (said once)")  # fmt: skip


def refuse(param: str, what: str, value: bool = True, then: str = "") -> NoReturn:
    """Raise the 400 for a request field (`param`) asking for `what` clara cannot honour: a
    `value` of it (code `unsupported_value`), else the field itself (`unsupported_parameter`),
    as OpenAI's codes say (an agent audit: clients that branch on the code found none);
    `then` says what to do instead."""
    code = "unsupported_value" if value else "unsupported_parameter"
    raise APIError(
        400, f"clara-serve does not support {what}" + (f": {then}" if then else ""),
        param=param, code=code,
    )  # fmt: skip


#: The output formats a chat completion takes (`response_format`; Responses' `text.format`
#: has the json_schema's fields at its top level)
FORMATS = ["text", "json_object", "json_schema"]
RESPONSE_FORMAT = {
    "properties": {
        "type": {"enum": FORMATS},
        "json_schema": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "schema": {
                    "type": "object",
                    "description": "a JSON schema of at most 64 KiB, checked by the server "
                    "(one llguidance cannot hold an answer to is a 400)",
                },
            },
        },
    },
    "required": ["type"],
    "if": {"properties": {"type": {"const": "json_schema"}}, "required": ["type"]},
    "then": {"required": ["json_schema"]},
}


def format_grammar(
    fmt: Any, param: str, schema_at: str = "json_schema", compile: bool = True
) -> str | None:
    """The grammar of an output format (`response_format`, or Responses' `text.format`,
    whose schema is at its top level: `schema_at` ""); None for text; a 400 naming `param`
    for a format clara does not write or a schema it cannot hold an answer to. Compiling
    takes time (a large schema: 0.1 s and more): off the event loop (`asyncio.to_thread`);
    `compile` False checks the format's shape only."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise APIError(400, f"{param} must be an object with a 'type' ({', '.join(FORMATS)})",
                       param=f"{param}.type" if isinstance(fmt, dict) else param,
                       code="invalid_type")  # fmt: skip
    kind = fmt["type"]
    if schema_at and schema_at in fmt and not isinstance(fmt[schema_at], dict):
        raise APIError(400, f"'{param}.{schema_at}' must be an object",
                       param=f"{param}.{schema_at}", code="invalid_type")  # fmt: skip
    holder = fmt.get(schema_at) if schema_at else fmt
    base = f"{param}.{schema_at}" if schema_at else param
    for key, kind_of, what in (("name", str, "a string"), ("schema", dict, "an object")):
        if isinstance(holder, dict) and key in holder and not isinstance(holder[key], kind_of):
            raise APIError(400, f"'{base}.{key}' must be {what}", param=f"{base}.{key}",
                           code="invalid_type")  # fmt: skip
    if kind == "text":
        return None
    if kind not in FORMATS:
        refuse(f"{param}.type", f"{param} type {kind!r}", then=f"send one of {FORMATS}")
    schema, where = None, param
    if kind == "json_schema":  # as OpenAI's: chat needs the json_schema object, whose schema
        # may be left out (any JSON object); the Responses API needs the schema
        if not isinstance(holder, dict) or (not schema_at and "schema" not in holder):
            at = f"{base}.schema" if isinstance(holder, dict) else base
            raise APIError(400, f"{param} type 'json_schema' needs '{at}' (a JSON schema; for "
                           "any JSON object send type 'json_object')", param=at,
                           code="missing_required_parameter")  # fmt: skip
        schema, where = holder.get("schema"), f"{base}.schema"
    if not compile:
        return None
    try:
        return json_grammar(schema)
    except InvalidArgumentError as exc:
        raise APIError(400, str(exc), param=where, code="invalid_schema") from None


def only(schema: dict[str, Any], **field: Any) -> Any:
    """A field whose OpenAPI schema also carries `schema` (what clara accepts of it)."""
    return Field(json_schema_extra=schema, **field)


NULL = {"type": "null"}


def checked_filters(filters: Any, param: str) -> dict[str, Any] | None:
    """Attribute filters kept from before (a stored response's, which a follow-up searches
    with), checked again; a 400 naming `param`."""
    try:
        return None if filters is None else check_filter(filters, param)
    except InvalidArgumentError as exc:
        raise APIError(400, str(exc), param=param) from None


MAX_STOPS = 16
StopString = Annotated[str, Field(max_length=1000)]


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---- chat completion request -------------------------------------------------------------
class ContentPart(_Request):
    """One part of a message's content: `{"type": "text", "text": ...}`, or an assistant's
    `{"type": "refusal", "refusal": ...}` read as its text (as the Responses API reads one)."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str = only({"enum": ["text", "refusal"]})
    text: str | None = None
    refusal: str | None = None

    @model_validator(mode="after")
    def _text_needed(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs 'text'")
        if self.type == "refusal" and self.refusal is None:
            raise ValueError("a refusal part needs 'refusal'")
        return self


class FunctionCall(_Request):
    """A function a model called: its name and its arguments (a JSON string, as OpenAI's)."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: str
    arguments: str = ""


class ToolCall(_Request):
    """A tool call of an assistant message in a conversation's history (made by another
    model, or an agent framework's own; clara calls no tools): read as a line of text."""

    model_config = ConfigDict(extra="allow", strict=True)
    id: str | None = None
    type: Literal["function", "custom"] = "function"
    function: FunctionCall | None = None
    custom: dict[str, Any] | None = None  # {"name", "input"}: a custom tool's

    def name(self) -> str:
        if self.function is not None:
            return self.function.name
        return str((self.custom or {}).get("name") or "tool")

    def text(self) -> str:
        if self.function is not None:
            return call_line(self.function.name, self.function.arguments)
        return call_line(self.name(), str((self.custom or {}).get("input") or ""))


def call_line(name: str, arguments: str) -> str:
    """How a tool call of a conversation's history is read by the model (clara's chat
    templates have no tool turns; a small model reads a line of text)."""
    return f"Tool call: {name}({arguments})"


def result_line(name: str | None, text: str) -> str:
    """How a tool call's result in a conversation's history is read by the model."""
    return f"Tool result ({name}): {text}" if name else f"Tool result: {text}"


#: only an assistant message (one that made tool calls, in OpenAI's API) may leave out content
_CONTENT_NEEDED = {
    "if": {"properties": {"role": {"enum": ["system", "developer", "user", "tool"]}}},
    "then": {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
}


class ChatMessage(_Request):
    model_config = ConfigDict(  # tool_calls ...: checked below
        extra="allow", strict=True, json_schema_extra=_CONTENT_NEEDED
    )
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    """A `tool` (or older `function`) message is a tool call's result: clara calls no tools,
    and reads a conversation that another model's tool calls began (`conversation`)."""
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    """An assistant's tool calls (another model's): read as lines of text."""
    tool_call_id: str | None = None
    """A tool message's call (whose function's name the model reads with the result)."""
    function_call: FunctionCall | None = None
    audio: dict[str, Any] | None = only(NULL, default=None)

    @model_validator(mode="after")
    def _content_needed(self) -> ChatMessage:
        if self.content is None and self.role in ("system", "developer", "user", "tool"):
            raise ValueError(f"a {self.role} message needs 'content'")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):  # (parts are lines, as vLLM reads them)
            return "\n".join(part.text or part.refusal or "" for part in self.content)
        return self.content or ""


@dataclass
class _Turn:
    """A turn of a conversation as the model reads it: a user's, or an assistant's (its
    answers, and the tool calls and results that came before the next user message)."""

    role: str
    text: str
    tools: bool = False  # it holds tool calls or results


def conversation(messages: list[ChatMessage], sources_in_text: bool) -> list[_Turn]:
    """The user and assistant turns of `messages` (system and developer messages left out):
    an assistant's tool calls and the tools' results are lines of its turn (an agent audit:
    any conversation holding a tool call was a 400, on both APIs), consecutive assistant
    messages one turn."""
    names: dict[str, str] = {}  # tool call id -> its function's name
    turns: list[_Turn] = []
    for m in messages:
        if m.role in ("system", "developer"):
            continue
        if m.role == "user":
            turns.append(_Turn("user", m.text()))
            continue
        if m.role == "assistant":
            lines = [_answer(m, sources_in_text)]
            for call in m.tool_calls or []:
                if call.id:
                    names[call.id] = call.name()
                lines.append(call.text())
            if m.function_call is not None:
                lines.append(call_line(m.function_call.name, m.function_call.arguments))
            tools = bool(m.tool_calls or m.function_call)
        else:  # a tool's result
            name = m.name or names.get(m.tool_call_id or "")
            lines, tools = [result_line(name, m.text())], True
        text = "\n".join(line for line in lines if line)
        if turns and turns[-1].role == "assistant":
            before = turns[-1]
            before.text = "\n".join(t for t in (before.text, text) if t)
            before.tools = before.tools or tools
        else:
            turns.append(_Turn("assistant", text, tools))
    return turns


#: A request's own limits, in its schema: top_logprobs with logprobs, stream_options with
#: stream (as OpenAI's)
_STREAM_OPTIONS_NEED_STREAM = {
    "if": {"properties": {"stream_options": {"type": "object"}}, "required": ["stream_options"]},
    "then": {"properties": {"stream": {"const": True}}, "required": ["stream"]},
}
_CHAT_LIMITS = {
    "allOf": [
        _STREAM_OPTIONS_NEED_STREAM,
        {
            "if": {
                "properties": {"top_logprobs": {"type": "integer", "minimum": 1}},
                "required": ["top_logprobs"],
            },
            "then": {"properties": {"logprobs": {"const": True}}, "required": ["logprobs"]},
        },
    ]
}


#: What --sources-in-text ends an answer with (`server.serving.sources_line`): taken off the
#: answers a conversation's history sends back, which the model read and imitated (writing
#: file names of its own, which the citations then matched: a review)
NO_MATCH_LINE = "(No document matched the question: this answer is not from your documents.)"
SOURCES_LINE = re.compile(  # (sent back with a newline after it, or CRLF, too)
    r"\r?\n\r?\n(?:Sources: |Searched, not cited: |" + re.escape(NO_MATCH_LINE) + r")[^\r\n]*\s*\Z"
)


def _answer(message: ChatMessage, sources_in_text: bool) -> str:
    """A history message's text, an answer's sources line left out (`SOURCES_LINE`)."""
    text = message.text()
    if sources_in_text and message.role == "assistant":
        return SOURCES_LINE.sub("", text)
    return text


class StreamOptions(_Request):
    include_usage: bool | None = None


class ChatCompletionRequest(_Request):
    """POST /v1/chat/completions (OpenAI's fields, then CLaRa's extension block)."""

    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=_CHAT_LIMITS)

    _unicode = model_validator(mode="before")(valid_unicode)  # no lone surrogates anywhere
    _unknown = model_validator(mode="before")(classmethod(note_unknown))

    messages: list[ChatMessage] = Field(min_length=1)
    """The model answers the latest user message (an empty question if there is none); the
    system and developer messages are its instructions, earlier turns its history. Messages
    after the latest user message are not read."""
    model: ModelName | None = None
    audio: dict[str, Any] | None = only(NULL, default=None)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    """Lowers each token's logit by this times the times it was generated (OpenAI's)."""
    function_call: str | dict[str, Any] | None = only(
        {"enum": ["none", "auto", None]}, default=None
    )
    functions: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_TOOLS)
    """As `tools` (their older form)."""
    logit_bias: dict[str, float] | None = only({"maxProperties": 0}, default=None)
    logprobs: bool | None = None
    """Return each output token's log-probability (in `choices[].logprobs.content`)."""
    max_completion_tokens: json_int(ge=1) | None = None
    max_tokens: json_int(ge=1) | None = None
    metadata: dict[str, Any] | None = None
    modalities: list[str] | None = only({"items": {"enum": ["text"]}}, default=None)
    n: json_int(ge=1) | None = only({"maximum": 1}, default=None)  # (n > 1: a 400 that says so)
    parallel_tool_calls: bool | None = None
    prediction: dict[str, Any] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    """Lowers the logit of every token generated at least once by this (OpenAI's)."""
    prompt_cache_key: str | None = None
    """A hint, ignored: clara's prefix cache keeps what it can hold."""
    reasoning_effort: str | None = only({"enum": [None, "none", "minimal"]}, default=None)
    """This model does not reason: "none" and "minimal" pass, more is a 400."""
    response_format: dict[str, Any] | None = only(RESPONSE_FORMAT, default=None)
    """{"type": "json_object"}: the answer is a JSON object; {"type": "json_schema",
    "json_schema": {"name", "schema"}}: a JSON value valid under the schema (decoding is held
    to it: `clara.structured`); {"type": "text"}: free text (the default)."""
    safety_identifier: str | None = None
    """Ignored (OpenAI's, for its abuse detection), as `user` is."""
    seed: JSONInt | None = None
    service_tier: str | None = None
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOPS)] | None = None
    """Up to 16 strings of at most 1000 characters (OpenAI takes 4): each is looked for in
    every new token's text, so an unbounded list slowed the whole decode batch."""
    store: bool | None = None
    """Ignored, as vLLM ignores it: nothing is kept (the Responses API stores answers)."""
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    """Only with `stream` (as OpenAI's)."""
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    """Default: the server's --temperature, itself 0 (greedy), not OpenAI's 1."""
    tool_choice: str | dict[str, Any] | None = only({"enum": ["none", "auto", None]}, default=None)
    """With `tools`: "auto" (or none given) and "none" are answered with text, "required" or a
    named function is a 400: this server calls no tools."""
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_TOOLS)
    """Taken and not called: the answer is text, as when a model chooses to call none (a chat
    app's built-in tools, which Open WebUI sends with every chat, failed every chat)."""
    top_logprobs: json_int(ge=0, le=20) | None = None
    """With each token, this many most likely alternatives (with `logprobs: true`)."""
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    user: str | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    """Ignored: this model writes as it does (the OpenAI Agents SDK may send it)."""
    web_search_options: dict[str, Any] | None = only(NULL, default=None)

    # ---- CLaRa extensions (the SDK's `extra_body`) ----
    top_k: json_int(ge=0, le=100) | None = None
    """Chunks to retrieve (default: the server's --top-k); 0 turns retrieval off."""
    collection: CollectionName | CollectionNames | None = None
    """Index collection to search (default: the server's --collection), or a list of up to
    MAX_SEARCHED searched as one."""
    retrieval: bool = True
    """False: answer with the bare base model, no retrieval."""
    mode: Literal[READING_MODES] | None = None
    """What the model reads (default: the server's --mode, itself by default the mode the
    checkpoint names: "mixed" for the shipped small model, else "memory"). "memory": the
    generator reads the chunks' compressed memories (CLaRa); "text": their raw text goes into
    the prompt of the bare base model (the uncompressed RAG baseline); "mixed": the generator
    reads the best chunk's raw text and the others' memories."""
    retrieval_mode: Literal["hybrid", "dense", "lexical"] | None = None
    """How chunks are found: "hybrid" (default) fuses "dense" (query adapter vs compressed
    memories) and "lexical" (BM25 over the chunks' words) by reciprocal rank fusion."""
    filters: AttributeFilter | None = None
    """Attribute filters, as OpenAI's file search takes them: only documents whose attributes
    pass are searched (`{"type": "eq", "key": "team", "value": "hr"}`; `indexing.filters`)."""
    truncation: Literal["auto", "disabled"] | None = None
    """The conversation read (as the Responses API's): by default its last --history-turns
    exchanges (the small default model reads long histories badly), a 400 if they do not
    fit; "disabled": all of it, a 400 if it does not fit; "auto": the last --history-turns
    exchanges, then older turns and the lowest-ranked chunks dropped until it fits."""
    ignore_eos: bool = False
    """Decode to max_tokens even past end-of-sequence (as vLLM's; benchmarks use it)."""

    def check_supported(self) -> None:
        """Raise a 400 `APIError` for what this server cannot do, instead of ignoring it."""
        if (self.n or 1) > 1:
            refuse("n", "n > 1 (several choices per request)", then="send the request n times "
                   "(with temperature > 0 for different answers)")  # fmt: skip
        for name in ("tool_choice", "function_call"):
            if getattr(self, name) not in (None, "none", "auto"):
                asked = json.dumps(getattr(self, name))
                refuse(name, f"{name} {asked} (this server calls no tools)",
                       then='leave it out or send "auto": the answer is then text; for '
                       "structured output send response_format json_schema (LangChain: "
                       'with_structured_output(..., method="json_schema"))')  # fmt: skip
        if self.tools or self.functions:
            note_tools()
        if self.logit_bias:
            refuse("logit_bias", "logit_bias", value=False)
        if self.audio is not None:
            refuse("audio", "audio output", value=False)
        if any(m != "text" for m in self.modalities or []):
            refuse("modalities", "audio output")
        if self.reasoning_effort not in (None, "none", "minimal"):
            refuse("reasoning_effort", "reasoning_effort (this model does not reason)")
        if self.web_search_options is not None:
            refuse("web_search_options", "web search", value=False)
        if self.top_logprobs and not self.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        _stream_options_need_stream(self)
        for i, msg in enumerate(self.messages):
            if msg.audio is not None:
                refuse(f"messages.[{i}].audio", "audio in messages", value=False)
            if isinstance(msg.content, list):
                for j, part in enumerate(msg.content):
                    if part.type not in ("text", "refusal"):
                        refuse(
                            f"messages.[{i}].content.[{j}].type",
                            f"content of type {part.type!r} (this model reads text only)",
                        )

    def grammar(self) -> str | None:
        """The grammar `response_format` holds the answer to (None: free text): slow for a
        large schema, so `to_params` leaves it to the caller, off the event loop."""
        if self.ignore_eos and self.response_format is not None:
            if self.response_format.get("type") not in (None, "text"):
                raise APIError(400, "ignore_eos cannot be sent with a JSON response_format (the "
                               "answer ends where its JSON does)", param="ignore_eos")  # fmt: skip
        return format_grammar(self.response_format, "response_format")

    def to_params(self, defaults: ServingDefaults, whole_history: bool = False) -> RagParams:
        """Split the conversation into question, history, system prompt and retrieval query.
        The prompt's history is the last --history-turns exchanges, or all of them with
        `whole_history` (a Responses chain with truncation "disabled"); the retrieval query
        is the question and the user turns of the last --history-turns exchanges."""
        system = [m.text() for m in self.messages if m.role in ("system", "developer")]
        turns = conversation(self.messages, defaults.sources_in_text)
        last_user = max((i for i, m in enumerate(turns) if m.role == "user"), default=None)
        question = turns[last_user].text if last_user is not None else ""
        after = turns[last_user + 1 :] if last_user is not None else []
        turns = turns[:last_user] if last_user is not None else turns  # (none: all history)
        query = question
        # the tool calls and results after the question (an agent's loop went on from it with
        # another model) are read with it; an answer begun after it is not (no prefill)
        if after and after[0].tools:
            question = "\n\n".join(t for t in (question, after[0].text) if t)
        keep = 2 * defaults.history_turns
        recent = turns[-keep:] if keep else []
        history = turns if whole_history or self.truncation == "disabled" else recent
        users = [m.text for m in recent if m.role == "user"] + [query]
        return RagParams(
            question=question,
            query="\n".join(users),
            history=[{"role": m.role, "content": m.text} for m in history],
            system="\n".join(system) if system else None,
            retrieval=self.retrieval and self.top_k != 0,
            mode=self.mode or defaults.mode,
            retrieval_mode=self.retrieval_mode or defaults.retrieval_mode,
            filters=self.filters,
            top_k=defaults.top_k if self.top_k is None else self.top_k,
            collections=collection_names(self.collection) or [default_collection(defaults)],
            scope=SCOPE.get(),
            max_tokens=defaults.capped(
                self.max_completion_tokens or self.max_tokens or defaults.max_tokens
            ),
            logprobs=bool(self.logprobs),
            top_logprobs=self.top_logprobs or 0,
            truncate=self.truncation == "auto",
            **_sampling(self, defaults),
        )


def _stream_options_need_stream(req: ChatCompletionRequest | CompletionRequest) -> None:
    if req.stream_options is not None and not req.stream:
        raise APIError(400, "stream_options is only allowed with stream: true",
                       param="stream_options")  # fmt: skip


def _sampling(req: ChatCompletionRequest | CompletionRequest, defaults: ServingDefaults) -> dict:
    """The RagParams sampling fields of a chat or legacy completion request."""
    temperature = defaults.temperature if req.temperature is None else req.temperature
    return {
        # top_p 0 keeps only the most likely token: greedy
        "temperature": 0.0 if req.top_p == 0 else temperature,
        "top_p": 1.0 if not req.top_p else req.top_p,
        "seed": None if req.seed is None else req.seed % 2**32,  # any int: MLX's range
        "stop": [req.stop] if isinstance(req.stop, str) else list(req.stop or []),
        "ignore_eos": req.ignore_eos,
        "frequency_penalty": req.frequency_penalty or 0.0,
        "presence_penalty": req.presence_penalty or 0.0,
    }


@dataclass
class ServingDefaults:
    """What a request gets for the options it leaves out (set from the CLI)."""

    top_k: int = 5
    collection: str = "default"
    max_tokens: int = 512
    #: the most tokens any request may have (--max-tokens-limit): more is cut to it (None: the
    #: context's room)
    max_tokens_limit: int | None = None
    temperature: float = 0.0
    history_turns: int = 2
    retrieval_mode: str = "hybrid"
    mode: str = "memory"
    truncate_embeddings: bool = False  # --truncate-embeddings: the default of `truncate`
    #: --embedding-token-ids: /v1/embeddings takes token ids (of this model's tokenizer)
    embedding_token_ids: bool = False
    #: --files-url: where the Files API of uploads that sources cite is, when this server does
    #: not serve it (None: this server's own /v1/files)
    files_url: str | None = None
    #: --source-events: streamed chats send each source as an Open WebUI source event too
    source_events: bool = False
    #: --collection-models: /v1/models lists NAME@COLLECTION for each collection
    collection_models: bool = False
    #: --sources-in-text: a chat's answer ends with a line naming its sources
    sources_in_text: bool = False

    def capped(self, max_tokens: int) -> int:
        """A request's max_tokens within --max-tokens-limit."""
        limit = self.max_tokens_limit
        return max_tokens if limit is None else min(max_tokens, limit)


def default_collection(defaults: ServingDefaults) -> str:
    """The collection a request that names none searches: the server's --collection, or, for
    a key limited to others (`SCOPE`), the first of those on its line of --api-key-file ("" for
    one given none: it names a store it made, and is not told the server's default)."""
    scope = SCOPE.get()
    if scope is None or scope.sees(defaults.collection):
        return defaults.collection
    return scope.collections[0] if scope.collections else ""


@dataclass
class RagParams:
    """One request, as the engine's pipeline needs it (plain data: no pydantic, no MLX)."""

    question: str
    query: str  # text the query adapter encodes: recent user turns
    history: list[dict[str, str]] = field(default_factory=list)
    system: str | None = None
    retrieval: bool = True
    mode: str = "memory"
    retrieval_mode: str = "hybrid"
    filters: dict[str, Any] | None = None  # attribute filters (checked): which documents
    top_k: int = 5
    collections: list[str] = field(default_factory=lambda: ["default"])  # searched as one
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    truncate: bool = False  # too long: drop the oldest turns, then the last chunks (Responses'
    # truncation "auto"), instead of a 400
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    grammar: str | None = None  # the JSON the answer is held to (`clara.structured`)
    raw: str | list[int] | None = None  # a legacy completion's prompt: read as it is by the
    # bare model (no chat template, no retrieval)
    scope: KeyScope | None | str = "unset"  # the collections its API key may read (None:
    # all): the request's `SCOPE`, given where it is made; "unset" retrieves nothing (`Rag`)


# ---- chat completion response ------------------------------------------------------------
class Source(_Response):
    """CLaRa extension: one retrieved chunk the answer was generated from."""

    index: int  # rank, from 1
    chunk_id: int
    document_id: str
    filename: str
    page_start: int | None = None
    page_end: int | None = None
    # where in the document: its title and the section heading the chunk is under ("Guide /
    # Installation"), as the generator read it; None where nothing is known
    section: str | None = None
    score: float  # hybrid: the fused (reciprocal rank) score; dense: cosine; lexical: BM25
    snippet: str
    url: str
    collection: str
    ranks: dict[str, int | None] | None = None  # 1-based rank in each retriever ("dense", ...)
    retrieval_mode: str | None = None  # the mode that ranked it
    file_id: str | None = None  # the Files API upload it came from (None: `clara-index add`)


class URLCitation(_Response):
    start_index: int
    end_index: int
    title: str
    url: str


class Annotation(_Response):
    type: Literal["url_citation"] = "url_citation"
    url_citation: URLCitation


class RetrievalInfo(_Response):
    """CLaRa extension: what retrieval did. `status`: ok | disabled | no_index | empty_index |
    no_match (lexical retrieval found no chunk with the question's words)."""

    status: str
    collection: str | None = None
    collections: list[str] | None = None  # every one searched, when several (`collection`
    # is then the first)
    mode: str
    top_k: int
    detail: str | None = None
    retrieval_mode: str | None = None  # hybrid | dense | lexical, as requested
    filters: dict[str, Any] | None = None  # the attribute filters searched with, if any


class ChatCompletionMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    annotations: list[Annotation] = Field(default_factory=list)
    # ---- CLaRa extension ----
    sources: list[Source] = Field(default_factory=list)


class TopLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(_Response):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class Choice(_Response):
    index: int = 0
    message: ChatCompletionMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class PromptTokensDetails(_Response):
    cached_tokens: int = 0  # prompt positions the prefix cache held (earlier requests')


class Usage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletion(_Response):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    # ---- CLaRa extension ----
    retrieval: RetrievalInfo | None = None


class DeltaMessage(_Response):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    # ---- CLaRa extension (sent once, in the chunk before the finishing one) ----
    annotations: list[Annotation] | None = None
    sources: list[Source] | None = None


class ChunkChoice(_Response):
    index: int = 0
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]
    usage: Usage | None = None
    # ---- CLaRa extension ----
    retrieval: RetrievalInfo | None = None


# ---- embeddings --------------------------------------------------------------------------
class EmbeddingRequest(_Request):
    """POST /v1/embeddings: query-adapter embeddings (flattened, L2-normalised)."""

    _unicode = model_validator(mode="before")(valid_unicode)  # no lone surrogates
    _unknown = model_validator(mode="before")(classmethod(note_unknown))

    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=2048)]
        | Annotated[list[json_int(ge=0, le=2**32 - 1)], Field(min_length=1)]
        | Annotated[
            list[Annotated[list[json_int(ge=0, le=2**32 - 1)], Field(min_length=1)]],
            Field(min_length=1, max_length=2048),
        ]
    )
    """Text, texts, token ids, or lists of token ids (none empty; at most 2048 inputs)."""
    model: ModelName | None = None
    dimensions: json_int(ge=1) | None = None
    """Must be the model's embedding size (the schema served at /openapi.json states it
    once the model is loaded)."""
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    truncate: bool | None = None
    """clara (and Ollama): true embeds the start of an input longer than the query encoder
    reads, as Ollama does, instead of refusing it (400 context_length_exceeded, as OpenAI
    does); usage counts the tokens read. Default: the server's --truncate-embeddings."""


class Embedding(_Response):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class EmbeddingUsage(_Response):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(_Response):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# ---- models ------------------------------------------------------------------------------
class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "clara"
    # ---- CLaRa extension ----
    root: str | None = None  # the base model
    max_model_len: int | None = None
    mode: str | None = None  # what the model reads when a request names no mode (--mode)
    collection: str | None = None  # what a request that names no collection searches
    collections: list[str] | None = None  # ... several: a model NAME@A+B's
    retrieval: bool | None = None  # False: this id answers without retrieval
    # the retrieval modes a request may name, and the one it gets naming none (the web chat's
    # picker: it read them from the 100 KB /openapi.json at each load, a mobile audit)
    retrieval_modes: list[str] | None = None
    retrieval_mode: str | None = None


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---- legacy completions (POST /v1/completions) -------------------------------------------
TokenIds = Annotated[list[json_int(ge=0, le=2**32 - 1)], Field(min_length=1)]
MAX_PROMPTS = 16  # prompts of one request (the server's queue holds 16 by default)


def _prompts_at_most(n: int) -> dict[str, Any]:
    """A list of prompts holds at most `n` (a list of token ids is one prompt, any length)."""
    return {"if": {"type": "array", "items": {"type": "integer"}}, "else": {"maxItems": n}}


#: what clara does not do, stated in the schema: echo with logprobs; several prompts streamed
_COMPLETION_LIMITS = {
    "allOf": [
        {
            "if": {"properties": {"echo": {"const": True}}, "required": ["echo"]},
            "then": {"properties": {"logprobs": {"type": "null"}}},
        },
        {
            "if": {"properties": {"stream": {"const": True}}, "required": ["stream"]},
            "then": {"properties": {"prompt": _prompts_at_most(1)}},
        },
        _STREAM_OPTIONS_NEED_STREAM,
    ]
}


class CompletionRequest(_Request):
    """POST /v1/completions: OpenAI's legacy text completion. The prompt is read as it is by
    the bare base model: no chat template, no retrieval (for Continue's autocomplete,
    LiteLLM's text-completion models, `client.completions.create`)."""

    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=_COMPLETION_LIMITS)
    _unicode = model_validator(mode="before")(valid_unicode)
    _unknown = model_validator(mode="before")(classmethod(note_unknown))

    prompt: (
        Annotated[str, Field(min_length=1)]
        | TokenIds
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
        | Annotated[list[TokenIds], Field(min_length=1)]
    ) = only(_prompts_at_most(MAX_PROMPTS))  # (more: a 400 that says so)
    """Text or token ids, or a list of up to 16 prompts, each answered as its own choice
    (`index`), decoded side by side; a stream takes one."""
    model: ModelName | None = None
    best_of: json_int(ge=1) | None = only({"maximum": 1}, default=None)
    echo: bool | None = False
    """Return the prompt before the completion (not with logprobs)."""
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = only({"maxProperties": 0}, default=None)
    logprobs: json_int(ge=0, le=20) | None = None
    """Each token's log-probability and this many most likely alternatives."""
    max_tokens: json_int(ge=1) | None = 16
    """OpenAI's default: 16."""
    n: json_int(ge=1) | None = only({"maximum": 1}, default=None)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: JSONInt | None = None
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOPS)] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    suffix: str | None = only({"enum": ["", None]}, default=None)
    """Text after the completion (fill in the middle): not supported."""
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    user: str | None = None
    ignore_eos: bool = False
    """Decode to max_tokens even past end-of-sequence (as vLLM's)."""

    def check_supported(self) -> None:
        """Raise a 400 `APIError` for what this server cannot do, instead of ignoring it."""
        for name in ("n", "best_of"):
            if (getattr(self, name) or 1) > 1:
                refuse(name, f"{name} > 1 (several choices per request)")
        if self.suffix:
            refuse("suffix", "suffix (fill in the middle)", value=False)
        if self.logit_bias:
            refuse("logit_bias", "logit_bias", value=False)
        n = len(self.prompts())
        if n > MAX_PROMPTS:
            refuse("prompt", f"more than {MAX_PROMPTS} prompts per request")
        if n > 1 and self.stream:
            refuse("prompt", "several prompts in one stream (stream them one per request)")
        if self.echo and self.logprobs is not None:
            refuse("echo", "echo with logprobs (the prompt's log-probabilities)")
        _stream_options_need_stream(self)

    def prompts(self) -> list[str | list[int]]:
        """The request's prompts: text or token ids each."""
        if isinstance(self.prompt, list) and isinstance(self.prompt[0], (str, list)):
            return list(self.prompt)
        return [self.prompt]

    def to_params(self, defaults: ServingDefaults, prompt: str | list[int]) -> RagParams:
        """One of `prompts()`, as the engine takes it."""
        return RagParams(
            question=prompt if isinstance(prompt, str) else "",
            query="",
            retrieval=False,
            mode="text",
            top_k=0,
            collections=[defaults.collection],
            max_tokens=defaults.capped(self.max_tokens or 16),
            logprobs=self.logprobs is not None,
            top_logprobs=self.logprobs or 0,
            raw=list(prompt) if isinstance(prompt, list) else prompt,
            **_sampling(self, defaults),
        )


class CompletionLogprobs(_Response):
    """The legacy API's logprobs: per token its text, log-probability, best alternatives
    (text -> log-probability) and character offset in the returned text."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(_Response):
    text: str
    index: int = 0
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class Completion(_Response):
    """A legacy completion, or (streaming) one chunk of it."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


def legacy_completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"
