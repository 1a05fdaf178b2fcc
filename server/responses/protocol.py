"""Request, response and stream-event models mirroring OpenAI's Responses API.

Fields follow OpenAI's schema (as the installed `openai` SDK parses them). The request model
lists every field OpenAI's `responses.create` takes; those clara cannot honour are refused
with a 400 naming them (`check_supported`), and fields OpenAI does not have are refused too
(a typo must not pass silently). CLaRa's request extensions sit in a marked block. As in
`server.protocol`, the OpenAPI schema narrows the refused fields (`only`) to the values that
pass, so schema and behaviour agree.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clara.paths import COLLECTION_NAME
from clara.retrieval import READING_MODES
from clara_cli.http import APIError, Metadata, ShortText, json_int, valid_unicode
from indexing.filters import AttributeFilter
from indexing.service.protocol import Attributes, Ranker
from server.protocol import (
    FORMATS,
    MAX_SEARCHED,
    MAX_TOOLS,
    NULL,
    CollectionName,
    CollectionNames,
    ModelName,
    format_grammar,
    note_tools,
    note_unknown,
    only,
    refuse,
)

VECTOR_STORE_ID = COLLECTION_NAME  # a vector store is a collection


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---- request -------------------------------------------------------------------------------
class InputContent(_Request):
    """One content part of an input message: input_text (or output_text / refusal when an
    earlier response's output item is sent back as input)."""

    model_config = ConfigDict(extra="allow", strict=True)  # annotations of output_text
    type: Literal["input_text", "output_text", "refusal"]
    text: str | None = None
    refusal: str | None = None


class InputMessage(_Request):
    """A message: OpenAI's EasyInputMessage (`{"role", "content"}`), an input message item,
    or an earlier response's output message sent back as input."""

    model_config = ConfigDict(extra="allow", strict=True)  # id, status of replayed items
    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputContent]

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text or p.refusal or "" for p in self.content)  # (as chat's)
        return self.content


class FileSearchCallInput(_Request):
    """An earlier response's file_search_call item sent back as input (skipped: its results
    are not read again)."""

    model_config = ConfigDict(extra="allow", strict=True)  # id, status, queries, results
    type: Literal["file_search_call"]


#: the input items of a tool call (another model's: clara calls none) and of its result
CALL_ITEMS = ("function_call", "custom_tool_call")
RESULT_ITEMS = ("function_call_output", "custom_tool_call_output")


class FunctionCallInput(_Request):
    """A function (or custom tool) call of an earlier turn, made by another model or sent
    back by an agent framework: read as a line of that turn's answer (clara calls no tools;
    an agent audit found any such conversation refused)."""

    model_config = ConfigDict(extra="allow", strict=True)  # id, status
    type: Literal[CALL_ITEMS]
    call_id: str
    name: str
    arguments: str | None = None  # a function_call's (a JSON string)
    input: str | None = None  # a custom_tool_call's


class FunctionCallOutputInput(_Request):
    """The result of a function (or custom tool) call: read with its call."""

    model_config = ConfigDict(extra="allow", strict=True)  # id, status
    type: Literal[RESULT_ITEMS]
    call_id: str
    output: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return "\n".join(p["text"] for p in self.output if isinstance(p.get("text"), str))


class ReasoningInput(_Request):
    """A reasoning item of another model's earlier turn (skipped: this model does not reason,
    and an encrypted one cannot be read)."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["reasoning"]


class ItemReference(_Request):
    """An earlier response's item by its id (what the Vercel AI SDK sends for the earlier
    turns of a conversation it lets the server store): read as that item."""

    model_config = ConfigDict(strict=True)
    type: Literal["item_reference"]
    id: Annotated[str, Field(min_length=1, max_length=256)]


class FileSearchRankingOptions(_Request):
    ranker: Ranker | None = None
    score_threshold: float | None = only({"maximum": 0}, default=None, ge=0.0, le=1.0)
    """Not supported: every retrieved chunk is read by the generator (0 or null only)."""


class FunctionTool(_Request):
    """A tool the app runs (a function, or a custom tool): taken and not called, as chat
    completions takes `tools` (the answer is text, as when a model calls none). The OpenAI
    Agents SDK sends an agent's function tools and handoffs with every turn."""

    model_config = ConfigDict(extra="allow", strict=True)  # parameters, strict, description
    type: Literal["function", "custom"]
    name: str


