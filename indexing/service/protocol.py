"""Request and response models of the indexing service, mirroring OpenAI's Files and Vector
Stores API field by field (as the installed `openai` SDK parses them), in OpenAI's order.

A vector store is a clara collection (its id is the collection name); a vector store file is
a document of it (its id is the uploaded file's id, or the document id for documents that
`clara-index add` put there). CLaRa's additions are marked; unknown request fields are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clara_cli.http import Metadata, ShortText, json_int, valid_unicode
from indexing.filters import AttributeFilter

#: A file's attributes as returned (numbers keep their type: 1889 stays an int), and as a
#: request may set them: OpenAI's bounds, 16 pairs, keys of 64 characters, strings of 512
Attributes = dict[str, str | int | float | bool]
AttributesIn = Annotated[
    dict[
        Annotated[str, Field(max_length=64)],
        ShortText | int | float | bool,
    ],
    Field(max_length=16),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    # no lone surrogates (JSON's \\ud800) in any name, metadata, attribute or query: stored,
    # they would break every later listing
    _unicode = model_validator(mode="before")(valid_unicode)


# ---- files ---------------------------------------------------------------------------------
class FileObject(BaseModel):
    id: str
    bytes: int
    created_at: int
    filename: str
    object: Literal["file"] = "file"
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileDeleted(BaseModel):
    id: str
    deleted: bool = True
    object: Literal["file"] = "file"


# ---- vector stores -------------------------------------------------------------------------
class StaticChunking(BaseModel):
    model_config = ConfigDict(strict=True)
    max_chunk_size_tokens: json_int(ge=1)
    chunk_overlap_tokens: json_int(ge=0)
    """At most half of `max_chunk_size_tokens` in a request (OpenAI's bound)."""


class ChunkingStrategy(_Request):
    """`{"type": "auto"}` or `{"type": "static", "static": {...}}` (request and response)."""

    type: Literal["auto", "static", "other"]
    static: StaticChunking | None = None


NULL_ONLY = {"type": "null"}  # schema of a field only null passes (what clara cannot honour)


class VectorStoreCreate(_Request):
    chunking_strategy: ChunkingStrategy | None = None
    description: ShortText | None = None
    expires_after: dict[str, Any] | None = Field(default=None, json_schema_extra=NULL_ONLY)
    """Not supported: a vector store lasts until deleted (null only)."""
    file_ids: list[str] | None = Field(default=None, max_length=500)
    metadata: Metadata | None = None
    name: ShortText | None = None


class VectorStoreUpdate(_Request):
    name: ShortText | None = None
    """The display name (the id, a collection name, stays)."""
    metadata: Metadata | None = None
    expires_after: dict[str, Any] | None = Field(default=None, json_schema_extra=NULL_ONLY)
    """Not supported: a vector store lasts until deleted (null only)."""


class FileCounts(BaseModel):
    cancelled: int = 0
    completed: int = 0
    failed: int = 0
    in_progress: int = 0
    total: int = 0


class VectorStore(BaseModel):
    id: str
    created_at: int
    file_counts: FileCounts
    last_active_at: int | None = None
    metadata: dict[str, str] | None = None  # (as stored: bounded when it is written)
    name: str
    object: Literal["vector_store"] = "vector_store"
    status: Literal["expired", "in_progress", "completed"]
    usage_bytes: int
    expires_after: dict[str, Any] | None = None
    expires_at: int | None = None


class VectorStoreDeleted(BaseModel):
    id: str
    deleted: bool = True
    object: Literal["vector_store.deleted"] = "vector_store.deleted"


# ---- vector store files --------------------------------------------------------------------
class VectorStoreFileCreate(_Request):
    file_id: str
    attributes: AttributesIn | None = None
    chunking_strategy: ChunkingStrategy | None = None


class LastError(BaseModel):
    code: Literal["server_error", "unsupported_file", "invalid_file"]
    message: str


class VectorStoreFile(BaseModel):
    id: str
    created_at: int
    last_error: LastError | None = None
    object: Literal["vector_store.file"] = "vector_store.file"
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    usage_bytes: int = 0
    vector_store_id: str
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class VectorStoreFileUpdate(_Request):
    attributes: AttributesIn | None


class BatchFile(_Request):
    file_id: str
    attributes: AttributesIn | None = None
    chunking_strategy: ChunkingStrategy | None = None


class FileBatchCreate(_Request):
    """`file_ids` (sharing `attributes` and `chunking_strategy`), or `files` each with its own."""

    model_config = ConfigDict(
        extra="ignore", strict=True,
        json_schema_extra={"oneOf": [
            {"required": ["file_ids"], "properties": {"file_ids": {"type": "array"}}},
            {"required": ["files"], "properties": {"files": {"type": "array"}}},
        ]},
    )  # fmt: skip
    file_ids: list[str] | None = Field(default=None, min_length=1, max_length=500)
    files: list[BatchFile] | None = Field(default=None, min_length=1, max_length=500)
    attributes: AttributesIn | None = None
    chunking_strategy: ChunkingStrategy | None = None


class VectorStoreFileBatch(BaseModel):
    id: str
    created_at: int
    file_counts: FileCounts
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    vector_store_id: str


class VectorStoreFileDeleted(BaseModel):
    id: str
    deleted: bool = True
    object: Literal["vector_store.file.deleted"] = "vector_store.file.deleted"


# ---- search --------------------------------------------------------------------------------
class HybridSearch(_Request):
    """OpenAI's hybrid weights: here the per-retriever weights of the rank fusion."""

    embedding_weight: float = Field(default=1.0, ge=0.0)
    text_weight: float = Field(default=1.0, ge=0.0)


#: OpenAI's rankers; clara ranks one way whichever is named
Ranker = Literal["auto", "none", "default-2024-11-15"]


class RankingOptions(_Request):
    ranker: Ranker | None = None
    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    hybrid_search: HybridSearch | None = None


#: A search query is encoded by the query adapter (a few hundred tokens): far longer text is
#: refused before it costs the model thread anything.
MAX_QUERY_CHARS = 16384
MAX_QUERIES = 64


#: A score_threshold is a dense score's (0 to 1): the fused and BM25 scores have scales of
#: their own (a hybrid score of 0.03 may be the best), so elsewhere it must be 0 or null.
_THRESHOLD_IS_DENSE = {
    "if": {"not": {"properties": {"retrieval_mode": {"const": "dense"}}, "required": ["retrieval_mode"]}},
    "then": {
        "properties": {
            "ranking_options": {
                "anyOf": [
                    {"type": "null"},
                    {"properties": {"score_threshold": {"anyOf": [{"type": "null"}, {"maximum": 0}]}}},
                ]
            }
        }
    },
}  # fmt: skip


class SearchRequest(_Request):
    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=_THRESHOLD_IS_DENSE)

    query: (
        Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]
        | Annotated[
            list[Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]],
            Field(min_length=1, max_length=MAX_QUERIES),
        ]
    )
    """Text to search for, or several (a chunk keeps its best score)."""
    filters: AttributeFilter | None = None
    """Attribute filters (OpenAI's comparison and compound filters: `indexing.filters`):
    only documents whose attributes pass them are searched."""

    max_num_results: json_int(ge=1, le=50) = 10
    ranking_options: RankingOptions | None = None
    rewrite_query: bool | None = Field(default=None, json_schema_extra={"enum": [False, None]})
    """Query rewriting is not supported (false or null only)."""
    # ---- CLaRa extension (the SDK's `extra_body`) ----
    retrieval_mode: Literal["hybrid", "dense", "lexical"] = "hybrid"
    """"hybrid" fuses "dense" (query adapter vs memories) and "lexical" (BM25) rankings;
    `score` is then the fused score. `ranking_options.score_threshold` (0 to 1) is for
    "dense" scores: elsewhere a 400, since a fused score of 0.03 may be the best."""


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class SearchResult(BaseModel):
    """One chunk. CLaRa puts `document_id`, `chunk_id`, `page_start`, `page_end` (when the
    file has pages), `path`, `retrieval_mode` and the chunk's 1-based `rank_dense` /
    `rank_lexical` (when that retriever found it) in `attributes`, after the file's own: a
    name the file's own attributes use keeps the file's value."""

    file_id: str
    filename: str
    score: float
    attributes: Attributes | None = None
    content: list[TextContent]


