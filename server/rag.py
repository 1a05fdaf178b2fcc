"""A chat request's sources and prompt: what retrieval found in its collection (hits with
text, document and stored memories), then the generator prompt that reads them as memory,
as text, or the best as text and the rest as memory ("mixed")."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from clara.errors import CollectionNameCaseError, CollectionNotFoundError
from clara.model import ClaraModel
from clara.paths import UPLOADS, upload_file_id
from clara.prompt import SYSTEM_PROMPT, Prompt, memory_prompt, mixed_prompt, text_prompt
from indexing.meta import contextual
from indexing.open_collections import OpenCollections
from indexing.service.search import document_attributes, filtered_documents
from indexing.service.state import key_sees, read_links
from indexing.store import Collection, retrieve_from
from server.jobs import Retrieved, SourceInfo
from server.metrics import Metrics
from server.protocol import RagParams

log = logging.getLogger("clara.serve")

#: Chunks a "mixed" request reads as text, best first (the rest as memories). On the 200
#: held-out questions the default model's generator read the best of 5 as text and 4 as
#: memories at F1 42.9 / cover-EM 27.0, the best 2 as text at 39.0 / 25.0 (bench_heldout.py)
MIXED_TEXT = 1


#: a request that names a collection there is none of: its error, not retrieval's
_ASKED_WRONG = (CollectionNotFoundError, CollectionNameCaseError)


class Rag:
    """Retrieval and prompts for the model thread: collections under `root` opened once
    (checked against the loaded model's `manifest`), `default` the one requests get."""

    def __init__(
        self,
        cm: ClaraModel,
        root: Path,
        default: str,
        manifest: dict[str, Any],
        metrics: Metrics,
        attributes: Callable[[str, Collection], dict[str, dict[str, Any]]] | None = None,
    ) -> None:
        """`attributes(name, collection)`: each document's attributes, for attribute filters
        (the mounted Files API's; without one, `_attributes`)."""
        self.cm, self.root, self.default, self.metrics = cm, root, default, metrics
        self._collections = OpenCollections(root, manifest)
        self.attributes = attributes or self._attributes

    def _attributes(self, name: str, col: Collection) -> dict[str, dict[str, Any]]:
        """Each document's attributes without a mounted Files API: those its upload was given
        as a `clara-index serve` beside this server records them (a review: they were left
        out, and `ne`/`nin` filters let every upload through), and clara's own. A registry
        that cannot be read leaves the uploads out (no filter lets them through)."""
        links, unread = [], False
        try:
            links = read_links(self.root / UPLOADS, name)
        except (OSError, sqlite3.Error) as exc:
            log.warning("attribute filters leave out the uploads of '%s': their registry "
                        "cannot be read (%s)", name, exc)  # fmt: skip
            unread = True
        is_upload = lambda p: upload_file_id(self.root, p)  # noqa: E731
        found = document_attributes(col, links, is_upload)
        if unread:
            uploads = {d.id for d in col.list_documents() if is_upload(d.path)}
            found = {d: a for d, a in found.items() if d not in uploads}
        return found

    def close(self) -> None:
        self._collections.close()

    def forget(self, name: str) -> None:
        """`name` was deleted: closed once no request reads it."""
        self._collections.drop(name)

    def chunks(self, name: str) -> int | None:
        """The chunks in collection `name` (None: there is none yet)."""
        with self._collections.lease(name) as coll:
            return None if coll is None else coll.stats()["chunks"]

    def retrieve(self, p: RagParams, qvec: np.ndarray | None) -> Retrieved:
        """The request's sources (and memories); `qvec` is its query encoding (None exactly
        when the request does not retrieve). Several collections are searched as one
        (`retrieve_from`)."""
        if not p.retrieval or p.top_k == 0:
            return Retrieved("disabled", None, detail="retrieval turned off by the request")
        if isinstance(p.scope, str):  # (made without its request's key: whose is unknown)
            raise RuntimeError("RagParams.scope was not given: which collections may be read?")
        for name in p.collections:
            if not key_sees(self.root, name, p.scope):
                raise self._not_its(p, name)
        try:
            with ExitStack() as leases:
                found = [(name, self._lease(leases, p, name)) for name in p.collections]
                return self._retrieve(p, qvec, found)
        except Exception as exc:  # a damaged collection, a disk error, another model's index,
            if not isinstance(exc, _ASKED_WRONG):  # a lock: counted, as the others are (not
                self.metrics.retrievals.inc(status="error")  # the request's own wrong name)
            raise

    def _lease(self, leases: ExitStack, p: RagParams, name: str) -> Collection | None:
        """Collection `name` open until `leases` close (None: there is none yet)."""
        try:
            return leases.enter_context(self._collections.lease(name))
        except CollectionNameCaseError:  # (its message names the collection there is)
            if p.scope is not None:
                raise self._not_its(p, name) from None
            raise

    @staticmethod
    def _not_its(p: RagParams, name: str) -> CollectionNotFoundError:
        """What a key limited to some collections is told of one it may not read."""
        scope = p.scope
        theirs = ", ".join(scope.collections) if scope and scope.collections else "none"
        what = f"no collection '{name}'" if name else "no collection named"
        return CollectionNotFoundError(
            f"{what} for the API key {scope and scope.key}: it reads the collections its line "
            f"of the key file names ({theirs}) and the vector stores it made; name one of them "
            "('collection', or a file_search tool)"
        )

    def _retrieve(
        self, p: RagParams, qvec: np.ndarray | None, found: list[tuple[str, Collection | None]]
    ) -> Retrieved:
        names = [name for name, _ in found]
        for name, coll in found:
            if coll is None and name != self.default:
                raise CollectionNotFoundError(
                    f"no collection '{name}' on this server; index documents into it first "
                    "(clara-index add --collection NAME) or leave 'collection' out"
                )
        found = [(name, coll) for name, coll in found if coll is not None]
        # what was searched: not the server's default collection beside others before anything
        # was indexed into it (a follow-up that searched "it" again was told it was deleted)
        searched_names = [name for name, _ in found] or names
        first = searched_names[0]
        several = searched_names if len(searched_names) > 1 else []
        if not found:  # (the server's default collection, before anything was indexed)
            self.metrics.retrievals.inc(status="no_index")
            where = self.root / self.default
            return Retrieved(
                "no_index", first, detail=f"no index at {where} yet", collections=several
            )
        searched = []  # [(collection, the documents an attribute filter lets through)]
        for name, coll in found:
            documents = None
            if p.filters is not None:
                documents = filtered_documents(self.attributes(name, coll), p.filters)
            searched.append((coll, documents))
        hits = retrieve_from(  # text + document (+ memories)
            searched,
            p.query,
            qvec,
            p.top_k,
            p.retrieval_mode,
            rerank=self.cm.config.dense_rerank,
            memories=p.mode in ("memory", "mixed"),
        )
        if not hits:
            empty = all(coll.stats()["chunks"] == 0 for _, coll in found)
            status = "empty_index" if empty else "no_match"
            self.metrics.retrievals.inc(status=status)
            it = "the collection is" if len(found) == 1 else "the collections are"
            detail = f"{it} empty" if empty else "no chunk matched the words"
            passed = [d for _, d in searched]
            if all(d == [] for d in passed) and not empty:
                detail = "no document's attributes pass the filters"
            elif p.filters is not None and not empty:
                detail = "no chunk of the documents the filters let through matched"
            return Retrieved(status, first, detail=detail, collections=several)
        memories = np.stack([h.memory for h in hits]) if hits[0].memory is not None else None
        sources = [
            SourceInfo(
                chunk_id=h.chunk_id,
                document_id=h.doc_id,
                filename=h.doc_name,
                path=h.path,
                page_start=h.page_start,
                page_end=h.page_end,
                score=h.score,
                text=h.text,
                collection=h.collection,
                context=h.context,
                ranks=h.ranks,
                retrieval_mode=h.mode,
                file_id=upload_file_id(self.root, h.path),
            )
            for h in hits
        ]
        self.metrics.retrievals.inc(status="ok")
        return Retrieved("ok", first, sources, memories, query=p.query, collections=several)

    def prompt(self, p: RagParams, r: Retrieved) -> tuple[Prompt, str | None]:
        """(prompt, adapter): memories (and for "mixed" the best chunk's text) -> generator
        adapter; text or nothing -> bare model."""
        cm = self.cm
        if r.status == "ok" and p.mode == "memory":
            prompt = memory_prompt(cm, p.question, r.memories, p.history, p.system)
            return prompt, "generator"
        chunks = [contextual(s.context, s.text) for s in r.sources] if r.status == "ok" else None
        if chunks and p.mode == "mixed":
            blocks = r.memories[MIXED_TEXT:]  # (n_mem, d) each, NumPy: the prompt takes them
            prompt = mixed_prompt(cm, p.question, chunks[:MIXED_TEXT], blocks, p.history, p.system)
            return prompt, "generator"
        # asked without retrieval (a chat app's side requests, `NAME-no-retrieval`): the
        # messages as sent, not clara's "answer ... from the documents"
        default = SYSTEM_PROMPT if p.retrieval else None
        return text_prompt(cm, p.question, chunks, p.history, p.system, default), None