class FileSearchTool(_Request):
    type: Literal["file_search"]
    vector_store_ids: list[Annotated[str, Field(pattern=VECTOR_STORE_ID)]] = Field(
        min_length=1, max_length=MAX_SEARCHED
    )
    """Vector stores (clara collections), searched as one: up to MAX_SEARCHED."""
    max_num_results: json_int(ge=1, le=50) | None = None

    @field_validator("vector_store_ids", mode="before")
    @classmethod
    def _few_stores(cls, ids: Any) -> Any:
        if isinstance(ids, list) and len(ids) > MAX_SEARCHED:  # (pydantic's "List should have
            raise APIError(  # at most 8 items after validation" did not say whose limit it is)
                400, f"clara-serve searches at most {MAX_SEARCHED} vector stores per request, "
                f"not {len(ids)}: add the files to fewer stores, or ask each group apart",
                param="tools.[0].vector_store_ids",
            )  # fmt: skip
        return ids

    filters: AttributeFilter | None = None
    """Attribute filters: only documents whose attributes pass are searched."""
    ranking_options: FileSearchRankingOptions | None = None


#: tool_choice "required" or {"type": "file_search"} needs the tool in `tools`
_CHOICE_NEEDS_TOOL = {
    "if": {
        "required": ["tool_choice"],
        "properties": {"tool_choice": {"anyOf": [{"enum": ["required"]}, {"type": "object"}]}},
    },
    "then": {"required": ["tools"], "properties": {"tools": {"type": "array", "minItems": 1}}},
}


