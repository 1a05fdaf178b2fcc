"""HTTP plumbing both services share (clara-serve and clara-index serve).

Every error leaves as OpenAI's `{"error": {"message", "type", "param", "code"}}` with its real
status: FastAPI's 422 for invalid bodies is rewritten to 400, and a 500 never shows a traceback.
A model worker that is not ready answers 503 with a code that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import importlib.resources
import ipaddress
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clara.errors import (
    INVALID_PART,
    ChunkingError,
    ClaraError,
    CollectionLockedError,
    CollectionNameCaseError,
    CollectionNotFoundError,
    ContextLengthError,
    DamagedCollectionError,
    DocumentError,
    DocumentNotFoundError,
    GrammarError,
    IndexMismatchError,
    UnsupportedDocumentError,
    UnsupportedModeError,
)
from clara.paths import COLLECTION_NAME, MAX_COLLECTION_NAME, disk_full, sqlite_error

log = logging.getLogger("clara.http")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",  # as OpenAI answers an unknown id
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable_error",
}


class APIError(Exception):
    """An HTTP error with OpenAI's error body; `headers` go on the response (e.g. Retry-After)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _integral(value: Any) -> Any:
    """2.0 is an integer to JSON Schema (and so to the OpenAPI schema); strict pydantic
    would refuse it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def json_int(**constraints: Any) -> Any:
    """An int field of a strict request model (`ge`, `le`, ... as for `Field`): takes 2 and
    2.0, refuses "2" and 2.5, as the OpenAPI schema's "integer" does."""
    return Annotated[int, Field(**constraints), BeforeValidator(_integral)]


JSONInt = json_int()


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The error body, for the OpenAPI schema."""

    error: ErrorDetail


def error_responses(*codes: int) -> dict:
    """`responses=` for a route or app: these statuses carry an `ErrorResponse`."""
    return {code: {"model": ErrorResponse} for code in codes}


class _ErrorJSON(JSONResponse):
    """An error's JSON answer, which tells the request's state its code (`error_code`): the
    access log line and the refusals metric name it (`clara_cli.metrics.MeteredGate`)."""

    def __init__(self, exc: APIError) -> None:
        super().__init__(exc.body(), status_code=exc.status, headers=exc.headers)
        self.code = exc.code

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.code:
            scope.setdefault("state", {})["error_code"] = self.code
        await super().__call__(scope, receive, send)


def error_response(exc: APIError) -> JSONResponse:
    return _ErrorJSON(exc)


def to_api_error(exc: BaseException) -> APIError:
    """Library exceptions -> the HTTP error a client should see (never a traceback)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ContextLengthError):
        return APIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, UnsupportedModeError):
        return APIError(400, str(exc), param="mode")
    if isinstance(exc, DamagedCollectionError):  # the server's files: not the client's to fix
        return APIError(500, str(exc), code="collection_damaged")
    if isinstance(exc, (CollectionNotFoundError, CollectionNameCaseError)):
        return APIError(404, str(exc), param="collection", code="collection_not_found")
    if isinstance(exc, DocumentNotFoundError):
        return APIError(404, str(exc), code="document_not_found")
    if isinstance(exc, IndexMismatchError):
        return APIError(400, str(exc), param="collection", code="index_mismatch")
    if isinstance(exc, CollectionLockedError):
        return APIError(409, str(exc), code="collection_locked")
    if isinstance(exc, UnsupportedDocumentError):
        return APIError(400, str(exc), param="file", code="unsupported_file")
    if isinstance(exc, DocumentError):
        return APIError(400, str(exc), param="file", code="invalid_file")
    if isinstance(exc, ChunkingError):
        return APIError(400, str(exc), code="invalid_chunking")
    if isinstance(exc, GrammarError):  # (a schema that runs past its limits mid-answer: a 400,
        # which clients do not retry; a 500 was tried three times by the SDKs, a re-audit)
        return APIError(400, str(exc), param="response_format", code="invalid_schema")
    if isinstance(exc, ClaraError):  # written to be read by users
        return APIError(500, str(exc))
    return APIError(500, "internal server error; the server log has the details")


def is_client_error(exc: BaseException) -> bool:
    """Whether `exc` reaches the client as a 4xx: the client's to fix, no traceback to log."""
    return to_api_error(exc).status < 500


CLIENT_GONE = 499  # nginx's "client closed request": only ever seen in metrics and logs
CLIENT_GONE_MESSAGE = "the client closed the request"

#: the id of the request being answered (`MeteredGate` sets it; X-Request-ID): work queued for
#: the model thread keeps the one it was queued under, so its failure is logged with it
REQUEST_ID: ContextVar[str | None] = ContextVar("clara_request_id", default=None)
#: The name of the API key a request came with (`AccessGate`: --api-key-file names each; one
#: --api-key is "api-key"), for the logs of what it changed; None without keys.
CALLER: ContextVar[str | None] = ContextVar("clara_caller", default=None)
#: The response header that tells a request's key its role (`KEY_ROLES`; sent only when the
#: server has keys): the web chat hides its upload form from an "ask" key (an audit: the form
#: was there, and each upload was a 403 after the file was picked).
ROLE_HEADER = "X-Clara-Key-Role"
_ROLE: ContextVar[str | None] = ContextVar("clara_key_role", default=None)


@dataclass(frozen=True)
class KeyScope:
    """What a key limited to some collections may read (`collections=` on its line of
    --api-key-file): the collections it names, and the vector stores and uploads the key made
    itself (their recorded owner is its name). Anything else does not exist for it (404)."""

    key: str
    collections: tuple[str, ...]

    def sees(self, name: str, owner: str | None = None) -> bool:
        """Whether the collection (vector store) or upload `name`, made by the key `owner`
        (None: by none, or before owners were recorded), is there for this key."""
        return name in self.collections or (owner is not None and owner == self.key)


#: The scope of the key a request came with (`AccessGate`); None: it reads every collection
#: (a key without `collections=`, one --api-key, or no keys at all).
SCOPE: ContextVar[KeyScope | None] = ContextVar("clara_scope", default=None)
#: What uvicorn's access line of the request being answered adds: its request id, its API
#: key's name, its error's code (`clara_cli.metrics.MeteredGate` sets it as the answer starts;
#: `clara_cli.serve`'s access-log filter reads it).
ACCESS_NOTE: ContextVar[str | None] = ContextVar("clara_access_note", default=None)


