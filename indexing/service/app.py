"""The indexing service: OpenAI's Files + Vector Stores API over clara collections.

    POST /v1/files (multipart, purpose "assistants")   -> <index>/uploads/<file_id>/<filename>
    POST /v1/vector_stores {"name"}                     -> collection <name> (or "vs_<hex>")
    POST /v1/vector_stores/{id}/files {"file_id"}       -> a queued compression job
    POST /v1/vector_stores/{id}/search {"query"}        -> chunks, best first

One MLX worker thread (`clara_cli.worker`, shared with clara-serve) loads and owns the model.
Awaited calls (query encoding for search) run at interactive priority, before background jobs;
a compression job runs one model batch per step, so a search waits at most one batch. Job state lives in `<index>/uploads/registry.sqlite`:
a job still "in_progress" when the service stopped is queued again at start. Collections are
opened for writing only while jobs for them run, so `clara-index` may write them in between.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from clara import __version__
from clara.paths import DEFAULT_COLLECTION, UPLOADS
from clara.settings import ModelSettings
from clara_cli.http import (
    APIError,
    BodyLimit,
    KeyFile,
    api_app,
    error_responses,
    health_response,
)
from clara_cli.metrics import MeteredGate, ServiceMetrics, endpoints
from clara_cli.worker import Worker
from indexing.service import MAX_UPLOAD_MB
from indexing.service.handler import IndexService
from indexing.service.protocol import (
    FileBatchCreate,
    FileContentPage,
    FileDeleted,
    FileObject,
    ListPage,
    SearchPage,
    SearchRequest,
    VectorStore,
    VectorStoreCreate,
    VectorStoreDeleted,
    VectorStoreFile,
    VectorStoreFileBatch,
    VectorStoreFileCreate,
    VectorStoreFileDeleted,
    VectorStoreFileUpdate,
    VectorStoreUpdate,
)
from indexing.service.state import Registry
from indexing.service.uploads import PURPOSES

log = logging.getLogger("clara.index")
OPEN_PATHS = ("/health",)
ERRORS = error_responses(400, 401, 404, 409, 413, 503)
Order = Literal["asc", "desc"]
UPLOAD = {  # POST /v1/files reads its multipart body itself (streamed, size-limited)
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(PURPOSES)},
                    },
                }
            }
        },
    }
}


@dataclass
class ServiceSettings(ModelSettings):
    pack_compressor: bool = True  # compressing is this service's work
    max_upload_bytes: int = int(MAX_UPLOAD_MB * 2**20)
    max_stores_per_key: int | None = None  # vector stores one API key may make (None: any)
    max_upload_bytes_per_key: int | None = None  # what one key's uploads may hold in all
    batch_size: int = 8
    overlap: int = 32
    max_waiting_calls: int = 64
    #: what requests that name no store search (clara-serve's --collection): a store an app
    #: creates never gets it as its id (its uploads would answer every other client's chats)
    default_collection: str = DEFAULT_COLLECTION

    def load(self, warn: Callable[[str], None] | None = None):
        """The model, with --overlap checked against its chunks (`check_overlap`)."""
        cm = super().load(warn)
        self.check_overlap(int(cm.config.doc_max_tokens))
        return cm

    def check(self) -> int:
        """`ModelSettings.check`, and --overlap against the checkpoint's chunks."""
        doc_max_tokens = super().check()
        self.check_overlap(doc_max_tokens)
        return doc_max_tokens

    def auto_overlap(self, doc_max_tokens: int) -> int:
        """--overlap as an upload's "auto" chunking takes it: cut to a model's chunks of
        `doc_max_tokens`."""
        return min(self.overlap, doc_max_tokens - 1)

    def check_overlap(self, doc_max_tokens: int) -> None:
        """--overlap against a model's chunks of `doc_max_tokens`: a server started with one
        the model cannot take refused every upload later, blaming the request's
        chunking_strategy (a CLI audit). `check` runs it before the model loads, from the
        checkpoint's config, and the load runs it again."""
        from clara.errors import ChunkingError
        from indexing.pipeline import chunk_limits_for

        size, _ = chunk_limits_for(doc_max_tokens, None, 0)  # an upload's "auto" chunks
        if self.auto_overlap(doc_max_tokens) >= size:
            raise ChunkingError(
                f"--overlap {self.overlap} does not fit this model's chunks of {size} tokens: "
                f"give at most {size - 1} (default: {ServiceSettings.overlap})"
            )


#: request metrics' endpoint labels: these paths as they are, those under these prefixes so
_endpoint = endpoints(
    ("/v1/files", "/v1/vector_stores", "/health", "/metrics"),
    {"/v1/files": "/v1/files/*", "/v1/vector_stores": "/v1/vector_stores/*"},
)


