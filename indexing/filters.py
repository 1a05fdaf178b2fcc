"""Attribute filters, as OpenAI's file search takes them (`filters` of `vector_stores.search`
and of a `file_search` tool): which documents a search may return, by their attributes.

    {"type": "eq", "key": "team", "value": "hr"}                    eq ne gt gte lt lte in nin
    {"type": "and", "filters": [{...}, {"type": "or", "filters": [...]}]}       and or

A document's attributes are those its upload was given in its vector store
(`vector_stores.files.create(attributes=...)`), then clara's own under names those do not use:
`filename`, `document_id`, and `path` for a file `clara-index add` read. A comparison reads the
attribute of its `key`: `eq`/`ne` compare values of one kind (a number with a number, a string
with a string, a boolean with a boolean), `gt`/`gte`/`lt`/`lte` numbers or strings,
`in`/`nin` one of a list (at most MAX_VALUES). A document without the key passes `ne` and
`nin` only. An `and`/`or` holds 1 to MAX_FILTERS filters: comparisons, or `and`/`or` filters of
comparisons (no deeper).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator
from pydantic_core import PydanticCustomError

from clara.errors import INVALID_PART, InvalidArgumentError

COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
COMPOUNDS = ("and", "or")
#: size bounds (a filter is checked against every document of a store): an `and`/`or` holds
#: at most MAX_FILTERS filters, and may hold `and`/`or` filters of comparisons (two levels)
MAX_FILTERS = 16
MAX_DEPTH = 2
MAX_VALUES = 100  # of an `in` / `nin` list (16 x 16 x 100 values at most: each checked
# against every document, on the model's thread for chats)

Scalar = str | bool | int | float


class _Filter(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ComparisonFilter(_Filter):
    """An attribute compared with one value."""

    type: Literal["eq", "ne", "gt", "gte", "lt", "lte"]
    key: str
    value: Scalar


class ListFilter(_Filter):
    """An attribute that is (`in`) or is not (`nin`) one of a list of values."""

    type: Literal["in", "nin"]
    key: str
    value: Annotated[list[Scalar], Field(max_length=MAX_VALUES)]


Comparison = Annotated[ComparisonFilter | ListFilter, Field(discriminator="type")]


class NestedCompoundFilter(_Filter):
    """Comparisons that must all pass (`and`) or one of which must (`or`), inside another."""

    type: Literal["and", "or"]
    filters: Annotated[list[Comparison], Field(min_length=1, max_length=MAX_FILTERS)]


class CompoundFilter(_Filter):
    """Filters that must all pass (`and`) or one of which must (`or`): comparisons, or
    `and`/`or` filters of comparisons."""

    type: Literal["and", "or"]
    filters: Annotated[
        list[Annotated[ComparisonFilter | ListFilter | NestedCompoundFilter,
                       Field(discriminator="type")]],
        Field(min_length=1, max_length=MAX_FILTERS),
    ]  # fmt: skip


class FilterError(InvalidArgumentError):
    """A malformed filter: `what` is wrong `at` its place inside the filter (a path of keys
    and list indexes: ("filters", 1, "value"))."""

    def __init__(self, at: tuple[str | int, ...], what: str, param: str = "filters") -> None:
        self.at, self.what = at, what
        super().__init__(f"{param}{_path(at)}: {what}")


def _path(at: tuple[str | int, ...]) -> str:
    """The place inside a filter as the HTTP API's errors write one: ".filters.[1].value"."""
    return "".join(f".[{p}]" if isinstance(p, int) else f".{p}" for p in at)


def check_filter(node: Any, param: str = "filters") -> dict[str, Any]:
    """`node` if it is a filter clara can apply; else a `FilterError` naming where (`param`
    is its place in the request, e.g. "filters" -> "filters.filters.[1].value")."""
    try:
        _check(node, (), 0)
    except FilterError as exc:
        raise FilterError(exc.at, exc.what, param) from None
    return node


