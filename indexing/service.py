"""The indexing service: OpenAI's Files + Vector Stores API over clara collections.

    POST /v1/files (multipart, purpose "assistants")   -> <index>/uploads/<file_id>/<filename>
    POST /v1/vector_stores {"name"}                     -> collection <name> (or "vs_<hex>")
    POST /v1/vector_stores/{id}/files {"file_id"}       -> a queued compression job
    POST /v1/vector_stores/{id}/search {"query"}        -> chunks, best first

One MLX worker thread loads and owns the model (as in `server.engine`). Awaited calls (query
encoding for search) run before background jobs; a compression job runs one model batch per
step, so a search waits at most one batch. Job state lives in `<index>/uploads/registry.sqlite`:
a job still "in_progress" when the service stopped is queued again at start. Collections are
opened for writing only while jobs for them run, so `clara-index` may write them in between.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from clara.checkpoint import load_clara
from clara.errors import ClaraError
from clara.settings import ModelSettings
from clara_cli.http import (
    APIError,
    check_ready,
    error_responses,
    install_error_handlers,
    to_api_error,
)
from indexing.durable import CollectionLockedError
from indexing.service_handler import IndexService
from indexing.service_protocol import (
    FileDeleted,
    FileObject,
    ListPage,
    SearchPage,
    SearchRequest,
    VectorStore,
    VectorStoreCreate,
    VectorStoreDeleted,
    VectorStoreFile,
    VectorStoreFileCreate,
    VectorStoreFileDeleted,
)
from indexing.service_state import Registry

log = logging.getLogger("clara.index")
T = TypeVar("T")
OPEN_PATHS = ("/health",)
ERRORS = error_responses(400, 401, 404, 409, 413, 503)


@dataclass
class ServiceSettings(ModelSettings):
    max_upload_bytes: int = 100 * 2**20
    batch_size: int = 8
    overlap: int = 32
    max_waiting_calls: int = 64


@dataclass
class Task:
    """Background work for the worker: `start(cm)` gives an iterator, one `next()` per step."""

    key: tuple[str, str]
    start: Callable[[Any], Iterator[object]]
    failed: Callable[[BaseException], None]
    done: Callable[[], None] = lambda: None
    cancelled: bool = False
    steps: Iterator[object] | None = field(default=None, repr=False)


class Worker:
    """The one thread that runs MLX: loads the model, then runs awaited calls first and
    background tasks one step at a time."""

    def __init__(self, load: Callable[[], Any], max_waiting: int = 64) -> None:
        self.load = load
        self.max_waiting = max_waiting
        self.state = "starting"  # starting | loading | ready | failed | stopped
        self.error: BaseException | None = None
        self.cm: Any = None
        self.on_ready: Callable[[], None] | None = None  # on the worker, after loading
        self.on_fatal: Callable[[BaseException], None] | None = None
        self._calls: deque[tuple[Callable[[Any], Any], asyncio.Future]] = deque()
        self._tasks: deque[Task] = deque()
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="clara-index-mlx", daemon=True)

    def start(self) -> None:
        self.state = "loading"
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread after the current step; waiting calls get 503 (jobs stay queued in
        the registry and resume at the next start)."""
        with self._cv:
            self.state = "stopped"
            calls, self._calls = list(self._calls), deque()
            self._cv.notify_all()
        gone = APIError(503, "the service is shutting down", code="shutting_down")
        for _, future in calls:
            _deliver(future, None, gone)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def check_ready(self) -> None:
        check_ready(self.state, self.error)

    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(cm)` on the worker before any queued background step; await its result."""
        self.check_ready()
        future = asyncio.get_running_loop().create_future()
        with self._cv:
            if len(self._calls) >= self.max_waiting:
                raise APIError(
                    503, "the service is busy; retry later", code="server_overloaded",
                    headers={"Retry-After": "2"},
                )  # fmt: skip
            self._calls.append((fn, future))
            self._cv.notify()
        return await future

    def submit(self, task: Task) -> None:
        with self._cv:
            self._tasks.append(task)
            self._cv.notify()

    def cancel(self, match: Callable[[tuple[str, str]], bool]) -> None:
        """Cancel queued and running tasks whose key matches (call from the worker to be sure
        the running one does not take another step)."""
        with self._cv:
            for task in self._tasks:
                if match(task.key):
                    task.cancelled = True

    def pending(self, match: Callable[[tuple[str, str]], bool]) -> bool:
        with self._cv:
            return any(match(t.key) and not t.cancelled for t in self._tasks)

    def _run(self) -> None:
        try:
            self.cm = self.load()
            with self._cv:
                if self.state == "stopped":  # stopped while loading
                    return
                self.state = "ready"
            if self.on_ready is not None:
                self.on_ready()
        except BaseException as exc:  # noqa: BLE001 - reported by the CLI, which exits
            self.state, self.error = "failed", exc
            log.error("clara-index serve: could not start: %s", exc)
            if self.on_fatal is not None:
                self.on_fatal(exc)
            return
        log.info("model ready")
        while True:
            with self._cv:
                while not self._calls and not self._tasks and self.state != "stopped":
                    self._cv.wait()
                if self.state == "stopped":
                    break
                call = self._calls.popleft() if self._calls else None
                task = None if call else self._tasks[0]
            if call is not None:
                self._answer(*call)
            else:
                self._step(task)

    def _answer(self, fn: Callable[[Any], Any], future: asyncio.Future) -> None:
        try:
            result, error = fn(self.cm), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting route
            result, error = None, exc
        _deliver(future, result, error)

    def _step(self, task: Task) -> None:
        finished = True
        try:
            if not task.cancelled:
                if task.steps is None:
                    task.steps = task.start(self.cm)
                next(task.steps)
                finished = False
        except StopIteration:
            pass
        except BaseException as exc:  # noqa: BLE001 - the task records it as its last_error
            log.exception("indexing job %s failed", task.key)
            task.failed(exc)
        if finished:
            with self._cv:
                self._tasks.remove(task)
            task.done()


def _deliver(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    """Resolve an event-loop future from the worker thread."""

    def deliver() -> None:
        if future.done():  # the client went away
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        future.get_loop().call_soon_threadsafe(deliver)
    except RuntimeError:  # the event loop is closed
        pass


class ApiKeyGate:
    """Pure ASGI middleware: every path but /health needs 'Authorization: Bearer <key>'."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key.encode()

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(
                    token.strip().encode(), self.api_key
                )
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        error = APIError(
            401,
            "Incorrect or missing API key: send 'Authorization: Bearer <key>' with the key "
            "`clara-index serve` was started with (--api-key or CLARA_API_KEY)",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
        response = JSONResponse(error.body(), status_code=401, headers=error.headers)
        await response(scope, receive, send)


def create_app(
    settings: ServiceSettings,
    *,
    api_key: str | None = None,
    load: Callable[[], Any] | None = None,
) -> FastAPI:
    """The app; `load` (default: `load_clara` with the settings) runs on the worker thread."""

    def default_load() -> Any:
        s = settings
        log.info("loading %s%s", s.model, f" + {s.checkpoint}" if s.checkpoint else "")
        return load_clara(s.model, s.checkpoint, dtype=s.dtype)

    worker = Worker(load or default_load, settings.max_waiting_calls)
    registry = Registry(settings.root / "uploads")
    service = IndexService(settings, worker, registry)
    worker.on_ready = service.resume

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()  # returns at once: model routes answer 503 until it is loaded
        yield
        await asyncio.to_thread(worker.stop)
        await asyncio.to_thread(service.close)

    app = FastAPI(
        title="clara-index serve",
        summary="OpenAI Files + Vector Stores API over CLaRa compressed-memory collections",
        lifespan=lifespan,
    )
    app.state.service = service
    if api_key:
        app.add_middleware(ApiKeyGate, api_key=api_key)
    install_error_handlers(app)

    @app.exception_handler(ClaraError)
    async def clara_error(request: Request, exc: ClaraError) -> JSONResponse:
        if isinstance(exc, CollectionLockedError):
            error = APIError(409, str(exc), code="collection_locked")
        else:
            error = to_api_error(exc)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    _routes(app)

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        body: dict[str, Any] = {"status": "ok" if worker.state == "ready" else worker.state}
        body["index"] = str(settings.root)
        if worker.error is not None:
            body["error"] = str(worker.error)
        return JSONResponse(body, status_code=200 if worker.state == "ready" else 503)

    return app


def _routes(app: FastAPI) -> None:
    """Thin routes: each hands its work to the IndexService on app.state."""

    def svc(request: Request) -> IndexService:
        return request.app.state.service

    def order_of(order: str) -> str:
        if order not in ("asc", "desc"):
            raise APIError(400, "'order' must be 'asc' or 'desc'", param="order")
        return order

    def limit_of(limit: int, most: int = 100) -> int:
        if not 1 <= limit <= most:
            raise APIError(400, f"'limit' must be between 1 and {most}", param="limit")
        return limit

    # -- files -------------------------------------------------------------------------------
    @app.post("/v1/files", response_model=FileObject, responses=ERRORS)
    async def create_file(request: Request):
        return await svc(request).create_file(request)

    @app.get("/v1/files", response_model=ListPage, responses=ERRORS)
    async def list_files(
        request: Request, purpose: str | None = None, after: str | None = None,
        limit: int = 10000, order: str = "desc",
    ):  # fmt: skip
        page = dict(after=after, limit=limit_of(limit, 10000), order=order_of(order))
        return svc(request).list_files(purpose, **page)

    @app.get("/v1/files/{file_id}", response_model=FileObject, responses=ERRORS)
    async def get_file(file_id: str, request: Request):
        return svc(request).get_file(file_id)

    @app.delete("/v1/files/{file_id}", response_model=FileDeleted, responses=ERRORS)
    async def delete_file(file_id: str, request: Request):
        return await svc(request).delete_file(file_id)

    # -- vector stores -----------------------------------------------------------------------
    @app.post("/v1/vector_stores", response_model=VectorStore, responses=ERRORS)
    async def create_store(body: VectorStoreCreate, request: Request):
        return await svc(request).create_store(body)

    @app.get("/v1/vector_stores", response_model=ListPage, responses=ERRORS)
    async def list_stores(
        request: Request, after: str | None = None, before: str | None = None,
        limit: int = 20, order: str = "desc",
    ):  # fmt: skip
        page = dict(after=after, before=before, limit=limit_of(limit), order=order_of(order))
        return await asyncio.to_thread(svc(request).list_stores, **page)

    @app.get("/v1/vector_stores/{store_id}", response_model=VectorStore, responses=ERRORS)
    async def get_store(store_id: str, request: Request):
        return await asyncio.to_thread(svc(request).store_object, store_id)

    @app.delete("/v1/vector_stores/{store_id}", response_model=VectorStoreDeleted, responses=ERRORS)
    async def delete_store(store_id: str, request: Request):
        return await svc(request).delete_store(store_id)

    @app.post("/v1/vector_stores/{store_id}/search", response_model=SearchPage, responses=ERRORS)
    async def search(store_id: str, body: SearchRequest, request: Request):
        return await svc(request).search(store_id, body)

    # -- vector store files ------------------------------------------------------------------
    files = "/v1/vector_stores/{store_id}/files"

    @app.post(files, response_model=VectorStoreFile, responses=ERRORS)
    async def attach(store_id: str, body: VectorStoreFileCreate, request: Request):
        return await svc(request).attach(store_id, body)

    @app.get(files, response_model=ListPage, responses=ERRORS)
    async def list_store_files(
        store_id: str, request: Request, after: str | None = None, before: str | None = None,
        limit: int = 20, order: str = "desc", filter: str | None = None,
    ):  # fmt: skip
        page = dict(after=after, before=before, limit=limit_of(limit), order=order_of(order))
        return await asyncio.to_thread(svc(request).list_store_files, store_id, filter, **page)

    @app.get(files + "/{file_id}", response_model=VectorStoreFile, responses=ERRORS)
    async def get_store_file(store_id: str, file_id: str, request: Request):
        response = await asyncio.to_thread(svc(request).get_store_file, store_id, file_id)
        if response.status == "in_progress":  # the SDK's poll helpers wait this long
            return JSONResponse(response.model_dump(), headers={"openai-poll-after-ms": "200"})
        return response

    @app.delete(files + "/{file_id}", response_model=VectorStoreFileDeleted, responses=ERRORS)
    async def detach(store_id: str, file_id: str, request: Request):
        return await svc(request).detach(store_id, file_id)
