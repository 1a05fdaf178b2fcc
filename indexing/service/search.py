"""Vector-store search results for the indexing service: a collection's hits for one or more
queries (hybrid, dense or lexical: `Collection.retrieve`), among the documents an attribute
filter passes, merged (a chunk keeps its best score), thresholded and shaped as OpenAI's
`vector_stores.search` results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from clara.retrieval import Fusion
from indexing.filters import matches, prepared
from indexing.hybrid import without_copies
from indexing.service.protocol import SearchResult, TextContent
from indexing.service.state import Link
from indexing.service.uploads import Uploads
from indexing.store import Collection


def clara_attributes(
    doc_id: str, chunk_id: int, page_start: int | None, page_end: int | None,
    path: str | None, mode: str, ranks: dict[str, int | None], section: str = "",
    store: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What CLaRa says of a hit in its `attributes`: its vector store (`store`: where a
    search may have had several), its document and chunk, its pages (when the file has
    pages), its section (the document's title and the heading it is under, where they are
    known), its path (a file `clara-index add` indexed), the mode that ranked it and its
    1-based rank in each retriever that found it."""
    out: dict[str, Any] = {"vector_store_id": store} if store else {}
    out.update(document_id=doc_id, chunk_id=chunk_id)
    if page_start is not None:
        out.update(page_start=page_start, page_end=page_end or page_start)
    if section:
        out["section"] = section
    if path:
        out["path"] = path
    out["retrieval_mode"] = mode
    out.update({f"rank_{name}": r for name, r in ranks.items() if r is not None})
    return out


def with_own_attributes(own: dict[str, Any] | None, clara: dict[str, Any]) -> dict[str, Any]:
    """A result's attributes: those the app gave the file, as it gave them, then CLaRa's
    (`document_id`, `chunk_id`, pages, ranks...) under the names the app's do not use."""
    attributes = dict(own or {})
    for name, value in clara.items():
        attributes.setdefault(name, value)
    return attributes


def link_finder(
    links: list[Link], file_id_of: Callable[[str | None], str | None]
) -> Callable[[str, str | None], tuple[Link | None, str | None]]:
    """(doc id, stored path) -> (its link among `links`, the upload its path is, or None for
    a file clara-index read): by the document the job made; by the upload it came from once
    `rebuild --recompress` gave the document a new id."""
    by_doc = {link.doc_id: link for link in links}
    by_file = {link.file_id: link for link in links}

    def find(doc_id: str, path: str | None) -> tuple[Link | None, str | None]:
        upload = file_id_of(path)
        return by_doc.get(doc_id) or by_file.get(upload or ""), upload

    return find


def document_attributes(
    col: Collection, links: list[Link], file_id_of: Callable[[str | None], str | None]
) -> dict[str, dict[str, Any]]:
    """Each document's attributes, as attribute filters read them (`indexing.filters`): those
    its upload was given in this store (`links`), then `filename`, `document_id`, and `path`
    for a file clara-index read (`file_id_of(path)`: the upload a stored path is, or None)."""
    find = link_finder(links, file_id_of)
    out = {}
    for d in col.list_documents():
        link, upload = find(d.id, d.path)
        clara: dict[str, Any] = {"filename": d.name, "document_id": d.id}
        if d.path and not upload:
            clara["path"] = d.path
        out[d.id] = with_own_attributes(link.attributes if link else None, clara)
    return out


def filtered_documents(attributes: dict[str, dict[str, Any]], node: dict[str, Any]) -> list[str]:
    """The documents whose attributes pass the (checked) filter `node`."""
    ready = prepared(node)
    return [doc for doc, attrs in attributes.items() if matches(ready, attrs)]


def search_results(
    col: Collection,
    texts: list[str],
    queries: np.ndarray,
    k: int,
    threshold: float,
    links: list[Link],
    uploads: Uploads,
    mode: str = "hybrid",
    fusion: Fusion | None = None,
    rerank: int = 0,
    filters: dict[str, Any] | None = None,
) -> list[SearchResult]:
    """Questions `texts` and their vectors `queries` (Q, n_mem, d) -> up to k results with
    score >= threshold, best first (`rerank`: the checkpoint's `dense_rerank`), of documents
    that pass the attribute `filters` (checked) when given."""
    documents = None
    if filters is not None:
        attributes = document_attributes(col, links, uploads.file_id_of)
        documents = filtered_documents(attributes, filters)
    best: dict[int, Any] = {}
    for text, query in zip(texts, queries, strict=True):
        for h in col.retrieve(text, query, k, mode, fusion, rerank, documents=documents):
            if h.chunk_id not in best or h.score > best[h.chunk_id].score:
                best[h.chunk_id] = h
    # (one text once: each query's search leaves out copies, but two queries may find two)
    hits = without_copies(sorted(best.values(), key=lambda h: -h.score))[:k]
    hits = [h for h in hits if h.score >= threshold]
    find = link_finder(links, uploads.file_id_of)
    out = []
    for h in hits:  # (each with its document's name and path, read with its text)
        link, upload = find(h.doc_id, h.path)
        file_id = link.file_id if link else (upload or h.doc_id)
        path = h.path if h.path and not upload else None
        clara = clara_attributes(
            h.doc_id, h.chunk_id, h.page_start, h.page_end, path, h.mode, h.ranks, h.context
        )
        attributes = with_own_attributes(link.attributes if link else None, clara)
        content = [TextContent(text=h.text)]
        out.append(
            SearchResult(file_id=file_id, filename=h.doc_name, score=round(h.score, 6),
                         attributes=attributes, content=content)
        )  # fmt: skip
    return out