def by_caller() -> str:
    """' (key NAME)': the API key the request came with (`CALLER`), for the log of what it
    deleted (the access log line beside it names the client's address); '' without keys."""
    name = CALLER.get()
    return f" (key {name})" if name else ""


#: Retry-After of a `shutting_down` 503: about what a restart takes to load the model again.
RESTART_RETRY_S = 10


def loggable_path(path: str) -> str:
    """A request's path for a log line, percent-encoded as it was sent (decoded, "%0D%0A"
    wrote a made-up line into the log, and "%1B" a terminal escape; a security audit)."""
    return quote(path, safe="/:@!$&'()*+,;=-._~")


def client_gone_error() -> APIError:
    """The 499 of a request whose client left before its answer: for the metrics and the log
    (nobody reads its body)."""
    return APIError(CLIENT_GONE, CLIENT_GONE_MESSAGE, code="client_closed")


def storage_error(exc: BaseException, where: Path | str, what: str, *, also: str = "") -> APIError:
    """What the disk refused while a request wrote or read clara's files (an upload, the
    stored responses), as a `storage_error`: a 507 when the disk is full (ENOSPC or a quota,
    SQLite's SQLITE_FULL, or less than 1 MiB left where it writes: `disk_full`), else a 500;
    either says where and what to do, then `also` (another way round it). Uploads and the
    responses judged it two ways before."""
    folder = where if Path(where).is_dir() else Path(where).parent
    if not isinstance(exc, OSError):  # an sqlite3 error: the OSError it is, if the disk's
        exc = sqlite_error(exc, folder)
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    full = full or disk_full(folder)
    why = (exc.strerror if isinstance(exc, OSError) else None) or exc
    fix = "free disk space there" if full else "check that the server may write there"
    return APIError(
        507 if full else 500, f"could not {what} in {where}: {why}; {fix}{also}",
        code="storage_error",
    )  # fmt: skip


def shutting_down_error(message: str) -> APIError:
    """The 503 of a request a stopping server will not finish (Retry-After: a restart)."""
    return APIError(
        503, message, code="shutting_down", headers={"Retry-After": str(RESTART_RETRY_S)}
    )


#: Retry-After of a `model_loading` 503
LOADING_RETRY_S = 5


def check_ready(state: str, error: str | None) -> None:
    """Raise the 503 a request gets while the model worker is in `state` (not "ready")."""
    if state == "ready":
        return
    if state in ("starting", "loading"):
        raise APIError(
            503,
            "the model is still loading; retry in a few seconds",
            code="model_loading",
            headers={"Retry-After": str(LOADING_RETRY_S)},
        )
    if state == "stopped":
        raise shutting_down_error("the server is shutting down")
    raise APIError(503, f"the model could not be loaded: {error}", code="model_failed")


def health_response(state: str, body: dict, worker: Any = None, app: Any = None) -> JSONResponse:
    """A service's /health: 200 when the model worker is ready, else 503, with the
    Retry-After its API routes' 503s carry in that state (`check_ready`). A ready `worker`
    on one step longer than the app's `unhealthy_after` seconds (`--unhealthy-after`) is a
    503 "stalled": a hang a liveness probe can restart (a container audit)."""
    limit = getattr(getattr(app, "state", None), "unhealthy_after", 0) or 0
    if state == "ready" and worker is not None and limit and (stuck := worker.stuck_for()) > limit:
        body["status"] = "stalled"
        body["error"] = (
            f"the model worker has been on one step for {stuck:.3g} s (--unhealthy-after "
            f"{limit:g}): it may hang; restart the server if it stays so"
        )
        return JSONResponse(body, status_code=503)
    if state == "ready":
        return JSONResponse(body)
    try:
        check_ready(state, None)
    except APIError as exc:
        return JSONResponse(body, status_code=503, headers=exc.headers)
    return JSONResponse(body, status_code=503)


# union member tags pydantic puts in an error's path: types ("str", "list[int]") and model
# names ("InputMessage"); the API's own field names are lower-case identifiers
_UNION_TAG = re.compile(r"[^A-Za-z0-9_]|^[A-Z]|^(str|int|float|bool|none|dict|list)$")


def media_type(headers: Any) -> str:
    """A request's media type, from its Content-Type: no parameters, lower case (RFC 9110:
    `Multipart/Form-Data; boundary=...` is multipart/form-data); "" when it names none."""
    return headers.get("content-type", "").partition(";")[0].strip().lower()


def sends_body(scope: Scope) -> bool:
    """Whether a request comes with a body: a Content-Length other than 0, or chunks."""
    head = dict(scope.get("headers", []))
    return head.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in head


def _not_json(request: Request, exc: RequestValidationError) -> APIError | None:
    """415 for a JSON body sent as another media type (curl's `-d` sends a form's; a page's
    `fetch` text/plain): FastAPI then reads no body, and the 400 said "the request body must
    be a JSON object" of a body that was one. Not parsed anyway: a page of another site may
    send text/plain without asking first (CORS), never JSON."""
    errors = exc.errors()
    if not errors or tuple(errors[0].get("loc", ())) != ("body",):
        return None
    if not sends_body(request.scope):  # no body at all: the 400 says what is missing
        return None
    media = media_type(request.headers)
    if media == "application/json" or media.endswith("+json"):
        return None
    sent = f"Content-Type: {media}" if media else "no Content-Type"
    return APIError(
        415,
        f"send the request body as JSON with 'Content-Type: application/json' (this request "
        f"has {sent})",
        code="unsupported_media_type",
    )


def _param(loc: tuple) -> str | None:
    """`("body", "input", "list[InputItem]", 0, "role")` -> "input.[0].role": where the value
    came from and union member tags (which pydantic puts in the path) are left out."""
    where = ("body", "query", "path", "header")
    parts = list(loc[1:] if loc and loc[0] in where else loc)
    parts = [p for p in parts if not (isinstance(p, str) and _UNION_TAG.search(p))]
    if not parts:
        return None
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in parts)