class ResponseCreateRequest(_Request):
    """POST /v1/responses (OpenAI's fields, then CLaRa's extension block)."""

    # fields it does not know are ignored and logged, as chat completions' are (a docs audit:
    # the README says so, and apps send other servers' options here too); input items and
    # function tools pass over what clara does not read, a file_search tool refuses it
    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=_CHOICE_NEEDS_TOOL)
    _unicode = model_validator(mode="before")(valid_unicode)  # no lone surrogates anywhere
    _unknown = model_validator(mode="before")(classmethod(note_unknown))

    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[
            list[
                InputMessage
                | FileSearchCallInput
                | ItemReference
                | FunctionCallInput
                | FunctionCallOutputInput
                | ReasoningInput
            ],
            Field(min_length=1),
        ]
    )
    """The model answers the latest user message (an empty question if there is none)."""
    model: ModelName | None = None
    background: bool | None = only({"enum": [False, None]}, default=None)
    conversation: str | dict[str, Any] | None = only(NULL, default=None)
    include: list[Literal["file_search_call.results", "message.output_text.logprobs"]] | None = None
    instructions: str | None = None
    max_output_tokens: json_int(ge=1) | None = None
    max_tool_calls: json_int(ge=1) | None = None
    """Any limit is kept: clara makes at most one file_search call per response."""
    metadata: Metadata | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    prompt: dict[str, Any] | None = only(NULL, default=None)
    prompt_cache_key: ShortText | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    """A hint (clara keeps what its prefix cache can hold, in memory)."""
    reasoning: dict[str, Any] | None = only(
        {"anyOf": [{"type": "object", "properties": {"effort": {"enum": [None, "none", "minimal"]}}},
                   NULL]},
        default=None,
    )  # fmt: skip
    """Effort "none" or "minimal" only, as chat's reasoning_effort: this model does not
    reason."""
    safety_identifier: ShortText | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    store: bool | None = True
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    text: dict[str, Any] | None = only(
        {"properties": {"format": {"anyOf": [
            {"type": "object", "required": ["type"], "properties": {
                "type": {"enum": FORMATS}, "name": {"type": "string"},
                "schema": {"type": "object"}},
             "if": {"properties": {"type": {"const": "json_schema"}}},
             "then": {"required": ["schema"]}},
            NULL,
        ]}}},
        default=None,
    )  # fmt: skip
    """`format`: {"type": "text"} (the default), {"type": "json_object"}, or {"type":
    "json_schema", "name", "schema"}: the answer is JSON, valid under the schema."""

    def grammar(self) -> str | None:
        """The grammar `text.format` holds the answer to (None: text); slow for a large
        schema: off the event loop."""
        return format_grammar((self.text or {}).get("format"), "text.format", schema_at="")

    tool_choice: str | dict[str, Any] | None = only(
        {
            "anyOf": [
                {"enum": ["auto", "none", "required"]},
                {
                    "type": "object",
                    "properties": {"type": {"enum": ["file_search"]}},
                    "required": ["type"],
                },
                NULL,
            ]
        },
        default=None,
    )
    tools: list[FileSearchTool | FunctionTool] | None = Field(default=None, max_length=MAX_TOOLS)
    """One file_search tool, and function tools, which clara takes and does not call."""
    top_logprobs: json_int(ge=0, le=20) | None = None
    """With each output token's logprob, this many most likely alternatives; the logprobs
    come back when `include` has "message.output_text.logprobs" (as OpenAI's)."""
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    truncation: Literal["auto", "disabled"] | None = None
    """"disabled": the whole conversation is read, or the request is a 400; "auto" (clara's
    default; OpenAI's is "disabled"): the last --history-turns exchanges of the server, then
    older turns and the lowest-ranked chunks dropped until it fits."""
    user: ShortText | None = None

    # ---- CLaRa extensions (the SDK's `extra_body`) ----
    retrieval: bool = True
    """Without a file_search tool the default collection is searched, as chat completions
    does; false answers from the bare model. (With a file_search tool: its vector stores.)"""
    collection: CollectionName | CollectionNames | None = None
    """Collection searched without a file_search tool, or a list of up to MAX_SEARCHED
    searched as one (default: in a `previous_response_id` chain, those the previous response
    searched; else the server's --collection)."""
    top_k: json_int(ge=0, le=100) | None = None
    """Chunks to retrieve without a file_search tool (default: the server's --top-k)."""
    mode: Literal[READING_MODES] | None = None
    """"memory": the generator reads compressed memories; "text": the chunks' raw text;
    "mixed": the best chunk's text and the others' memories (default: the server's --mode)."""
    retrieval_mode: Literal["hybrid", "dense", "lexical"] | None = None
    """How chunks are found, with or without a file_search tool (as in chat completions):
    "hybrid" (the server's default) fuses "dense" and "lexical" (BM25) rankings."""
    filters: AttributeFilter | None = None
    """Attribute filters (as in chat completions): only documents whose attributes pass are
    searched; with a file_search tool, for a tool without its own. Default: in a
    `previous_response_id` chain that searches the same collection, the previous one's."""

    @field_validator("tools", mode="before")
    @classmethod
    def _only_file_search(cls, tools: Any) -> Any:
        for i, tool in enumerate(tools if isinstance(tools, list) else []):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if isinstance(kind, str) and kind not in ("file_search", "function", "custom"):
                raise APIError(
                    400, f"tools of type {kind!r} are not supported by clara-serve: it runs "
                    "file_search, and takes function tools without calling them",
                    param=f"tools.[{i}].type", code="unsupported_value",
                )  # fmt: skip
        return tools

    def file_searches(self) -> list[tuple[int, FileSearchTool]]:
        """The file_search tools, with their places in `tools` (one is searched: the server
        refuses more, once their stores are found to be there)."""
        return [(i, t) for i, t in enumerate(self.tools or []) if isinstance(t, FileSearchTool)]

    def file_search(self) -> tuple[int, FileSearchTool] | None:
        """The (first) file_search tool and its place in `tools`."""
        return next(iter(self.file_searches()), None)

    def check_supported(self) -> None:
        """Raise a 400 naming each field clara cannot honour (rather than ignoring it)."""
        if self.background:
            refuse("background", "background mode")
        if self.conversation is not None:
            refuse("conversation", "conversations", value=False, then="use previous_response_id")
        if self.prompt is not None:
            refuse("prompt", "prompt templates", value=False)
        reasoning = self.reasoning or {}
        if reasoning.get("effort") not in (None, "none", "minimal"):
            refuse(
                "reasoning.effort", "reasoning effort above 'minimal' (this model does not reason)"
            )
        if reasoning.get("summary") not in (None, "auto", "concise", "detailed"):
            raise APIError(400, "reasoning.summary must be auto, concise or detailed",
                           param="reasoning.summary")  # fmt: skip
        if set(reasoning) - {"effort", "summary", "generate_summary"}:
            refuse(
                "reasoning",
                f"reasoning options {sorted(set(reasoning) - {'effort', 'summary', 'generate_summary'})}",
                value=False,
            )
        format_grammar((self.text or {}).get("format"), "text.format", "", compile=False)
        if any(isinstance(t, FunctionTool) for t in self.tools or []):
            note_tools()
        choice = self.tool_choice
        if choice not in (None, "auto", "none", "required") and not (
            isinstance(choice, dict) and choice.get("type", 0) == "file_search"
        ):
            refuse("tool_choice", f"tool_choice {json.dumps(choice)} (this server calls no "
                   "tools but file_search)", then='send "auto", "none", "required" or '
                   '{"type": "file_search"}')  # fmt: skip
        if choice == "required" or isinstance(choice, dict):
            if self.file_search() is None:
                raise APIError(
                    400, f"tool_choice {json.dumps(choice)} needs a file_search tool in "
                    "'tools' (without one, leave tool_choice unset: clara-serve then "
                    "searches its default collection)", param="tool_choice",
                    code="invalid_value",
                )  # fmt: skip


