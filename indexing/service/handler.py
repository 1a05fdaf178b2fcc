"""The indexing service's handler (kept on `app.state.service`): files, vector stores, jobs,
search. Routes in `indexing.service.app` stay thin and call it.

Threads: reads (listing, stats) run in `asyncio.to_thread` on read-only collections that
follow commits; everything that writes a collection or runs MLX runs on the worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request

from clara.errors import (
    ChunkingError,
    ClaraError,
    CollectionLockedError,
    CollectionNameCaseError,
    DamagedCollectionError,
    DocumentError,
    EncryptedDocumentError,
    UnsupportedDocumentError,
)
from clara.paths import COLLECTION_NAME, DEFAULT_COLLECTION, RESERVED_NAMES, is_reserved, path_text
from clara.retrieval import Fusion
from clara.text import printable
from clara_cli.common import os_error_text
from clara_cli.http import CALLER, SCOPE, APIError, by_caller, is_client_error
from clara_cli.worker import BULK, Task
from indexing import partial
from indexing.durable import WriterLock, held_elsewhere
from indexing.layout import case_clash
from indexing.manifest import MANIFEST, read_manifest
from indexing.open_collections import OpenCollections
from indexing.pipeline import (
    FileResult,
    Indexer,
    IndexOptions,
    Source,
    chunk_limits,
    read_source,
)
from indexing.pipeline import model_manifest as manifest_of
from indexing.service.metrics import FileMetrics
from indexing.service.protocol import (
    ChunkingStrategy,
    FileBatchCreate,
    FileContentPage,
    FileCounts,
    FileDeleted,
    FileObject,
    LastError,
    ListPage,
    SearchPage,
    SearchRequest,
    SearchResult,
    StaticChunking,
    TextContent,
    VectorStore,
    VectorStoreCreate,
    VectorStoreDeleted,
    VectorStoreFile,
    VectorStoreFileBatch,
    VectorStoreFileCreate,
    VectorStoreFileDeleted,
    VectorStoreUpdate,
    paginate,
)
from indexing.service.search import document_attributes, search_results
from indexing.service.state import (
    Batch,
    FileRecord,
    Link,
    Registry,
    StoreRecord,
    key_sees,
    visible_to,
)
from indexing.service.uploads import Uploads
from indexing.store import (
    Collection,
    CollectionNotFoundError,
    DocumentNotFoundError,
    Manifest,
    delete_collection,
    list_collections,
)

_NAME = re.compile(COLLECTION_NAME)
#: Seconds of compression an indexing step takes at most while chats run beside it
#: (`CLARA_BULK_STEP_S`; 0: whole batches always); see `IndexService._step_chunks`
STEP_S = float(os.environ.get("CLARA_BULK_STEP_S", "0.25"))
#: ... "beside it": a chat's turn ended less than this many seconds ago
CHATS_RECENT_S = 10.0

#: Uploads read (or being read) ahead of their compression: each holds its parsed document
#: until its compression starts, so a batch of 500 files is not all read into memory at once.
READS_AHEAD = 2
log = logging.getLogger(__name__)


def _over_quota(message: str) -> APIError:
    """The 403 of a key past one of its limits (`ServiceSettings.max_*_per_key`): not a 429,
    which OpenAI's clients send again and again."""
    return APIError(403, message, type="insufficient_quota", code="quota_exceeded")


def _mb(n: int) -> str:
    """A size for a message: MB, KB, or bytes below a KB (a limit of 100 bytes read 0.0 MB)."""
    if n >= 2**20:
        return f"{n / 2**20:.1f} MB"
    return f"{n / 1024:.1f} KB" if n >= 1024 else f"{n} bytes"


def _not_found(what: str, ident: str, param: str | None = None) -> APIError:
    return APIError(404, f"No {what} found with id '{ident}'", param=param, code="not_found")


def is_vector_store(root: Path, store_id: str) -> bool:
    """Whether `store_id` names a collection (vector store) under the index `root`."""
    if not _NAME.fullmatch(store_id) or store_id in RESERVED_NAMES:
        return False
    return (root / store_id / MANIFEST).is_file()


#: seconds between two progress lines of one upload's indexing (as `clara-index add`'s)
PROGRESS_LOG_S = 30