def _validation_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    if not errors:
        return APIError(400, "invalid request")
    first = errors[0]
    if len(errors) > 1 and first.get("type") != "json_invalid":
        # A value matching no member of a union: a list of the wrong length says most (it had
        # the right type: [] or 2049 inputs), else the member it got furthest into.
        first = min(errors, key=_telling)
    if first.get("type") == NOT_UNICODE:  # found by the model's `valid_unicode`: its field
        return APIError(400, first["msg"], param=first["ctx"]["field"])
    if first.get("type") == INVALID_PART:  # a part its model checks itself: where inside it
        where = _param((*first.get("loc", ()), *first["ctx"]["at"]))
        return APIError(400, f"{where}: {first['ctx']['what']}", param=where)
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", "invalid JSON")
        return APIError(
            400,
            f"We could not parse the JSON body of your request ({detail}); send a JSON object",
        )
    param = _param(tuple(first.get("loc", ())))
    if param is None:
        return APIError(400, f"the request body must be a JSON object: {first.get('msg')}")
    kind = first.get("input")
    if first.get("type") == "literal_error" and isinstance(kind, str) and kind in _NOT_TEXT:
        return APIError(  # an image, file or audio part: say so, not which literals pass
            400, f"content of type {kind!r} at '{param}': this model reads text only",
            param=param,
        )  # fmt: skip
    for e in errors:  # an item of a kind this server never takes (a tool call's output)
        kind = e.get("input").get("type") if isinstance(e.get("input"), dict) else None
        if isinstance(kind, str) and kind in _TOOL_ITEMS:
            loc = tuple(e.get("loc", ()))
            where = _param(loc[:-1] if e.get("type") == "missing" else loc)  # the item's place
            return APIError(
                400, f"items of type {kind!r} are not supported: clara-serve runs no hosted "
                "tools but file_search (function calls and their outputs are read as text)",
                param=where, code="unsupported_value",
            )  # fmt: skip
    if first.get("type") == "string_pattern_mismatch" and (
        first.get("ctx", {}).get("pattern") == COLLECTION_NAME
    ):  # (the pattern itself, a regular expression, said it to a web chat user)
        return APIError(
            400, f"{first.get('input')!r} is not a collection name: use letters, digits, '.', "
            f"'_' or '-', starting with a letter or digit (at most {MAX_COLLECTION_NAME})",
            param=param,
        )  # fmt: skip
    if first.get("type") == "extra_forbidden":  # (pydantic's "Extra inputs are not permitted")
        return APIError(
            400, f"unknown parameter '{param}': this server does not support it (an OpenAI "
            "parameter it lacks, or a misspelt one)", param=param, code="unknown_parameter",
        )  # fmt: skip
    # the same union member's other problems (those of the members it is not are noise)
    others = sum(1 for e in errors if e is not first and _member(e) == _member(first))
    more = f" (and {others} more problems)" if others else ""
    message = str(first.get("msg")).removeprefix("Value error, ")
    return APIError(400, f"{message}: '{param}'{more}", param=param)


_TOOL_ITEMS = {
    "computer_call", "computer_call_output", "web_search_call", "code_interpreter_call",
    "image_generation_call", "local_shell_call", "local_shell_call_output", "mcp_call",
    "mcp_list_tools", "mcp_approval_request", "mcp_approval_response",
}  # fmt: skip


_NOT_TEXT = {"input_image", "input_file", "input_audio", "image_url", "file"}


def _member(error: dict) -> tuple:
    """The union member tags on an error's path ("list[str]", ...)."""
    return tuple(p for p in error.get("loc", ()) if isinstance(p, str) and _UNION_TAG.search(p))


def _telling(error: dict) -> tuple:
    """Sort key, most telling validation error first: a list's length, then the deepest."""
    length = error.get("type") in ("too_short", "too_long")
    return (not length, -len(_param(tuple(error.get("loc", ()))) or ""))


def _meant(request: Request) -> str | None:
    """The API path a 404's path was probably meant to be: "/models" or "/v1//models" (a base
    URL without /v1, or ending in a slash) -> "/v1/models"; None when no route matches."""
    path = request.url.path
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    guess = "/" + "/".join(parts if parts[0] == "v1" else ["v1", *parts])
    if guess == path:
        return None
    return guess if request.method in _methods_at(request.app, guess) else None


def _methods_at(app: FastAPI, path: str) -> set[str]:
    """Every method the app's routes take at `path`: HEAD wherever GET (`HeadAsGet`), and
    GET and HEAD under a folder of static files (a Mount names no methods: its 405 said
    `Allow:` with none)."""
    methods: set[str] = set()
    for route in app.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            if isinstance(getattr(route, "app", None), StaticFiles):
                methods |= {"GET", "HEAD"}
            methods |= set(getattr(route, "methods", None) or ())
    return methods | ({"HEAD"} if "GET" in methods else set())


def _allowed(request: Request) -> list[str]:
    methods = _methods_at(request.app, request.url.path)
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return sorted(methods, key=lambda m: order.index(m) if m in order else len(order))