def create_app(
    settings: ServiceSettings,
    *,
    api_key: str | None = None,
    local_only: bool = False,
    allow_hosts: tuple[str, ...] = (),
    allow_origins: tuple[str, ...] = (),
    open_metrics: bool = False,
    key_roles: dict[str, str] | None = None,
    key_scopes: dict[str, tuple[str, ...]] | None = None,
    key_file: KeyFile | None = None,
    load: Callable[[], Any] | None = None,
) -> FastAPI:
    """The app; `load` (default: `settings.load`) runs on the worker thread. `api_key`,
    `local_only`, `allow_hosts`, `allow_origins`, `open_metrics` (/metrics without the key),
    `key_roles` (what each key may do), `key_scopes` (the collections a key may read),
    `key_file` (--api-key-file, read again when it changes): who may ask
    (`clara_cli.http.AccessGate`)."""

    worker = Worker(
        load or settings.load,
        max_waiting=settings.max_waiting_calls,
        name="clara-index-mlx",
        service="clara-index serve",
    )
    service = IndexService(settings, worker, Registry(settings.root / UPLOADS))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()  # returns at once: model routes answer 503 until it is loaded
        yield
        if await asyncio.to_thread(worker.stop):
            await asyncio.to_thread(service.close)
        else:  # not under a step still writing them (the process ends: the locks go with it)
            log.warning("the model thread is still busy: its collections are left open")

    app = api_app(
        title="clara-index serve",
        summary="OpenAI Files + Vector Stores API over CLaRa compressed-memory collections",
        lifespan=lifespan,
    )
    metrics = ServiceMetrics()
    metrics.files = service.metrics
    metrics.build.set(1, version=__version__, model=str(settings.model))
    app.add_middleware(BodyLimit)  # JSON bodies; uploads have --max-upload-mb
    app.add_middleware(
        MeteredGate,
        metrics=metrics,
        endpoint=_endpoint,
        api_key=api_key,
        service="`clara-index serve`",
        open_paths=OPEN_PATHS + (("/metrics",) if open_metrics else ()),
        key_roles=key_roles,
        key_scopes=key_scopes,
        key_file=key_file,
        local_only=local_only,
        allow_hosts=allow_hosts,
        allow_origins=allow_origins,
    )
    mount_files_api(app, service)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_text(request: Request) -> PlainTextResponse:
        """Prometheus metrics: requests, the model worker's queue and readiness, uploads
        being indexed and indexed (the service had none: an SRE's audit)."""
        metrics.queue_depth.set(worker.queue_depth())
        metrics.model_ready.set(1 if worker.state == "ready" else 0)
        try:  # (a scrape shows the rest whatever the registry)
            metrics.files.files_in_progress.set(await asyncio.to_thread(service.in_progress))
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: could not count the uploads in progress: %s", exc)
        return metrics.response(request.headers.get("accept-encoding", ""))

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        body: dict[str, Any] = {"status": "ok" if worker.state == "ready" else worker.state}
        if not api_key:  # where the files live: not for anyone who can reach the port
            body["index"] = str(settings.root)
        if worker.error is not None:
            body["error"] = str(worker.error)
        return health_response(worker.state, body, worker, request.app)

    # HEAD too (curl -I, uptime monitors), apart: one operation id for each in the schema
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)

    return app


def mount_files_api(app: FastAPI, service: IndexService) -> None:
    """Add the Files + Vector Stores routes for `service` to `app` (this service's own app,
    or clara-serve's, which shares its model worker). The owner closes `service` on shutdown;
    jobs a stop interrupted are queued again once the worker's model is loaded."""
    app.state.service = service
    service.worker.ready_hooks.append(lambda cm: service.resume())
    service.worker.ready_hooks.append(lambda cm: threading.Thread(
        target=_adopting, args=(service,), name="clara-adopt", daemon=True).start())  # fmt: skip

    _routes(app)


#: How often a service looks for jobs another one stopped in the middle of (`adopt`)
ADOPT_EVERY_S = 15.0


def _adopting(service: IndexService) -> None:
    """Every ADOPT_EVERY_S while the model serves: take over the jobs of a service on this
    index root that stopped mid-job (`IndexService.adopt`)."""
    worker = service.worker
    while True:
        time.sleep(ADOPT_EVERY_S)
        if worker.state != "ready":  # (stopped, or failed)
            return
        try:
            service.adopt()
        except Exception as exc:  # noqa: BLE001 - looked at again next time
            log.warning("looking for jobs a stopped service left: %s", exc)


def _polled(obj: Any) -> Any:
    """`obj` (a vector store file or file batch); still in progress, with the header that
    tells the SDK's poll helpers how long to wait before asking again."""
    if obj.status == "in_progress":
        return JSONResponse(obj.model_dump(), headers={"openai-poll-after-ms": "200"})
    return obj