class IndexService:
    def __init__(self, settings: Any, worker: Any, registry: Registry) -> None:
        self.settings = settings
        self.root: Path = settings.root
        self.uploads = Uploads(registry.directory, settings.max_upload_bytes)
        self.worker = worker
        self.registry = registry
        # (vectors load at a collection's first search: listing stores reads metadata only)
        self._readers = OpenCollections(self.root, vectors=False)
        self._writers: dict[str, Collection] = {}  # worker thread only
        self._s_per_chunk = 0.06  # compression, measured by indexing steps (worker thread)
        # uploads are read and chunked here, one at a time, off the model's thread; reads
        # submitted and not yet indexed (worker thread only): at most READS_AHEAD
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="clara-index-read")
        self._reads: set[Future] = set()
        self._deleting: Counter[str] = Counter()  # uploads being deleted (event loop only)
        #: called with a vector store's id once it is deleted (worker thread): clara-serve's
        #: chats let go of their own open copy
        self.deleted_hooks: list[Callable[[str], None]] = []
        self.metrics = FileMetrics()  # the owning app exports them
        self._queued: set[tuple[str, str]] = set()  # (store, file) jobs this service queued
        self._shas: dict[str, str] = {}  # upload id -> its file's sha256 (`_upload_of`)
        self._making = asyncio.Lock()  # the default collection, made by a first upload
        #: one store made at a time: a key's count and its new store's record in one step (10
        #: made at once with 1 place left under --max-stores-per-key made 8: an audit), and
        #: two stores of one new name are not both made under it
        self._creating = asyncio.Lock()
        self._warn_shared_default()

    def in_progress(self) -> int:
        """Uploads being indexed into a store, or waiting to be (for /metrics)."""
        return self.registry.count_links("in_progress")

    def _warn_shared_default(self) -> None:
        """Clara 0.2.3 and earlier gave a store an app named "default" that id: the collection
        every chat that names none searches, so that app's files answer every client's chats.
        Its id cannot change under the app, so the log says so at each start."""
        for name in {DEFAULT_COLLECTION, self.settings.default_collection}:
            if self.registry.store(name) is not None:
                log.warning(
                    "vector store '%s' was created by an app through the API (an older clara "
                    "gave a store named '%s' that id) and is also the collection chats that "
                    "name none search: its files answer every client. To keep them apart, "
                    "serve another collection as the default (clara-serve --collection NAME)",
                    name, name,
                )  # fmt: skip
        name = self.settings.default_collection  # (what the web chat named its store)
        for stray in self.registry.stores_named(name):
            if stray.id != name:
                log.warning(
                    "vector store %s is named '%s' but is not the collection '%s' chats "
                    "that name none search (the web chat of clara 0.2.4 to 0.2.8 made it "
                    "for uploads with no collection picked): its files are not found "
                    "there. To move them, attach each of its files to '%s' (POST "
                    "/v1/vector_stores/%s/files with its file_id), then delete %s",
                    stray.id, name, name, name, name, stray.id,
                )  # fmt: skip

    # ---- collections -----------------------------------------------------------------------
    @contextmanager
    def reading(self, store_id: str) -> Iterator[Collection]:
        """A read-only view of the store for the block's time (404 when there is none): it
        stays open until then, even if the store is deleted or replaced meanwhile."""
        col = self._acquire(store_id)
        try:
            yield col
        finally:
            self._readers.release(col)

    @asynccontextmanager
    async def reading_async(self, store_id: str) -> AsyncIterator[Collection]:
        """`reading` for a request handler: opened on a thread (it reads files)."""
        opening = asyncio.ensure_future(asyncio.to_thread(self._acquire, store_id))
        try:
            col = await asyncio.shield(opening)
        except asyncio.CancelledError:  # (the client went: let go of it once it is open)
            opening.add_done_callback(self._release_opened)
            raise
        try:
            yield col
        finally:
            self._let_go(col)

    def _acquire(self, store_id: str) -> Collection:
        if not _NAME.fullmatch(store_id) or store_id in RESERVED_NAMES:
            raise _not_found("vector store", store_id)
        self.check_sees(store_id)
        try:
            col = self._readers.acquire(store_id)
        except CollectionNameCaseError:  # (it names the store there is: not to a key that
            if SCOPE.get() is not None:  # may read only some, an audit)
                raise _not_found("vector store", store_id) from None
            raise
        if col is None:
            raise _not_found("vector store", store_id)
        return col

    def _release_opened(self, opening: asyncio.Future) -> None:
        if not opening.cancelled() and opening.exception() is None:
            self._let_go(opening.result())

    def _let_go(self, col: Collection) -> None:
        """Release from the event loop, on a thread: the last release of a collection let go
        closes it (SQLite may write back its log), which must not stall other requests."""
        try:
            asyncio.get_running_loop().run_in_executor(None, self._readers.release, col)
        except RuntimeError:  # (the loop's threads are stopping: the server is)
            self._readers.release(col)

    def sees_store(self, store_id: str) -> bool:
        """Whether the request's API key may read the vector store (`SCOPE`: a key limited to
        some collections reads those and the stores it made)."""
        scope = SCOPE.get()
        return scope is None or key_sees(self.root, store_id, scope)

    def check_sees(self, store_id: str) -> None:
        """A 404, as for a store that is not there, unless the request's key may read it."""
        if not self.sees_store(store_id):
            raise _not_found("vector store", store_id)

    def check_store(self, store_id: str) -> None:
        """404 unless the vector store exists (a damaged one raises its damage)."""
        with self.reading(store_id):
            pass

    async def check_store_async(self, store_id: str) -> None:
        async with self.reading_async(store_id):
            pass

    def _check_model(self, col: Collection, cm: Any) -> None:
        loaded = manifest_of(cm, self.settings.checkpoint)  # (the fix-it names the checkpoint)
        col.manifest.check_matches(Manifest.from_dict(loaded), col.name)

    def _holding(self, rec: FileRecord, besides: set[str]) -> list[str]:
        """Stores other than `besides` that hold a document of the upload `rec` with no link
        to it in the registry: a store restored from a backup made before the upload was
        detached from it (the registry lives beside the stores, in uploads/). Deleting the
        file said deleted, and its text was still found there."""
        out = []
        for store_id in self.store_ids():
            if store_id in besides:
                continue
            try:  # (a look, as a listing's: the stores searches keep open stay open)
                with self._readers.peek(store_id) as col:
                    held = col is not None and self._document_of(col, rec, None) is not None
            except (ClaraError, APIError, OSError):  # (damaged, or deleted meanwhile)
                continue
            if held:
                out.append(store_id)
        return out

    def _document_of(self, col: Collection, rec: FileRecord | None, link: Link | None):
        """The document of an upload in a store: the one its job made (`link`), else the one
        read from its path here, else one indexed under a `CLARA_HOME` moved since (a path
        stored relative to another working directory would not match either); None."""
        doc = col.document(link.doc_id) if link is not None and link.doc_id else None
        if doc is None and rec is not None:
            doc = col.find_by_path(str(self.uploads.path(rec))) or next(
                (d for d in col.list_documents() if self._upload_of(d) == rec.id), None
            )
        return doc

    def _upload_of(self, doc: Any) -> str | None:
        """The upload a stored document is, when it is one: indexed from this root's
        `uploads/<file_id>/<name>`, or from another root's (a `CLARA_HOME` moved since) with
        the upload's name, size and content. A file `clara-index add` read from a folder
        that only looks like an uploads folder is not one (a security audit: deleting the
        upload of that id removed it, and the listing showed it as the upload)."""
        file_id = self.uploads.file_id_of(doc.path)
        rec = self.registry.file(file_id) if file_id else None
        if rec is None:
            return None
        here = self.uploads.path(rec)
        if Path(doc.path) == here:
            return file_id
        if doc.name != rec.filename or doc.size != rec.bytes:
            return None
        sha = self._shas.get(file_id)
        if sha is None:
            try:
                with open(here, "rb") as f:
                    sha = self._shas[file_id] = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError:
                return None
        return file_id if doc.sha256 == sha else None

    def _detach_all(self, links: list[Link], rec: FileRecord, unlinked: list[str] = ()) -> None:
        """Worker: detach an upload from each of its stores (those linked to it, and
        `unlinked`: `_holding`'s), every store opened for writing first, so that clara-index
        holding one is a 409 before any change (and cannot take one in between: a 409
        half-way left the file detached from some stores)."""
        opened: list[str] = []
        try:
            for store_id in dict.fromkeys([*(link.store_id for link in links), *unlinked]):
                if store_id in self._writers:
                    continue
                try:
                    self._writer(store_id)
                except CollectionNotFoundError:
                    continue
                opened.append(store_id)
            for link in links:
                self._detach(link.store_id, rec, link)
            for store_id in unlinked:
                self._detach(store_id, rec, None)
        finally:  # (a 409 or a failed detach: none of them kept from clara-index)
            for store_id in opened:
                self._release(store_id)

    def _writer(self, store_id: str) -> Collection:
        """Worker thread: the collection opened for writing until its jobs are done."""
        col = self._writers.get(store_id)
        if col is None:
            col = self._writers[store_id] = Collection.open(self.root, store_id)
        return col

    def _release(self, store_id: str) -> None:
        """Worker thread: close the writer (freeing the lock for clara-index) when idle."""
        if not self.worker.pending(lambda key: key[0] == store_id):
            col = self._writers.pop(store_id, None)
            if col is not None:
                col.close()

    def close(self) -> None:
        for link in self.registry.links():  # this service's own (another sharing the index
            # root names its own: both were named by each, an SRE's audit)
            if link.status == "in_progress" and (link.store_id, link.file_id) in self._queued:
                log.info(
                    "file %s into %s: stopped while being indexed; it resumes at the next "
                    "start, or in another service running on this index root",
                    link.file_id, link.store_id,
                )  # fmt: skip
        self._reader.shutdown(wait=False, cancel_futures=True)
        for col in self._writers.values():
            col.close()
        self._writers.clear()
        self._readers.close()
        self.registry.close()

    # ---- files -----------------------------------------------------------------------------
    async def create_file(self, request: Request) -> FileObject:
        rec = await self.uploads.receive(request)
        caller, most = CALLER.get(), self.settings.max_upload_bytes_per_key
        if caller is not None and most is not None:  # (its bytes are known once received)
            made = self.registry.makers("file")
            held = sum(f.bytes for f in self.registry.files() if made.get(f.id) == caller)
            if held + rec.bytes > most:
                await self.uploads.delete(rec.id)
                raise _over_quota(
                    f"the key {caller}'s uploads hold {_mb(held)}, and this one "
                    f"({_mb(rec.bytes)}) would take them past the {_mb(most)} one key may "
                    "upload (--max-upload-mb-per-key): delete files it no longer needs"
                )
        self.registry.add_file(rec, caller)
        return _file_object(rec)

    def list_files(self, purpose: str | None, after: str | None, limit: int, order: str):
        scope = SCOPE.get()
        made = self.registry.makers("file") if scope is not None else {}
        files = [
            _file_object(f)
            for f in self.registry.files()
            if purpose in (None, f.purpose) and (scope is None or made.get(f.id) == scope.key)
        ]
        return paginate(files, after=after, before=None, limit=limit, order=order)

    def get_file(self, file_id: str) -> FileObject:
        return _file_object(self._file(file_id))

    def _file(self, file_id: str) -> FileRecord:
        rec = self._visible_file(file_id)
        if rec is None:
            raise _not_found("file", file_id)
        return rec

    def _visible_file(self, file_id: str, own: bool = False) -> FileRecord | None:
        """The upload `file_id`, if there is one and the request's key may use it: a key
        limited to some collections (`SCOPE`) uses the files it uploaded, and reads those in
        a vector store it may read (not `own`: it deletes only its own, as a file's deletion
        takes it out of every store)."""
        scope = SCOPE.get()
        if scope is not None and self.registry.maker("file", file_id) != scope.key:
            stores = {link.store_id for link in self.registry.links(file_id=file_id)}
            if own or not any(self.sees_store(store) for store in stores):
                return None
        return self.registry.file(file_id)

    async def delete_file(self, file_id: str) -> FileDeleted:
        """Delete an upload and remove it from every vector store (as OpenAI does)."""
        rec = self._file(file_id)
        if self._visible_file(file_id, own=True) is None:  # (one it reads in a store it is
            raise APIError(  # given, which a deletion would take out of every store)
                403, f"the key {CALLER.get()} may read the file {file_id} (it is in a "
                "collection the key reads) but delete only the files it uploaded",
                type="permission_error", code="insufficient_role",
            )  # fmt: skip
        self._deleting[file_id] += 1  # an attach from now on is a 404 (one racing the delete
        try:  # indexed the deleted file, or failed it as missing)
            links = self.registry.links(file_id=file_id)
            linked = {link.store_id for link in links}
            unlinked = await asyncio.to_thread(self._holding, rec, linked)
            await self.worker.call(lambda cm: self._detach_all(links, rec, unlinked))
            self.registry.delete_file(file_id)
            await self.uploads.delete(file_id)
            stores = sorted(linked | set(unlinked))
            log.info("file %s (%r) deleted%s%s", file_id, rec.filename,  # (quoted: a name
                     # holding ") deleted (key bob)" cannot pass for the line's end)
                     f", and removed from {', '.join(stores)}" if stores else "", by_caller())  # fmt: skip
        finally:
            self._deleting -= Counter([file_id])  # (gone at 0: two deletes at once count)
        return FileDeleted(id=file_id)

    def _live_file(self, file_id: str) -> FileRecord | None:
        """The upload `file_id`, unless there is none or it is being deleted."""
        return None if file_id in self._deleting else self._visible_file(file_id)

    # ---- vector stores ---------------------------------------------------------------------
    async def create_store(self, body: VectorStoreCreate) -> VectorStore:
        self.worker.check_ready()
        _no_expiry(body.expires_after)
        items = _once_each([VectorStoreFileCreate(file_id=i) for i in body.file_ids or []])
        self._check_attachable(items, body.chunking_strategy)  # a wrong one creates nothing
        async with self._creating:
            store_id = await self._new_store(body)
        for item in items:
            await self.attach(store_id, item, body.chunking_strategy)
        return await asyncio.to_thread(self.store_object, store_id)

    async def _new_store(self, body: VectorStoreCreate) -> str:
        """Make the store `body` asks for (empty) and record it, within the key's limit:
        its id (under `_creating`)."""
        caller, most = CALLER.get(), self.settings.max_stores_per_key
        if caller is not None and most is not None:
            made = sum(key == caller for key in self.registry.makers("store").values())
            if made >= most:
                raise _over_quota(
                    f"the key {caller} has made {made} vector stores, the most one key may "
                    "make (--max-stores-per-key): delete one it no longer needs"
                )
        name = body.name or ""
        usable = (  # (in this order: a name too long for a file name is not looked for)
            SCOPE.get() is None  # (a limited key's store named as a collection another key
            # is given, or will be, would be that key's to read: its id is vs_...)
            and _NAME.fullmatch(name)
            and not is_reserved(name)
            and name.lower() not in {DEFAULT_COLLECTION, self.settings.default_collection.lower()}
            and not (self.root / name).exists()
            and case_clash(self.root, name) is None
        )
        if usable and self.registry.store(name) is not None:
            # the record of a store whose folder is gone (a crash in the middle of deleting
            # it): its name is free again, and the old record's files go with it
            log.info("vector store %s: its folder is gone; its record is replaced", name)
            self.registry.delete_store(name)
        store_id = name if usable else f"vs_{secrets.token_hex(12)}"
        manifest = manifest_of(self.worker.cm, self.settings.checkpoint)
        await asyncio.to_thread(
            lambda: Collection.open(self.root, store_id, manifest, create=True).close()
        )
        record = StoreRecord(store_id, name or store_id, _now(), body.metadata)
        self.registry.add_store(record, caller, made=True)
        return store_id

    def _check_attachable(
        self, items: list[VectorStoreFileCreate], default: ChunkingStrategy | None,
        param: str = "file_ids",
    ) -> None:  # fmt: skip
        """Every upload exists and every chunking strategy is valid, before anything is made."""
        for item in items:
            if self._live_file(item.file_id) is None:
                raise _not_found("file", item.file_id, param=param)
            self._chunking(item.chunking_strategy or default)

    def update_store(self, store_id: str, body: VectorStoreUpdate) -> VectorStore:
        """A new display name and/or metadata (the id, the collection's name, stays)."""
        _no_expiry(body.expires_after)
        self.check_store(store_id)
        rec = self.registry.store(store_id) or StoreRecord(store_id, store_id, _now())
        if body.name is not None:
            rec.name = body.name
        if body.metadata is not None:
            rec.metadata = body.metadata
        self.registry.add_store(rec)
        return self.store_object(store_id)

    def store_ids(self) -> list[str]:
        return [n for n in list_collections(self.root) if n not in RESERVED_NAMES]

    def list_stores(self, after: str | None, before: str | None, limit: int, order: str):
        """A page of the stores: ordered by what their records and manifests say, and only the
        page's stores opened (a listing of 5 of 400 stores opened all 400: 4 s). One that
        cannot be read (damaged, deleted meanwhile) is left out and the next takes its place."""
        keys = []
        for store_id in visible_to(self.root, self.store_ids(), SCOPE.get()):
            rec = self.registry.store(store_id)
            keys.append(_StoreKey(store_id, rec.created_at if rec else _made(self.root / store_id)))
        return paginate(
            keys,
            after=after,
            before=before,
            limit=limit,
            order=order,
            show=lambda key: self._listed(key.id),
        )

    def _listed(self, store_id: str) -> VectorStore | None:
        """A store as a listing shows it; None when it cannot be read."""
        try:
            with self._readers.peek(store_id) as col:  # (not kept open: they may be 1000s)
                return None if col is None else self.store_object(store_id, col)
        except APIError:  # deleted meanwhile
            return None
        except DamagedCollectionError as exc:  # one broken folder must not hide the rest
            log.warning("%s", exc)
            return None

    def store_object(self, store_id: str, col: Collection | None = None) -> VectorStore:
        if col is None:
            with self.reading(store_id) as col:
                return self.store_object(store_id, col)
        rec = self.registry.store(store_id)
        files = self.store_files(store_id, col)
        counts = _file_counts(files)
        created = rec.created_at if rec else int(col.manifest.created)
        return VectorStore(
            id=store_id,
            created_at=created,
            file_counts=counts,
            last_active_at=max([created, *(f.created_at for f in files)]),
            metadata=rec.metadata if rec else None,
            name=rec.name if rec else store_id,
            status="in_progress" if counts.in_progress else "completed",
            usage_bytes=col.stats()["bytes_on_disk"],
        )

    async def delete_store(self, store_id: str) -> VectorStoreDeleted:
        try:
            await self.check_store_async(store_id)
        except DamagedCollectionError:
            pass  # unreadable, still deletable

        def delete(cm: Any) -> None:
            # its writer lock, held from here to the folder's removal: clara-index holding it
            # is a 409 before any change, and cannot take it in between (it once came in
            # after the record was gone)
            directory = self.root / store_id
            lock = None
            if store_id not in self._writers and (directory / MANIFEST).exists():
                lock = WriterLock(directory, f"collection '{store_id}'")
            try:
                self.worker.cancel(lambda key: key[0] == store_id)
                col = self._writers.pop(store_id, None)
                if col is not None:
                    lock = col.close(keep_lock=True)
                self._readers.drop(store_id)
                # the record first: a crash between the two leaves a collection (listed,
                # deletable again), not a record of a store that is gone (its name kept)
                self.registry.delete_store(store_id)
            except BaseException:
                if lock is not None:
                    lock.release()
                raise
            delete_collection(self.root, store_id, lock=lock)
            for hook in self.deleted_hooks:
                hook(store_id)

        await self.worker.call(delete)
        log.info("vector store %s deleted, with its documents%s", store_id, by_caller())
        return VectorStoreDeleted(id=store_id)

    # ---- vector store files ----------------------------------------------------------------
    async def attach(
        self,
        store_id: str,
        body: VectorStoreFileCreate,
        default_chunking: ChunkingStrategy | None = None,
    ) -> VectorStoreFile:
        self.worker.check_ready()
        self.check_sees(store_id)  # (before the default collection is made for it)
        await self._make_default(store_id, [body], default_chunking, "file_id")
        async with self.reading_async(store_id) as col:  # IndexMismatchError: 400 now, not a
            self._check_model(col, self.worker.cm)  # failed job
        rec = self._live_file(body.file_id)  # (from here to the job queued: no await, so a
        if rec is None:  # delete_file starting meanwhile has listed this link, or is listed)
            raise _not_found("file", body.file_id, param="file_id")
        size, overlap = self._chunking(body.chunking_strategy or default_chunking)  # 400 first
        link = self.registry.link(store_id, rec.id)
        if link is not None and link.status in ("in_progress", "completed"):
            return self._link_object(link)
        link = Link(store_id, rec.id, _now(), "in_progress", attributes=body.attributes)
        link.chunk_tokens, link.overlap = size, overlap
        self.registry.put_link(link)
        self._queue(link, rec)
        return self._link_object(link)

    async def _make_default(
        self, store_id: str, items: list[VectorStoreFileCreate], default: ChunkingStrategy | None,
        param: str = "file_ids",
    ) -> None:  # fmt: skip
        """The server's default collection is made by the first files put into it, as
        `clara-index add` makes it (the web chat's upload with no collection picked made a
        `vs_...` store named "default", which requests naming none never searched); once the
        files and chunking are known good, and once only when two come at once."""
        if store_id != self.settings.default_collection or is_vector_store(self.root, store_id):
            return
        self._check_attachable(items, default, param)  # (a 404 or 400 makes nothing)
        async with self._making:
            if is_vector_store(self.root, store_id):
                return
            manifest = manifest_of(self.worker.cm, self.settings.checkpoint)
            await asyncio.to_thread(
                lambda: Collection.open(self.root, store_id, manifest, create=True).close()
            )
            log.info("collection %s: made for its first upload", store_id)

    def _chunking(self, strategy: ChunkingStrategy | None) -> tuple[int, int]:
        """(chunk tokens, overlap) this file gets: "auto" is doc_max_tokens and --overlap."""
        size, overlap = None, self.settings.overlap
        if strategy is not None and strategy.type == "static":
            if strategy.static is None:
                raise APIError(
                    400, "a static chunking_strategy needs 'static'", param="chunking_strategy"
                )
            size, overlap = (
                strategy.static.max_chunk_size_tokens,
                strategy.static.chunk_overlap_tokens,
            )
            if overlap > size // 2:  # (a request's bound: files stored before it still list)
                raise APIError(
                    400, f"chunk_overlap_tokens ({overlap}) must be at most half of "
                    f"max_chunk_size_tokens ({size})",
                    param="chunking_strategy.static.chunk_overlap_tokens",
                )  # fmt: skip
        else:
            overlap = self.settings.auto_overlap(int(self.worker.cm.config.doc_max_tokens))
        try:
            return chunk_limits(self.worker.cm, size, overlap)
        except ChunkingError as exc:
            raise APIError(
                400, str(exc), param="chunking_strategy", code="invalid_chunking"
            ) from None

    def _queue(self, link: Link, rec: FileRecord, read: Future | None = None) -> None:
        """Index upload `rec` into its store: read and chunked on the reader thread (a slow
        file, a PDF whose pages decode one stream again and again, leaves the model thread to
        chats meanwhile), then compressed on the model thread as a BULK task."""
        store_id, batch = link.store_id, self.settings.batch_size
        if (store_id, rec.id) not in self._queued:  # (`resume` claimed it already)
            self.registry.claim(store_id, rec.id)
        self._queued.add((store_id, rec.id))
        options = IndexOptions(
            link.chunk_tokens, link.overlap or 0, batch, dedupe=False, step_chunks=self._step_chunks
        )
        source = Source(self.uploads.path(rec), rec.filename)
        handed = False  # its read passed on to the task that waits again

        def start(cm: Any):
            nonlocal handed
            try:
                col = self._writer(store_id)
            except CollectionLockedError:  # taken since can_start looked: wait again
                self._queue(link, rec, read)
                handed = True
                return
            self._check_model(col, cm)
            began = time.perf_counter()
            done = read.result() if read is not None else None
            self._reads.discard(read)  # (read: the next may be read meanwhile)
            compressed, said = 0, time.monotonic()
            for event in Indexer(cm, col, options).run([dataclasses.replace(source, read=done)]):
                if isinstance(event, FileResult):
                    self._record(link, rec, event, cm)
                elif event.chunks:  # a compression step: its seconds per chunk
                    took = (time.perf_counter() - began) / event.chunks
                    self._s_per_chunk = 0.7 * self._s_per_chunk + 0.3 * took
                    compressed += event.chunks
                    if time.monotonic() - said >= PROGRESS_LOG_S:  # (a long job said nothing
                        said = time.monotonic()  # until it ended: an SRE's audit)
                        log.info(
                            "file %s (%s) into %s: %d chunks compressed so far", rec.id,
                            printable(rec.filename), store_id, compressed,
                        )  # fmt: skip
                yield
                began = time.perf_counter()

        def failed(exc: BaseException) -> None:
            if isinstance(exc, APIError) and exc.code == "shutting_down":
                return  # never started: left in progress, it resumes at the next start
            if is_client_error(exc):  # (the worker logs the others, with their traceback)
                log.warning("file %s (%s) into %s failed: %s", rec.id, printable(rec.filename),
                            store_id, printable(str(exc)))  # fmt: skip
            if isinstance(exc, ClaraError):
                message = str(exc)
            elif isinstance(exc, OSError):  # a full disk, the collection's folder not writable
                message = f"could not write the collection: {os_error_text(exc)}"
            else:
                message = "internal error while indexing"
            self.registry.update_link(
                store_id, rec.id, status="failed", error_code="server_error", error_message=message
            )
            self.metrics.files_indexed.inc(status="failed")
            self.metrics.files_failed.inc(code="server_error")
            self._job_ended(store_id, rec.id)

        def can_start() -> bool:  # (worker thread: the model is loaded)
            nonlocal read
            # another process writing the collection: wait, don't fail (and read nothing yet:
            # uploads to other stores are read meanwhile)
            if store_id not in self._writers and held_elsewhere(self.root / store_id):
                let_go()  # (taken after the read began: read again once the store is free)
                read = None
                return False
            if read is None:
                if len(self._reads) >= READS_AHEAD:  # (each holds a whole parsed document)
                    return False
                try:
                    read = self._reader.submit(read_source, self.worker.cm, source, options)
                except RuntimeError:  # shutting down
                    return False
                self._reads.add(read)
                read.add_done_callback(lambda _: self.worker.poke())
            return read.done()

        def let_go() -> None:
            """Give the read's slot back (a read not begun is not made at all)."""
            if read is not None:
                read.cancel()
                self._reads.discard(read)

        def done() -> None:
            if not handed:  # (removed while it waited to be read: not read at all)
                let_go()
            self._release(store_id)

        task = Task((store_id, rec.id), start, failed, done, can_start)
        task.bounded = False  # a persisted job, not a waiting client
        self.worker.submit(task, BULK)

    def _step_chunks(self) -> int:
        """Chunks the next compression step takes: the whole batch, or while chats have run
        in the last `CHATS_RECENT_S`, as many as take `STEP_S` (at least one): a chat that
        arrives waits for the step under way (8 chunks: ~0.5-1 s of the default model)."""
        batch = self.settings.batch_size
        if STEP_S <= 0 or self.worker.interactive_idle() > CHATS_RECENT_S:
            return batch
        return max(1, min(batch, int(STEP_S / max(self._s_per_chunk, 1e-6))))

    def _record(self, link: Link, rec: FileRecord, result: FileResult, cm: Any) -> None:
        if result.status == "failed":
            err = result.error
            code = (
                "unsupported_file" if isinstance(err, UnsupportedDocumentError) else "invalid_file"
            )
            if isinstance(err, EncryptedDocumentError):  # no --password over HTTP
                message = (
                    f"{rec.filename}: {err.reason}: upload a copy without the password (e.g. "
                    "`qpdf --decrypt --password=PASSWORD in.pdf out.pdf`)"
                )
            elif isinstance(err, DocumentError):
                message = f"{rec.filename}: {err.reason}" + (f": {err.hint}" if err.hint else "")
            else:
                message = str(err).replace(str(self.uploads.path(rec)), rec.filename)
            values = dict(status="failed", error_code=code, error_message=message)
            log.warning(
                "file %s (%s) into %s failed (%s): %s", rec.id, printable(rec.filename),
                link.store_id, code, printable(message),
            )  # fmt: skip
        else:
            for warning in result.warnings:  # e.g. a page without text: the log says so
                log.warning("file %s (%s): %s", rec.id, printable(rec.filename), warning)
            usage = result.chunks * cm.n_mem * cm.hidden_size * 2  # float16 memory rows
            values = dict(status="completed", doc_id=result.doc_id, usage_bytes=usage)
            values.update(error_code=None, error_message=None)
            log.info(
                "file %s (%s) into %s: %s, %d chunk%s, %s", rec.id, printable(rec.filename),
                link.store_id, result.status, result.chunks, "s" * (result.chunks != 1),
                result.doc_id,
            )  # fmt: skip
        self.registry.update_link(link.store_id, rec.id, **values)
        self.metrics.files_indexed.inc(status=values["status"])
        if values["status"] == "failed":
            self.metrics.files_failed.inc(code=values["error_code"])
        self._job_ended(link.store_id, rec.id)

    def _job_ended(self, store_id: str, file_id: str) -> None:
        """A job of this service ended (completed, failed or cancelled): not its own to name
        at a stop, nor its claim any more."""
        self._queued.discard((store_id, file_id))
        self.registry.release(store_id, file_id)

    def adopt(self) -> None:
        """Queue the jobs another service on this index root was doing when it stopped, if
        there are any (`resume` once the model is loaded; then looked at every ADOPT_EVERY_S
        by `clara_cli`'s apps): a replica that started while another was indexing left those
        jobs "in_progress" for good once the other stopped (a container audit)."""
        if self.registry.stopped_claims():
            self.worker.submit(Task("resume", lambda cm: self.resume(), bounded=False), BULK)

    def resume(self) -> None:
        """Worker, once the model is loaded: queue again the jobs a stop interrupted, not
        those another running service on this index root is doing (clara-serve's Files API
        beside clara-index serve: each started the other's, which then ran twice)."""
        for link in self.registry.links():
            rec = self.registry.file(link.file_id)
            if link.status != "in_progress" or rec is None:
                continue
            if (link.store_id, rec.id) in self._queued:  # (its own: queued already)
                continue
            if not self.registry.claim(link.store_id, rec.id, unless_running=True):
                log.info("file %s into %s: being indexed by another running service on this "
                         "index root", rec.id, link.store_id)  # fmt: skip
                continue
            log.info("file %s into %s: resumed (a stop interrupted it)", rec.id, link.store_id)
            self._queued.add((link.store_id, rec.id))  # (claimed: `_queue` need not again)
            self._queue(link, rec)

    def store_files(self, store_id: str, col: Collection | None = None) -> list[VectorStoreFile]:
        """Attached uploads (any status) + documents that `clara-index add` put there."""
        if col is None:
            with self.reading(store_id) as col:
                return self.store_files(store_id, col)
        links = {link.file_id: link for link in self.registry.links(store_id=store_id)}
        docs = col.list_documents()
        uploaded = {d.id: self.uploads.file_id_of(d.path) for d in docs}
        there = set(uploaded) | set(uploaded.values())
        for link in list(links.values()):  # finished, then its document removed (clara-index
            if link.status == "completed" and not {link.doc_id, link.file_id} & there:
                self.registry.delete_link(store_id, link.file_id)  # remove): detached; may
                del links[link.file_id]  # be attached again
        out = [self._link_object(link) for link in links.values()]
        row_bytes = col.manifest.n_mem * col.manifest.hidden_size * 2
        for doc in docs:
            if uploaded[doc.id] in links:
                continue
            attributes = {"filename": doc.name, **({"path": doc.path} if doc.path else {})}
            # an upload's document with no link (a store restored from a backup older than
            # the registry) under its file's id, which detach and delete then find (it was
            # listed under its document id, which no files call takes)
            known = self._upload_of(doc) if uploaded[doc.id] else None
            out.append(
                VectorStoreFile(
                    id=known or doc.id, created_at=int(doc.created),
                    status="completed",
                    usage_bytes=doc.n_chunks * row_bytes, vector_store_id=store_id,
                    attributes=attributes,
                )
            )  # fmt: skip
        return out

    def _link_object(self, link: Link) -> VectorStoreFile:
        error = None
        if link.error_code is not None:
            error = LastError(code=link.error_code, message=link.error_message or "")
        chunking = None
        if link.chunk_tokens is not None:  # OpenAI reports "auto" as the static values it used
            static = StaticChunking(
                max_chunk_size_tokens=link.chunk_tokens, chunk_overlap_tokens=link.overlap or 0
            )
            chunking = ChunkingStrategy(type="static", static=static)
        return VectorStoreFile(
            id=link.file_id, created_at=link.created_at, last_error=error, status=link.status,
            usage_bytes=link.usage_bytes, vector_store_id=link.store_id,
            attributes=link.attributes, chunking_strategy=chunking,
        )  # fmt: skip

    def list_store_files(self, store_id: str, status: str | None, **page: Any) -> ListPage:
        files = [f for f in self.store_files(store_id) if status in (None, f.status)]
        return paginate(files, **page)

    def get_store_file(self, store_id: str, file_id: str) -> VectorStoreFile:
        self.check_sees(store_id)
        link = self.registry.link(store_id, file_id)
        if link is not None and link.status != "completed":  # (an upload being indexed,
            return self._link_object(link)  # polled: no full listing, the store not opened)
        with self.reading(store_id) as col:
            if link is not None and link.doc_id and col.document(link.doc_id) is not None:
                return self._link_object(link)
            for f in self.store_files(store_id, col):
                if f.id == file_id:
                    return f
            if link is None and (doc := col.document(file_id)) is not None:  # an upload's
                # document without a link, by the document id it was listed under before
                # (it is listed under its file id now)
                upload = self._upload_of(doc)
                found = (f for f in self.store_files(store_id, col) if f.id == upload)
                if (listed := next(found, None)) is not None:
                    return listed
        raise _not_found("file", file_id)

    def store_file_content(self, store_id: str, file_id: str) -> FileContentPage:
        """A store's file as it was indexed: its chunks' text, in order (the text search
        results quote; a file still being indexed has none yet)."""
        listed = self.get_store_file(store_id, file_id)  # (404 if unknown)
        if listed.status != "completed":
            raise APIError(
                400, f"'{file_id}' is {listed.status} in vector store '{store_id}': its "
                "content is there once it is completed", param="file_id",
            )  # fmt: skip
        link, rec = self.registry.link(store_id, file_id), self.registry.file(file_id)
        with self.reading(store_id) as col:
            doc = self._document_of(col, rec, link)
            if doc is None:
                doc = col.document(file_id)  # (one clara-index added: listed by its id)
            if doc is None:
                raise _not_found("file", file_id)
            chunks = col.document_chunks(doc.id)
        return FileContentPage(data=[TextContent(text=c.text) for c in chunks])

    async def detach(self, store_id: str, file_id: str) -> VectorStoreFileDeleted:
        """Remove a file's chunks from the store (the upload itself stays)."""
        self.get_store_file(store_id, file_id)  # 404 if unknown
        rec, link = self.registry.file(file_id), self.registry.link(store_id, file_id)
        await self.worker.call(lambda cm: self._detach(store_id, rec, link, doc_id=file_id))
        log.info("file %s removed from %s%s", file_id, store_id, by_caller())
        return VectorStoreFileDeleted(id=file_id)

    def _detach(self, store_id: str, rec: FileRecord | None, link: Link | None, doc_id=None):
        """Worker: cancel the job, remove the document, forget the link (a collection that
        clara-index holds is a 409 before anything changes)."""
        try:
            col = self._writer(store_id)
        except CollectionNotFoundError:
            col = None
        if link is not None and link.status == "in_progress":
            log.info("file %s into %s: indexing stopped (removed)", link.file_id, store_id)
        self.worker.cancel(lambda key: key == (store_id, rec.id if rec else None))
        try:
            doc = None
            if col is not None:  # (else the id the caller named)
                doc = self._document_of(col, rec, link)
                if doc is None and doc_id is not None:
                    doc = col.document(doc_id)
            if doc is not None:
                try:
                    col.remove_document(doc.id)
                except DocumentNotFoundError:
                    pass
            if col is not None and rec is not None:  # what a stopped job kept of it (its
                # compressed chunks stayed a week: a privacy audit)
                partial.forget_path(col.directory, path_text(self.uploads.path(rec).resolve()))
        finally:
            if col is not None:
                self._release(store_id)
        if link is not None:
            self.registry.delete_link(store_id, link.file_id)

    def update_store_file(self, store_id: str, file_id: str, attributes) -> VectorStoreFile:
        self.check_sees(store_id)
        if self.registry.link(store_id, file_id) is None:
            self.get_store_file(store_id, file_id)  # 404 if unknown
            raise APIError(
                400, f"'{file_id}' was added by clara-index, not the Files API: its "
                "attributes are its file name and path", param="file_id",
            )  # fmt: skip
        self.registry.update_link(store_id, file_id, attributes=attributes)
        return self._link_object(self.registry.link(store_id, file_id))

    # ---- file batches ----------------------------------------------------------------------
    async def create_batch(self, store_id: str, body: FileBatchCreate) -> VectorStoreFileBatch:
        """Attach several uploads at once; every id and chunking strategy is checked first."""
        self.worker.check_ready()
        if (body.file_ids is None) == (body.files is None):
            raise APIError(400, "give either 'file_ids' or 'files'", param="file_ids")
        if body.files is not None:
            items = [VectorStoreFileCreate(**f.model_dump()) for f in body.files]
        else:
            items = [
                VectorStoreFileCreate(
                    file_id=i, attributes=body.attributes, chunking_strategy=body.chunking_strategy
                )
                for i in body.file_ids
            ]
        items = _once_each(items)
        self.check_sees(store_id)
        await self._make_default(store_id, items, body.chunking_strategy)
        await self.check_store_async(store_id)
        self._check_attachable(items, body.chunking_strategy)
        batch = Batch(f"vsfb_{secrets.token_hex(12)}", store_id, _now(), [i.file_id for i in items])
        self.registry.add_batch(batch)
        for item in items:
            await self.attach(store_id, item, body.chunking_strategy)
        return await asyncio.to_thread(self.batch_object, store_id, batch.id)

    def _batch(self, store_id: str, batch_id: str) -> Batch:
        self.check_store(store_id)
        batch = self.registry.batch(store_id, batch_id)
        if batch is None:
            raise _not_found("file batch", batch_id)
        return batch

    def batch_files(self, batch: Batch) -> list[VectorStoreFile]:
        links = [self.registry.link(batch.store_id, f) for f in batch.file_ids]
        return [self._link_object(link) for link in links if link is not None]

    def batch_object(self, store_id: str, batch_id: str) -> VectorStoreFileBatch:
        batch = self._batch(store_id, batch_id)
        counts = _file_counts(self.batch_files(batch))
        status = "in_progress" if counts.in_progress else "completed"
        if batch.cancelled and not counts.in_progress:
            status = "cancelled"
        return VectorStoreFileBatch(
            id=batch.id, created_at=batch.created_at, file_counts=counts, status=status,
            vector_store_id=store_id,
        )  # fmt: skip

    async def cancel_batch(self, store_id: str, batch_id: str) -> VectorStoreFileBatch:
        """Stop the batch's files still being indexed (those done stay in the store)."""
        batch = await asyncio.to_thread(self._batch, store_id, batch_id)

        def cancel(cm: Any) -> None:
            stopped = 0
            for file_id in batch.file_ids:
                link = self.registry.link(store_id, file_id)
                if link is not None and link.status == "in_progress":
                    self.worker.cancel(lambda key, f=file_id: key == (store_id, f))
                    self.registry.update_link(store_id, file_id, status="cancelled")
                    self._job_ended(store_id, file_id)
                    stopped += 1
            if stopped:  # a finished batch stays "completed"
                self.registry.cancel_batch(batch.id)

        await self.worker.call(cancel)
        return await asyncio.to_thread(self.batch_object, store_id, batch_id)

    def list_batch_files(self, store_id: str, batch_id: str, status: str | None, **page: Any):
        files = self.batch_files(self._batch(store_id, batch_id))
        return paginate([f for f in files if status in (None, f.status)], **page)

    # ---- search ----------------------------------------------------------------------------
    def document_attributes(self, store_id: str, col: Collection) -> dict[str, dict[str, Any]]:
        """The attributes attribute filters read, by document (`search.document_attributes`);
        any thread."""
        links = self.registry.links(store_id=store_id)
        return document_attributes(col, links, self.uploads.file_id_of)

    async def search(self, store_id: str, body: SearchRequest) -> SearchPage:
        queries = [body.query] if isinstance(body.query, str) else list(body.query)
        async with self.reading_async(store_id) as col:  # (open while it waits for the model)
            return await self._search(store_id, col, queries, body)

    async def _search(
        self, store_id: str, col: Collection, queries: list[str], body: SearchRequest
    ) -> SearchPage:
        threshold = (body.ranking_options.score_threshold if body.ranking_options else None) or 0
        if threshold and body.retrieval_mode != "dense":
            raise APIError(
                400, f"score_threshold is on the dense scores' scale (0 to 1): send it with "
                f"retrieval_mode 'dense' (a {body.retrieval_mode} score has a scale of its own)",
                param="ranking_options.score_threshold", code="unsupported_value",
            )  # fmt: skip
        if body.rewrite_query:
            raise APIError(400, "rewrite_query is not supported here", param="rewrite_query",
                           code="unsupported_value")  # fmt: skip
        k = body.max_num_results

        def encode(cm: Any) -> tuple[np.ndarray, int]:
            import mlx.core as mx

            self._check_model(col, cm)
            vectors = np.array(cm.encode_queries(queries).astype(mx.float32))  # (Q, n_mem, d)
            return vectors, cm.config.dense_rerank

        vectors, rerank = await self.worker.call(encode)
        links = self.registry.links(store_id=store_id)
        hybrid = body.ranking_options.hybrid_search if body.ranking_options else None
        fusion = None
        if hybrid is not None:
            weights = {"dense": hybrid.embedding_weight, "lexical": hybrid.text_weight}
            fusion = dataclasses.replace(Fusion(), weights=weights)
        args = (queries, vectors, k, threshold, links, self.uploads, body.retrieval_mode, fusion)

        def searched() -> list[SearchResult]:
            try:
                return search_results(col, *args, rerank, body.filters)
            finally:
                self._readers.release(col)

        self._readers.hold(col)  # (the thread's own: it may outlast a request cancelled)
        results = await asyncio.shield(asyncio.to_thread(searched))
        return SearchPage(search_query=queries, data=results)