def install_error_handlers(app: FastAPI) -> None:
    """Render every error an app can raise as OpenAI's error body."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(ClaraError)  # library errors, mapped in one place (to_api_error)
    async def clara_error(request: Request, exc: ClaraError) -> JSONResponse:
        return error_response(to_api_error(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_not_json(request, exc) or _validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"Unknown request URL: {request.method} {request.url.path}"
            meant = _meant(request)
            if meant:  # a front-end's base URL without /v1, or with a slash too many
                message += f"; did you mean {meant}? (a client's base URL ends in /v1)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method the path has, not only its first route's
            headers["Allow"] = ", ".join(_allowed(request)) or headers.get("Allow", "")
        code = {413: "request_too_large", CLIENT_GONE: "client_closed"}.get(exc.status_code)
        return error_response(APIError(exc.status_code, message, code=code, headers=headers))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        rid = getattr(request.state, "request_id", None)
        log.error(
            "unhandled error on %s (request %s)", loggable_path(request.url.path), rid,
            exc_info=exc,
        )  # fmt: skip
        with contextlib.suppress(AttributeError):  # Starlette raises it again to uvicorn,
            exc.clara_logged = True  # which logs it a second time: `serve.logged_once`
        return error_response(
            APIError(500, "internal server error; the server log has the details")
        )


#: Largest JSON request body (a chat's whole conversation): far above what any model's context
#: holds, low enough that parsing it cannot exhaust memory. Uploads have their own limit.
MAX_JSON_BODY = 32 * 2**20


#: The multipart file upload: its own size limit (`--max-upload-mb`), not BodyLimit's.
UPLOAD_ROUTES = {("POST", "/v1/files")}


class BodyLimit:
    """Pure ASGI middleware: a request body (other than a file upload) over `limit` bytes
    is refused with 413 before it is parsed, by its Content-Length or, sent in chunks, as soon
    as it grows past the limit. A body in a content coding (gzip) is refused with 415: none is
    decoded, and a gzip body was a bare "error parsing the body", a coding named by mistake
    ignored."""

    def __init__(self, app: ASGIApp, limit: int = MAX_JSON_BODY) -> None:
        self.app = app
        self.limit = limit

    def refusal(self, size: str) -> APIError:
        return APIError(
            413,
            f"the request body ({size}) is over the {_amount(self.limit)} limit; send less "
            "(files go through the Files API's multipart upload)",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = dict(scope.get("headers", []))
        codings = [  # every header and every coding in one (a "gzip" then an "identity"
            c.strip().lower()  # header passed as identity: the last one counted)
            for k, v in scope.get("headers", []) if k == b"content-encoding"
            for c in v.decode("latin-1").split(",")
        ]  # fmt: skip
        coding = ", ".join(c for c in codings if c not in ("identity", ""))
        if coding and sends_body(scope):
            refusal = APIError(
                415,
                f"the request body is sent in a content coding ({coding}); send it as it is, "
                "without Content-Encoding",
                code="unsupported_media_type",
                headers={"Accept-Encoding": "identity"},
            )
            await error_response(refusal)(scope, receive, send)
            return
        if (scope["method"], scope["path"]) in UPLOAD_ROUTES:  # limited by --max-upload-mb
            await self.app(scope, receive, send)
            return
        length = head.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await error_response(self.refusal(f"{int(length)} bytes"))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # FastAPI passes an HTTPException from the body read on
                raise StarletteHTTPException(413, self.refusal("sent in chunks").message)
            return message

        await self.app(scope, counted, send)


def _amount(n: int) -> str:
    return f"{n // 2**20} MiB" if n % 2**20 == 0 else f"{n} bytes"


def lone_surrogate(value: Any, at: str = "") -> str | None:
    """Where in parsed JSON a string holds a lone surrogate (JSON's "\\ud800" escape parses to
    one; it is not Unicode text and no tokenizer takes it), as a path like
    `messages[0].content`; None if every string is valid. Paths are built only down the
    branch that holds one."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return at or "body"
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and not _valid(key):  # a dict key
            return f"{at}.{key!r}" if at else repr(key)
        if isinstance(item, (str, dict, list)) and not _valid(item):
            return lone_surrogate(item, f"{at}[{key}]" if isinstance(key, int) else
                                  f"{at}.{key}" if at else str(key))  # fmt: skip
    return None


def _valid(value: Any) -> bool:
    """No lone surrogate anywhere in `value` (no paths: the common case, cheaply)."""
    return _walk(value, math.inf)[0]


def _walk(value: Any, most: float) -> tuple[bool, int]:
    """(no lone surrogate in `value`, how many JSON values it holds), stopping once past
    `most` values. Only strings, lists and dicts are looked into (numbers are counted by
    their lists' lengths)."""
    stack, count, valid = [value], 1, True
    while stack and count <= most:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if valid:  # (a bad one found: still counted to the end, for the cap)
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    valid = False
        elif kind is dict:
            count += 2 * len(item)
            stack.extend(item.keys())
            stack.extend(v for v in item.values() if type(v) in _INSIDE)
        elif kind is list:
            count += len(item)
            if count <= most:
                stack.extend(v for v in item if type(v) in _INSIDE)
    return valid, count


_INSIDE = (str, dict, list)

#: the JSON values (numbers, strings, items...) a request body may hold: 2048 texts to embed,
#: or 2048 inputs of 480 token ids, 16 prompts of token ids (longer inputs with "truncate":
#: split the request); a body of 32 MiB of numbers held the event loop for 10 s while it was
#: validated (a security audit)
MAX_JSON_VALUES = 1_000_000
#: a body larger than this is parsed and looked through on a worker thread
_PARSE_APART = 64 << 10  # (parsing counts values in Python: 1 MiB of numbers, 0.26 s)

#: (the body parsed, where it holds a lone surrogate): `JSONBodyRequest.json` has looked
#: through it, and a request model's `valid_unicode` need not again
_LOOKED: ContextVar[tuple[Any, str | None] | None] = ContextVar("clara_json_looked", default=None)


def valid_unicode(data: Any) -> Any:
    """A before-validator for request models: refuse lone surrogates with the field's path."""
    looked = _LOOKED.get()
    if looked is not None and looked[0] is data:  # (the body itself, looked through already)
        where = looked[1]
    else:
        where = None if _valid(data) else lone_surrogate(data)
    if where is not None:  # (a ValueError would read "Value error, ..." and name no field)
        raise PydanticCustomError(
            NOT_UNICODE,
            "{field} is not valid Unicode text (it holds a lone surrogate escape such as "
            "\\ud800); send the text as UTF-8",
            {"field": where},
        )
    return data


#: OpenAI's bound on a metadata value, and clara's on the short strings stored beside a
#: request (a store's name, a response's user id): each is kept and sent back in listings
ShortText = Annotated[str, Field(max_length=512)]
#: `metadata` as OpenAI bounds it: at most 16 pairs, keys of 64 characters, values of 512
#: (stored with a response or a vector store: unbounded, one request stored megabytes)
Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], ShortText],
    Field(max_length=16),
]
NOT_UNICODE = "not_unicode"  # the error type `valid_unicode` raises


DOCS_FILES = "/docs-files"


def _not_a_number(constant: str) -> float:
    raise json.JSONDecodeError(f"{constant} is not a JSON number", constant, 0)


def _finite(number: str) -> float:
    value = float(number)
    if not math.isfinite(value):  # 1e999
        raise json.JSONDecodeError(f"{number} is out of a number's range", number, 0)
    return value