def _routes(app: FastAPI) -> None:
    """Thin routes: each hands its work to the IndexService on app.state."""

    def svc(request: Request) -> IndexService:
        return request.app.state.service

    limit = Query(20, ge=1, le=100)

    # -- files -------------------------------------------------------------------------------
    @app.post("/v1/files", response_model=FileObject, responses=ERRORS, openapi_extra=UPLOAD)
    async def create_file(request: Request):
        return await svc(request).create_file(request)

    @app.get("/v1/files", response_model=ListPage, responses=ERRORS)
    async def list_files(
        request: Request, purpose: str | None = None, after: str | None = None,
        limit: int = Query(10000, ge=1, le=10000), order: Order = "desc",
    ):  # fmt: skip
        return svc(request).list_files(purpose, after=after, limit=limit, order=order)

    @app.get("/v1/files/{file_id}", response_model=FileObject, responses=ERRORS)
    async def get_file(file_id: str, request: Request):
        return svc(request).get_file(file_id)

    @app.get("/v1/files/{file_id}/content", response_class=FileResponse, responses=ERRORS)
    async def file_content(file_id: str, request: Request):
        service = svc(request)
        rec = service._file(file_id)  # 404 if unknown
        path = service.uploads.path(rec)
        if not path.is_file():  # (FileResponse's FileNotFoundError was a 500 and a traceback)
            raise APIError(
                404, f"the content of file {file_id} is gone from the server's disk "
                f"({path.name} under uploads/): upload it again", param="file_id",
                code="file_content_missing",
            )  # fmt: skip
        # a PDF uploaded under a name without .pdf: its type from its first bytes (the web
        # chat shows anything but a PDF as text)
        pdf = not rec.filename.lower().endswith(".pdf") and _starts_pdf(path)
        return FileResponse(  # (a download, read as the type it is sent as)
            path, filename=rec.filename, media_type="application/pdf" if pdf else None,
            headers={"X-Content-Type-Options": "nosniff"},
        )  # fmt: skip

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
        limit: int = limit, order: Order = "desc",
    ):  # fmt: skip
        page = dict(after=after, before=before, limit=limit, order=order)
        return await asyncio.to_thread(svc(request).list_stores, **page)

    @app.get("/v1/vector_stores/{store_id}", response_model=VectorStore, responses=ERRORS)
    async def get_store(store_id: str, request: Request):
        return await asyncio.to_thread(svc(request).store_object, store_id)

    @app.post("/v1/vector_stores/{store_id}", response_model=VectorStore, responses=ERRORS)
    async def update_store(store_id: str, body: VectorStoreUpdate, request: Request):
        return await asyncio.to_thread(svc(request).update_store, store_id, body)

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
        limit: int = limit, order: Order = "desc",
        filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None,
    ):  # fmt: skip
        page = dict(after=after, before=before, limit=limit, order=order)
        return await asyncio.to_thread(svc(request).list_store_files, store_id, filter, **page)

    @app.get(files + "/{file_id}", response_model=VectorStoreFile, responses=ERRORS)
    async def get_store_file(store_id: str, file_id: str, request: Request):
        return _polled(await asyncio.to_thread(svc(request).get_store_file, store_id, file_id))

    @app.get(files + "/{file_id}/content", response_model=FileContentPage, responses=ERRORS)
    async def store_file_content(store_id: str, file_id: str, request: Request):
        return await asyncio.to_thread(svc(request).store_file_content, store_id, file_id)

    @app.post(files + "/{file_id}", response_model=VectorStoreFile, responses=ERRORS)
    async def update_store_file(
        store_id: str, file_id: str, body: VectorStoreFileUpdate, request: Request
    ):
        update = svc(request).update_store_file
        return await asyncio.to_thread(update, store_id, file_id, body.attributes)

    @app.delete(files + "/{file_id}", response_model=VectorStoreFileDeleted, responses=ERRORS)
    async def detach(store_id: str, file_id: str, request: Request):
        return await svc(request).detach(store_id, file_id)

    # -- file batches ------------------------------------------------------------------------
    batches = "/v1/vector_stores/{store_id}/file_batches"

    @app.post(batches, response_model=VectorStoreFileBatch, responses=ERRORS)
    async def create_batch(store_id: str, body: FileBatchCreate, request: Request):
        return await svc(request).create_batch(store_id, body)

    @app.get(batches + "/{batch_id}", response_model=VectorStoreFileBatch, responses=ERRORS)
    async def get_batch(store_id: str, batch_id: str, request: Request):
        return _polled(await asyncio.to_thread(svc(request).batch_object, store_id, batch_id))

    @app.post(batches + "/{batch_id}/cancel", response_model=VectorStoreFileBatch,
              responses=ERRORS)  # fmt: skip
    async def cancel_batch(store_id: str, batch_id: str, request: Request):
        return await svc(request).cancel_batch(store_id, batch_id)

    @app.get(batches + "/{batch_id}/files", response_model=ListPage, responses=ERRORS)
    async def list_batch_files(
        store_id: str, batch_id: str, request: Request, after: str | None = None,
        before: str | None = None, limit: int = limit, order: Order = "desc",
        filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None,
    ):  # fmt: skip
        page = dict(after=after, before=before, limit=limit, order=order)
        list_files = svc(request).list_batch_files
        return await asyncio.to_thread(list_files, store_id, batch_id, filter, **page)


def _starts_pdf(path: os.PathLike) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(5) == b"%PDF-"
    except OSError:
        return False