def _check(node: Any, at: tuple[str | int, ...], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise FilterError(
            at, f"filters nest {MAX_DEPTH} levels deep at most: an 'and'/'or' filter may hold "
            "comparisons and 'and'/'or' filters of comparisons, not deeper ones",
        )  # fmt: skip
    if not isinstance(node, Mapping):
        raise FilterError(at, "a filter is an object with a 'type'")
    kind = node.get("type")
    if kind in COMPOUNDS:
        extra = set(node) - {"type", "filters"}
        subs = node.get("filters")
        if extra or not isinstance(subs, list) or not subs or len(subs) > MAX_FILTERS:
            raise FilterError(
                at, f"an '{kind}' filter has 'type' and a list 'filters' of 1 to {MAX_FILTERS} "
                "filters" + (f" (not {', '.join(sorted(map(str, extra)))})" if extra else ""),
            )  # fmt: skip
        for i, sub in enumerate(subs):
            _check(sub, (*at, "filters", i), depth + 1)
        return
    if kind not in COMPARISONS:
        raise FilterError(
            (*at, "type"), f"{kind!r} is no filter type; one of {', '.join(COMPARISONS)} "
            f"(comparisons) or {', '.join(COMPOUNDS)}",
        )  # fmt: skip
    extra = set(node) - {"type", "key", "value"}
    if extra or not isinstance(node.get("key"), str) or "value" not in node:
        raise FilterError(
            at, f"a{'n' * (kind[0] in 'aeio')} '{kind}' filter has 'type', a string 'key' and a "
            "'value'"
            + (f" (not {', '.join(sorted(map(str, extra)))})" if extra else ""),
        )  # fmt: skip
    value = node["value"]
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not all(_scalar(v) for v in value):
            raise FilterError(
                (*at, "value"), f"'{kind}' takes a list of strings, numbers or booleans"
            )
        if len(value) > MAX_VALUES:
            raise FilterError((*at, "value"), f"at most {MAX_VALUES} values")
    elif not _scalar(value):
        raise FilterError((*at, "value"), f"'{kind}' compares with a string, a number or a boolean")


def _validated(node: Any) -> dict[str, Any]:
    """A request's filter, checked by `check_filter`'s rules; a malformed one is a validation
    error whose `ctx` says what is wrong and where inside it (`clara_cli.http` adds where the
    filter was in the request: "tools.[0].filters.filters.[1].value")."""
    try:
        _check(node, (), 0)
    except FilterError as exc:
        raise PydanticCustomError(
            INVALID_PART, "{what}", {"what": exc.what, "at": list(exc.at)}
        ) from None
    return node


#: The schema of a filter (OpenAI's comparison and compound filters, and `in`/`nin`)
FilterSchema = Annotated[
    ComparisonFilter | ListFilter | CompoundFilter, Field(discriminator="type")
]
#: What a request's `filters` is: a filter as plain data (what `matches` reads), checked by
#: `check_filter`'s rules (the one grammar: requests, stored follow-ups, library callers), its
#: OpenAPI schema `FilterSchema`'s.
AttributeFilter = Annotated[
    dict[str, Any], PlainValidator(_validated, json_schema_input_type=FilterSchema)
]


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _kind(value: Any) -> str:
    """What can be compared with what: booleans apart from numbers (Python's True == 1)."""
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, (int, float)) else "str"


def _equal(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) and a == b


def prepared(node: Mapping[str, Any]) -> dict[str, Any]:
    """The (checked) filter `node` made ready for `matches` over many documents: each `in`/
    `nin` list as a set, built once (a review: once per document and list, 100 s)."""
    kind = node["type"]
    if kind in COMPOUNDS:
        return {"type": kind, "filters": [prepared(sub) for sub in node["filters"]]}
    if kind in ("in", "nin"):
        return {**node, "set": frozenset((_kind(v), v) for v in node["value"])}
    return dict(node)


def matches(node: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
    """Whether a document with these attributes passes the (checked, perhaps `prepared`)
    filter `node`."""
    kind = node["type"]
    if "set" in node:  # (a prepared in/nin)
        have = attributes.get(node["key"])
        if node["key"] not in attributes or not _scalar(have):
            return kind == "nin"
        return ((_kind(have), have) in node["set"]) is (kind == "in")
    if kind == "and":
        return all(matches(sub, attributes) for sub in node["filters"])
    if kind == "or":
        return any(matches(sub, attributes) for sub in node["filters"])
    key, value = node["key"], node["value"]
    if key not in attributes or not _scalar(attributes[key]):
        return kind in ("ne", "nin")
    have = attributes[key]
    if kind == "eq":
        return _equal(have, value)
    if kind == "ne":
        return not _equal(have, value)
    if kind == "in":
        return any(_equal(have, v) for v in value)
    if kind == "nin":
        return not any(_equal(have, v) for v in value)
    if _kind(have) != _kind(value) or _kind(have) == "bool":
        return False
    return {"gt": have > value, "gte": have >= value, "lt": have < value, "lte": have <= value}[
        kind
    ]