class JSONBodyRequest(Request):
    """A request whose JSON body is read as JSON defines it: Python's parser also takes NaN
    and Infinity (and reads 1e999 as infinity), which, stored (a file's attributes), made
    every later answer that carries them a 500 and every stream that sends them unreadable
    to `JSON.parse`."""

    async def body(self) -> bytes:
        """The body; a client gone before sending it all is a 499 (FastAPI made it a 400,
        "There was an error parsing the body": a client's fault counted in the metrics)."""
        try:
            return await super().body()
        except ClientDisconnect:
            raise StarletteHTTPException(CLIENT_GONE, CLIENT_GONE_MESSAGE) from None

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            if len(body) > _PARSE_APART:  # (numbers and objects, counted by Python calls,
                # let the event loop run between them; a long run of strings holds it)
                self._json, where = await asyncio.to_thread(_parse, body)
            else:
                self._json, where = _parse(body)
            _LOOKED.set((self._json, where))
        return self._json


def _parse(body: bytes) -> tuple[Any, str | None]:
    """A JSON body, and where it holds a lone surrogate (None: nowhere); a 400 if it holds
    more than MAX_JSON_VALUES values."""
    if body.count(b"[") > MAX_JSON_VALUES:  # (arrays, strings and constants are built in C,
        raise _too_many_values()  # holding the interpreter: a body of "[]," took 4 s, 880 MB)
    left = MAX_JSON_VALUES

    def counted(value: Any, n: int = 1) -> Any:  # numbers and objects, as they are parsed:
        nonlocal left  # a body of millions stops at the cap, not once all are built
        left -= n
        if left < 0:
            raise _TooManyValues
        return value

    try:
        data = json.loads(
            body, parse_constant=_not_a_number,
            parse_int=lambda text: counted(int(text)),
            parse_float=lambda text: counted(_finite(text)),
            object_pairs_hook=lambda pairs: counted(dict(pairs), 1 + len(pairs)),
        )  # fmt: skip
        valid, count = _walk(data, MAX_JSON_VALUES)
        if count > MAX_JSON_VALUES:
            raise _TooManyValues
    except _TooManyValues:
        raise _too_many_values() from None
    except UnicodeDecodeError as exc:  # (it was "There was an error parsing the body")
        raise StarletteHTTPException(
            400,
            f"the request body is not UTF-8 (byte {exc.start}: {body[exc.start : exc.start + 1]!r}"
            "): send JSON encoded as UTF-8 (a client's file read as Latin-1 or Windows-1252 "
            "sends such bytes)",
        ) from None
    return data, None if valid else lone_surrogate(data)


def _too_many_values() -> StarletteHTTPException:
    """(an HTTPException: FastAPI passes on only those from a body's parse)"""
    return StarletteHTTPException(
        400,
        f"the request body holds more than {MAX_JSON_VALUES} JSON values (numbers, "
        "strings, items, brackets); send the inputs in several requests",
    )


class _TooManyValues(Exception):
    pass


class JSONBodyRoute(APIRoute):
    """The routes of clara's apps: their bodies parse as `JSONBodyRequest`s."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(JSONBodyRequest(request.scope, request.receive))

        return route


class HeadAsGet:
    """Pure ASGI middleware: HEAD is answered as GET is, without the body (the server leaves
    it out, by its own record of the method). FastAPI gives its GET routes no HEAD, so a
    load balancer's or uptime monitor's HEAD /v1/models was a 405 (RFC 9110: a server with
    GET has HEAD). The routes' Allow lists HEAD beside GET (`_methods_at`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


def api_app(*, title: str, summary: str, lifespan: Any) -> FastAPI:
    """A clara HTTP app: strict JSON bodies, HEAD wherever GET, every error as OpenAI's error
    body, and the API reference served without a CDN. Routes are added by the caller, on the
    app itself (an included APIRouter's routes keep their own class and so FastAPI's JSON
    parsing)."""
    from clara import __version__

    app = FastAPI(
        title=title, summary=summary, version=__version__, lifespan=lifespan, docs_url=None,
        redoc_url=None,
    )  # fmt: skip
    app.router.route_class = JSONBodyRoute
    app.add_middleware(HeadAsGet)  # (innermost: the gate and the body limit see HEAD)
    install_error_handlers(app)
    serve_api_docs(app)
    return app


def serve_api_docs(app: FastAPI) -> None:
    """The API reference, `/docs` (Swagger UI) and `/redoc`, from files installed with clara
    (the fastapi-offline package's copies) instead of FastAPI's CDN links, which leave the pages
    blank on a machine without network. The app is made with docs_url=None, redoc_url=None."""
    files = Path(str(importlib.resources.files("fastapi_offline") / "static"))
    app.mount(DOCS_FILES, StaticFiles(directory=files), name="docs-files")
    title = f"{app.title} API"

    # (addresses relative to the page: behind a proxy that serves the server under a path
    # of its own, /clara/docs reads /clara/openapi.json)
    schema, files = (app.openapi_url or "/openapi.json").lstrip("/"), DOCS_FILES.lstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _own_images_only(
            get_swagger_ui_html(
                openapi_url=schema,
                title=title,
                swagger_js_url=f"{files}/swagger-ui-bundle.js",
                swagger_css_url=f"{files}/swagger-ui.css",
                swagger_favicon_url=f"{files}/favicon.png",
            )
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _own_images_only(
            get_redoc_html(
                openapi_url=schema,
                title=title,
                redoc_js_url=f"{files}/redoc.standalone.js",
                redoc_favicon_url=f"{files}/favicon.png",
                with_google_fonts=False,
            )
        )


def _own_images_only(page: HTMLResponse) -> HTMLResponse:
    """`page` with a policy that lets the browser load images from the server only: ReDoc's
    bundle draws its footer's logo from Redocly's CDN, an outbound request an air-gapped
    network's egress monitoring flags (an audit)."""
    page.headers["Content-Security-Policy"] = "img-src 'self' data: blob:"
    return page


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or address, IPv6 with or without brackets) is this machine."""
    name = host.strip("[]").lower()
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name == "localhost" or name.endswith(".localhost")


def _host_name(value: str) -> str:
    """The name in a Host header or an Origin's netloc: 'a.b:8000' -> 'a.b', '[::1]:80' ->
    '::1'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