class SearchPage(BaseModel):
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[SearchResult]
    has_more: bool = False
    next_page: str | None = None


class FileContentPage(BaseModel):
    """GET /v1/vector_stores/{id}/files/{file_id}/content: the file's text as indexed, one
    part per chunk, in order."""

    object: Literal["vector_store.file_content.page"] = "vector_store.file_content.page"
    data: list[TextContent]
    has_more: bool = False
    next_page: str | None = None


class ListPage(BaseModel):
    """OpenAI's cursor page: `after`/`before` take an id from `data`."""

    object: Literal["list"] = "list"
    data: list[Any]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


def paginate(
    items: list[Any],
    *,
    after: str | None,
    before: str | None,
    limit: int,
    order: str,
    show: Callable[[Any], Any | None] | None = None,
) -> ListPage:
    """Sort by (created_at, id) in `order`, cut at the `after`/`before` cursors, keep `limit`.

    With `before`, the page is the items nearest it. `show` turns a kept item into what the
    page holds, or None to leave it out (one that cannot be read): the next takes its place,
    so a page is full while any are left (an empty page with `has_more` ends SDK paging).
    """
    items = sorted(items, key=lambda x: (x.created_at, x.id), reverse=order == "desc")
    ids = [x.id for x in items]
    if after is not None and after in ids:
        items = items[ids.index(after) + 1 :]
        ids = ids[ids.index(after) + 1 :]
    backward = before is not None and before in ids
    if backward:
        items = items[: ids.index(before)][::-1]  # nearest the cursor first
    rest = iter(items)
    page: list[Any] = []
    while len(page) < limit and (item := next(rest, None)) is not None:
        if (shown := item if show is None else show(item)) is not None:
            page.append(shown)
    more = next(rest, None) is not None
    if backward:
        page.reverse()
    first, last = (page[0].id, page[-1].id) if page else (None, None)
    return ListPage(data=page, first_id=first, last_id=last, has_more=more)