def _made(directory: Path) -> int:
    """When a collection clara-index made was created (0: deleted meanwhile, or damaged: its
    page of a listing leaves it out then, as opening it says which)."""
    try:
        return int(read_manifest(directory).created)
    except (OSError, ValueError, TypeError, KeyError, ClaraError):
        return 0


@dataclasses.dataclass
class _StoreKey:
    """What a page of stores is ordered and cut by."""

    id: str
    created_at: int


def _file_object(rec: FileRecord) -> FileObject:
    return FileObject(
        id=rec.id, bytes=rec.bytes, created_at=rec.created_at, filename=rec.filename,
        purpose=rec.purpose,
    )  # fmt: skip


def _file_counts(files: list[VectorStoreFile]) -> FileCounts:
    counts = FileCounts(total=len(files))
    for f in files:
        setattr(counts, f.status, getattr(counts, f.status) + 1)
    return counts


def _no_expiry(expires_after: dict | None) -> None:
    if expires_after is not None:
        raise APIError(
            400, "expires_after is not supported: a vector store lasts until it is deleted",
            param="expires_after", code="unsupported_parameter",
        )  # fmt: skip


def _once_each(items: list[VectorStoreFileCreate]) -> list[VectorStoreFileCreate]:
    """Each file once, as first named (the same id 5000 times counted 5000 files)."""
    seen: dict[str, VectorStoreFileCreate] = {}
    for item in items:
        seen.setdefault(item.file_id, item)
    return list(seen.values())


def _now() -> int:
    return int(time.time())