#: Methods a browser may send to another site without asking (a form's POST): the ones that
#: change something are checked, and so is another site's preflight (OPTIONS) unless its
#: origin is allowed (`--allow-origin`).
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

#: What a key of --api-key-file may do (its line's third word; none: "all")
KEY_ROLES = {
    "all": "ask, upload, index and delete",
    "ask": "ask and read: no upload, no new or deleted collection or file, no deleted stored "
    "response (its Responses are stored as any key's, unless it sends store: false)",
    "metrics": "read /metrics only, for a Prometheus",
}
#: The POSTs that ask rather than change: an "ask" key may send them
_ASKING = re.compile(
    r"/v1/(chat/completions|completions|embeddings|responses(/input_tokens)?"
    r"|responses/[^/]+/cancel|vector_stores/[^/]+/search)/?"
)


def role_allows(role: str, method: str, path: str) -> bool:
    """Whether a key of `role` (`KEY_ROLES`) may make this request."""
    if role == "metrics":
        return method in ("GET", "HEAD") and path == "/metrics"
    if role == "ask":
        return method in _SAFE_METHODS or (method == "POST" and bool(_ASKING.fullmatch(path)))
    return True


#: What a preflight from an allowed origin is told: the methods the APIs use, and how long the
#: browser may keep the answer (Chromium keeps it 2 hours at most).
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_MAX_AGE_S = 7200
#: Response headers an allowed origin's page may read besides the safelisted ones (the openai
#: SDK reads Retry-After to wait before retrying a 503).
CORS_EXPOSE = f"Retry-After, WWW-Authenticate, X-Request-ID, {ROLE_HEADER}, openai-poll-after-ms"
#: A preflight's Access-Control-Request-Headers, echoed back: header names and commas only (the
#: openai JS SDK sends about ten x-stainless-* headers, and adds more from release to release).
_HEADER_LIST = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*")

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_PATTERN_HOST = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")
_PATTERN_HELP = (
    "give an origin as a browser sends it (https://web.chatboxai.app, http://localhost:3000), "
    "every origin of a scheme (tauri://*, app://*, file://*), a domain's subdomains "
    "(https://*.example.com), any port (http://localhost:*), null or *"
)


class OriginRule(NamedTuple):
    """One `--allow-origin` pattern: `regex` matches an Origin header (lower case);
    `any_page`: any web page may send a matching Origin (`*`, `null`: a sandboxed frame's)."""

    text: str
    regex: re.Pattern[str]
    any_page: bool


def origin_rule(text: str) -> OriginRule:
    """An `--allow-origin` pattern, or a ClaraError that says what one looks like."""
    value = text.strip().lower()
    if value == "*":
        return OriginRule(value, re.compile(r".*"), True)
    if value == "null":  # file:// pages, sandboxed frames, data: URLs
        return OriginRule(value, re.compile("null"), True)
    value = value.removesuffix("/")
    scheme, sep, netloc = value.partition("://")
    bad = ClaraError(f"--allow-origin {text!r} is not an origin pattern: {_PATTERN_HELP}")
    if not sep or not _SCHEME.fullmatch(scheme) or "/" in netloc:
        raise bad
    web = scheme in ("http", "https")
    if netloc == "*":  # tauri://localhost, file:// (no host), app://anything
        return OriginRule(value, re.compile(re.escape(scheme) + "://.*"), web)
    host, port = netloc, None
    if netloc.startswith("[") and "]:" in netloc:
        host, port = netloc.split("]:", 1)
        host += "]"
    elif not netloc.startswith("[") and ":" in netloc:
        host, port = netloc.rsplit(":", 1)
    if (host or web) and not _PATTERN_HOST.fullmatch(host):
        raise bad
    if port is not None and not (port == "*" or port.isdigit() and 0 < int(port) < 65536):
        raise bad
    host_re = re.escape(host)
    if host.startswith("*."):  # its subdomains, at any depth
        host_re = r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\." + re.escape(host[2:])
    port_re = "" if port is None else r"(:\d+)?" if port == "*" else ":" + port
    top_level = host.startswith("*.") and "." not in host[2:]  # https://*.com: every .com site
    regex = re.compile(re.escape(scheme) + "://" + host_re + port_re)
    return OriginRule(value, regex, web and top_level)


def origin_rules(patterns: Iterable[str], keyed: bool) -> tuple[OriginRule, ...]:
    """`--allow-origin`'s patterns; one that lets any web page in (`*`, `null`, `https://*`)
    needs an API key (`keyed`): else every page the user visits could read their documents."""
    rules = tuple(origin_rule(p) for p in patterns)
    open_to_all = [r.text for r in rules if r.any_page]
    if open_to_all and not keyed:
        what = "send Origin: null (any page can, from a sandboxed frame)"
        if open_to_all[0] != "null":
            what = "match it"
        raise ClaraError(
            f"--allow-origin {open_to_all[0]} lets every web page you visit read and change "
            f"your documents through this server (they all {what}); start it with --api-key "
            "(or CLARA_API_KEY) too and give that key to the app, or allow only the apps' "
            "own origins (https://web.chatboxai.app, tauri://*, ...)"
        )
    return rules