# ---- response ------------------------------------------------------------------------------
class FileCitation(_Response):
    type: Literal["file_citation"] = "file_citation"
    file_id: str
    filename: str
    index: int


class OutputText(_Response):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[FileCitation] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class OutputMessage(_Response):
    id: str = Field(default_factory=lambda: new_id("msg"))
    type: Literal["message"] = "message"
    status: Literal["in_progress", "completed", "incomplete"] = "in_progress"
    role: Literal["assistant"] = "assistant"
    content: list[OutputText] = Field(default_factory=list)


class FileSearchResult(_Response):
    file_id: str
    filename: str
    score: float
    text: str
    attributes: Attributes | None = None


class FileSearchCall(_Response):
    id: str = Field(default_factory=lambda: new_id("fs"))
    type: Literal["file_search_call"] = "file_search_call"
    status: Literal["in_progress", "searching", "completed", "incomplete", "failed"] = "in_progress"
    queries: list[str]
    results: list[FileSearchResult] | None = None


class InputTokensDetails(_Response):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(_Response):
    reasoning_tokens: int = 0


class ResponseUsage(_Response):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class ResponseError(_Response):
    """A failed response's error. Its `code` is one OpenAI's SDKs know (typed clients, in
    TypeScript, Go or .NET, refuse others): clara's own code is kept in the message."""

    code: str
    message: str

    @classmethod
    def of(cls, error: Any) -> ResponseError:
        """The error of a response that failed with the `APIError` `error`."""
        code = error.code or "server_error"
        if code in _ERROR_CODES:
            return cls(code=code, message=error.message)
        known = _ERROR_CODE_OF.get(code, "server_error")
        return cls(code=known, message=f"{error.message} ({code})")


#: OpenAI's codes of a response's error that clara can give, and its own codes' nearest one
_ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})
_ERROR_CODE_OF = {"server_overloaded": "rate_limit_exceeded",
                  "context_length_exceeded": "invalid_prompt"}  # fmt: skip


class IncompleteDetails(_Response):
    reason: Literal["max_output_tokens", "content_filter"]


class Response(_Response):
    id: str = Field(default_factory=lambda: new_id("resp"))
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    status: Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"] = (
        "in_progress"
    )
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[FileSearchCall | OutputMessage] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None
    service_tier: str | None = None
    store: bool = True
    temperature: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_logprobs: int | None = None
    top_p: float | None = None
    truncation: Literal["auto", "disabled"] = "auto"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    # ---- CLaRa extension ----
    retrieval: dict[str, Any] | None = None
    """What retrieval did (as in chat completions): status, collection, mode, top_k."""

    @property
    def output_text(self) -> str:
        return "".join(
            part.text
            for item in self.output
            if isinstance(item, OutputMessage)
            for part in item.content
        )


class ResponseDeleted(_Response):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


class InputItemList(_Response):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