def _headers_of(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


#: seconds between two looks at --api-key-file's time stamp (by requests: none when idle)
KEY_FILE_CHECK_S = 1.0
#: ... and how long it must have been left as it is before it is read: a file being written
#: in place, read half-way, could drop a key's role or its collections (a review)
KEY_FILE_SETTLE_S = 0.5

#: (name -> key, name -> role, name -> the collections it may read) of an API key file
Keys = tuple[dict[str, str], dict[str, str], dict[str, tuple[str, ...]]]


def _few(names: list[str], most: int = 10) -> str:
    """`names` for a log line: the first `most`, then how many more."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


@dataclass
class KeyFile:
    """--api-key-file, read again when it changes: a key added is let in, and a key taken
    out refused, from the next request on, with no restart (which cut every client off, and
    left a leaked key working until it was made). `load` reads it (a `ClaraError` when it
    is wrong: the keys read before still count, and the log says why); `stamp` is what it
    was when they were read."""

    path: Path
    load: Callable[[], Keys]
    stamp: tuple[int, ...] | None = None
    checked: float = 0.0

    @staticmethod
    def stamp_of(path: Path) -> tuple[int, ...] | None:
        """(modified, changed, size, inode): what tells the file changed (the inode change
        time too: `cp -p` keeps the modification time, and a new key may be as long)."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)

    @staticmethod
    def settled(stamp: tuple[int, ...]) -> bool:
        """Whether the file was left as it is for KEY_FILE_SETTLE_S (not being written)."""
        return time.time_ns() - max(stamp[0], stamp[1]) >= KEY_FILE_SETTLE_S * 1e9


class AccessGate:
    """Pure ASGI middleware (streams and disconnects pass untouched), the one check before
    any route of either server:

    - the Host a request is addressed to, when the server listens on this machine only
      (`local_only`): this machine's names and addresses, or one of `allow_hosts`. A web page
      whose own name it rebinds to 127.0.0.1 (DNS rebinding) sends its name, and could
      otherwise read every document. Allowed origins do not change this;
    - a browser's request that changes something (POST, DELETE) from a page of another site
      (its Origin: not this server, nor one of `allow_hosts`, nor one `allow_origins`
      matches): a form on any page could upload files;
    - CORS for the origins `allow_origins` matches (`origin_rule`: browser and desktop chat
      apps): their preflight (OPTIONS with Access-Control-Request-Method, which never carries
      the key) is answered 204 here, and every response to them (errors and streams too)
      carries Access-Control-Allow-Origin. Another site's preflight is a 403. No origins by
      default: other sites' pages cannot read the answers;
    - the API key, on every path but `open_paths`, when there is one; a request carrying
      a key header twice is a 400 (proxies read the first, a dict the last); a key's role
      (`key_roles`, name -> "ask" or "metrics") refuses what it may not do with a 403, and
      its scope (`key_scopes`, name -> the collections it may read) is the request's
      `SCOPE`, which the routes that open a collection, an upload or a stored response ask."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: str | dict[str, str] | None,
        service: str = "the server",
        open_paths: tuple[str, ...] = ("/health",),
        local_only: bool = False,
        allow_hosts: tuple[str, ...] = (),
        allow_origins: tuple[str, ...] = (),
        key_roles: dict[str, str] | None = None,
        key_scopes: dict[str, tuple[str, ...]] | None = None,
        key_file: KeyFile | None = None,
    ) -> None:
        self.app = app
        # name -> key (--api-key-file: one per person or app); one key alone is "api-key"
        keys = {"api-key": api_key} if isinstance(api_key, str) else dict(api_key or {})
        self._use(keys, key_roles or {}, key_scopes or {})
        self.key_file = key_file  # read again when it changes (`_reread`)
        self.service = service
        self.open_paths = open_paths
        self.local_only = local_only
        self.allow_hosts = {_host_name(h) for h in allow_hosts}  # ('name:port', '[v6]' too)
        self.allow_origins = origin_rules(allow_origins, keyed=bool(self.keys))

    def _use(
        self, keys: dict[str, str], roles: dict[str, str], scopes: dict[str, tuple[str, ...]]
    ) -> None:
        """Check requests against these keys from now on (one assignment each: a request
        never sees a mix of the old keys and the new)."""
        self.roles = dict(roles)  # name -> its role other than "all" (KEY_ROLES)
        self.scopes = {n: KeyScope(n, tuple(c)) for n, c in scopes.items()}
        self.keys = [(name, key.encode()) for name, key in keys.items() if key]

    def _reread(self) -> None:
        """The key file read again if it changed since it was (looked at once a second at
        most, by a request); a file that cannot be used keeps the keys read before."""
        kf = self.key_file
        now = time.monotonic()
        if kf is None or now - kf.checked < KEY_FILE_CHECK_S:
            return
        kf.checked = now
        stamp = KeyFile.stamp_of(kf.path)
        if stamp == kf.stamp or (stamp is not None and not KeyFile.settled(stamp)):
            return  # (as it was; or written just now: looked at again at the next check)
        kf.stamp = stamp
        if stamp is None:
            log.error("--api-key-file %s cannot be read: the keys read before still count",
                      kf.path)  # fmt: skip
            return
        try:
            keys, roles, scopes = kf.load()
        except ClaraError as exc:
            log.error("--api-key-file %s changed and cannot be used (%s): the keys read before "
                      "still count", kf.path, exc)  # fmt: skip
            return
        before = {name for name, _ in self.keys}
        self._use(keys, roles, scopes)
        added, removed = sorted(set(keys) - before), sorted(before - set(keys))
        log.info("--api-key-file %s read again: %d keys%s%s", kf.path, len(keys),
                 f"; added: {_few(added)}" if added else "",
                 f"; removed: {_few(removed)}" if removed else "")  # fmt: skip

    def allows_origin(self, origin: str | None) -> bool:
        """Whether pages of `origin` may use this server from a browser (`allow_origins`)."""
        if origin is None:
            return False
        origin = origin.strip().lower()
        return any(rule.regex.fullmatch(origin) for rule in self.allow_origins)

    def refusal(self, scope: Scope) -> APIError | None:
        """Why `scope` may not go on (None: it may; an allowed origin's preflight is then
        answered by the gate itself, `__call__`)."""
        headers = _headers_of(scope)
        host = headers.get("host", "")
        name = _host_name(host)
        if self.local_only and host and not (is_loopback(name) or name in self.allow_hosts):
            return APIError(
                403,
                f"this request is addressed to {host!r}, not to {self.service}, which listens "
                "on this machine only; to reach it under that name (a reverse proxy), start it "
                f"with --allow-host {name}",
                type="invalid_request_error",
                code="forbidden_host",
            )
        origin = headers.get("origin")
        method = scope.get("method", "GET")
        preflight = _is_preflight(method, headers)
        if origin is not None and (preflight or method not in _SAFE_METHODS):
            netloc = origin.partition("://")[2]
            same = bool(netloc) and netloc.lower() == host.lower()
            ours = not preflight and (same or _host_name(netloc) in self.allow_hosts)
            if not ours and not self.allows_origin(origin):
                return APIError(
                    403,
                    self._cross_site(origin),
                    type="invalid_request_error",
                    code="cross_origin_request",
                )
        if preflight or not self.keys or scope["path"] in self.open_paths:
            return None
        self._reread()
        named = [k.decode("latin-1").lower() for k, _ in scope.get("headers", [])]
        twice = [h for h in ("authorization", "api-key", "x-api-key") if named.count(h) > 1]
        if twice:  # (the last one counted here, the first one in FastAPI and most proxies)
            return APIError(
                400,
                f"this request has {named.count(twice[0])} {twice[0]!r} headers: send the API "
                "key once",
            )
        scheme, _, token = headers.get("authorization", "").partition(" ")
        offered = [token] if scheme.lower() == "bearer" else []
        # Azure OpenAI's header and Anthropic-style clients' (Continue sends both with Bearer)
        offered += [headers[name] for name in ("api-key", "x-api-key") if name in headers]
        for sent in (k.strip().encode("latin-1") for k in offered):
            for name, key in self.keys:
                if hmac.compare_digest(sent, key):
                    CALLER.set(name)  # the route's logs name who did it (a deletion)
                    SCOPE.set(self.scopes.get(name))
                    role = self.roles.get(name, "all")
                    _ROLE.set(role)
                    if name in self.scopes and scope["path"] == "/metrics":
                        return APIError(
                            403,
                            f"the key {name} may read some collections only, and /metrics "
                            "names and counts them all: give the Prometheus a key of its own "
                            "('NAME KEY metrics' in the API key file)",
                            type="permission_error",
                            code="insufficient_role",
                        )
                    if role_allows(role, method, scope["path"]):
                        return None
                    return APIError(
                        403,
                        f"the key {name} may {KEY_ROLES[role]} (its role in the API key file "
                        f"is '{role}'): this {method} {loggable_path(scope['path'])} needs a "
                        "key of the role 'all'",
                        type="permission_error",
                        code="insufficient_role",
                    )
        return APIError(
            401,
            "Incorrect or missing API key: send 'Authorization: Bearer <key>' (or an 'api-key' "
            f"header) with a key {self.service} was started with (--api-key or CLARA_API_KEY, "
            "--api-key-file)",
            type="invalid_request_error",
            code="invalid_api_key",
            # RFC 6750: a key that was sent and is wrong says so; none sent, the scheme alone
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"' if offered else "Bearer"},
        )

    def _cross_site(self, origin: str) -> str:
        """The cross_origin_request message: which --allow-origin lets that origin in."""
        scheme, sep, netloc = origin.strip().partition("://")
        if not sep:  # "null": a file:// page, a sandboxed frame, a data: URL
            return (
                f"a page without an origin of its own (Origin: {origin}: a file:// page or a "
                f"sandboxed frame) may not use {self.service}; to allow such pages, start it "
                "with --allow-origin null, which needs an --api-key too (any web page can "
                "send Origin: null)"
            )
        hint = f"--allow-origin {origin if netloc else scheme + '://*'}"
        if scheme.lower() in ("http", "https") and netloc:
            hint += (
                f" (or, if a reverse proxy serves {self.service} under that name, --allow-host "
                f"{_host_name(netloc)})"
            )
        return (
            f"a page of another site ({origin}) may not use {self.service} from a browser; to "
            f"let that site's pages (a browser or desktop chat app) use it, start it with {hint}"
        )

    def _with_cors(self, send: Send, origin: str | None) -> Send:
        """`send`, adding `origin`'s CORS headers (None: only Vary) to the response."""

        async def cors_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                head = MutableHeaders(scope=message)
                if origin is not None:
                    head["Access-Control-Allow-Origin"] = origin
                    head["Access-Control-Expose-Headers"] = CORS_EXPOSE
                head.add_vary_header("Origin")
            await send(message)

        return cors_send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # (no route takes one: none passes unchecked either)
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        headers = _headers_of(scope)
        origin = headers.get("origin")
        allowed = self.allows_origin(origin)
        if self.allow_origins:  # answers then depend on the Origin: say so to caches
            send = self._with_cors(send, origin.strip() if allowed and origin else None)
        refusal = self.refusal(scope)
        if (role := _ROLE.get()) is not None:  # (a key's 403 too: an upgrade audit)
            send = _with_header(send, ROLE_HEADER, role)
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
        elif allowed and _is_preflight(scope["method"], headers):
            await _preflight(headers)(scope, receive, send)
        else:  # (its 500 through `send`: with the CORS headers and the request's id)
            await _crash_inside(self.app, scope, receive, send)


def _with_header(send: Send, name: str, value: str) -> Send:
    """`send`, adding the header `name` to the response."""

    async def headed(message: Message) -> None:
        if message["type"] == "http.response.start":
            message.setdefault("headers", [])
            MutableHeaders(scope=message)[name] = value
        await send(message)

    return headed


async def _crash_inside(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """`app`, whose unexpected exception becomes its 500 here, through `send` (with the CORS
    headers and `MeteredGate`'s X-Request-ID), instead of in Starlette's outermost
    middleware, outside the gate (a browser app then saw an opaque CORS failure, and no
    answer named its request). The exception goes on up to be logged."""
    started = False

    async def tracked(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, tracked)
    except Exception as exc:
        if not started:
            await error_response(to_api_error(exc))(scope, receive, send)
        raise


def _is_preflight(method: str, headers: dict[str, str]) -> bool:
    """A browser's CORS preflight: it asks before sending a request another site's page
    made (another method than GET/HEAD/POST, or headers such as Authorization)."""
    return (
        method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers
    )


def _preflight(headers: dict[str, str]) -> Response:
    """The 204 an allowed origin's preflight gets (its Allow-Origin: `AccessGate._with_cors`)."""
    answer = {
        "Access-Control-Allow-Methods": CORS_METHODS,
        "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
        "Vary": "Access-Control-Request-Method, Access-Control-Request-Headers",
    }
    asked = headers.get("access-control-request-headers", "").strip()
    if _HEADER_LIST.fullmatch(asked):
        answer["Access-Control-Allow-Headers"] = asked
    elif asked:  # not a list of header names: the ones clients need
        answer["Access-Control-Allow-Headers"] = "authorization, api-key, x-api-key, content-type"
    # Chromium's Private Network Access: a public site's page asking a server on this machine
    if headers.get("access-control-request-private-network", "").lower() == "true":
        answer["Access-Control-Allow-Private-Network"] = "true"
    return Response(status_code=204, headers=answer)
