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

from pydantic import BaseModel, ConfigDict, Field

from clara.errors import InvalidArgumentError

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


#: What a request's `filters` is (OpenAI's comparison and compound filters, and `in`/`nin`)
AttributeFilter = Annotated[
    ComparisonFilter | ListFilter | CompoundFilter, Field(discriminator="type")
]


def filter_dict(node: Any, param: str = "filters") -> dict[str, Any] | None:
    """A parsed filter (model) as the plain data `matches` reads, checked for its size."""
    if node is None:
        return None
    return check_filter(node.model_dump() if isinstance(node, BaseModel) else node, param)


def check_filter(node: Any, param: str = "filters") -> dict[str, Any]:
    """`node` if it is a filter clara can apply; else an `InvalidArgumentError` naming where
    (`param` is its place in the request, e.g. "filters.filters[1].value")."""
    _check(node, param, 0)
    return node


def _check(node: Any, param: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidArgumentError(
            f"{param}: an 'and'/'or' filter may hold comparisons and 'and'/'or' filters of "
            "comparisons, not deeper ones"
        )
    if not isinstance(node, Mapping):
        raise InvalidArgumentError(f"{param}: a filter is an object with a 'type'")
    kind = node.get("type")
    if kind in COMPOUNDS:
        extra = set(node) - {"type", "filters"}
        subs = node.get("filters")
        if extra or not isinstance(subs, list) or not subs or len(subs) > MAX_FILTERS:
            raise InvalidArgumentError(
                f"{param}: an '{kind}' filter has 'type' and a list 'filters' of 1 to "
                f"{MAX_FILTERS} filters"
                + (f" (not {', '.join(sorted(map(str, extra)))})" if extra else "")
            )
        for i, sub in enumerate(subs):
            _check(sub, f"{param}.filters[{i}]", depth + 1)
        return
    if kind not in COMPARISONS:
        raise InvalidArgumentError(
            f"{param}.type: {kind!r} is no filter type; one of {', '.join(COMPARISONS)} "
            f"(comparisons) or {', '.join(COMPOUNDS)}"
        )
    extra = set(node) - {"type", "key", "value"}
    if extra or not isinstance(node.get("key"), str) or "value" not in node:
        raise InvalidArgumentError(
            f"{param}: a '{kind}' filter has 'type', a string 'key' and a 'value'"
            + (f" (not {', '.join(sorted(map(str, extra)))})" if extra else "")
        )
    value = node["value"]
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not all(_scalar(v) for v in value):
            raise InvalidArgumentError(
                f"{param}.value: '{kind}' takes a list of strings, numbers or booleans"
            )
        if len(value) > MAX_VALUES:
            raise InvalidArgumentError(f"{param}.value: at most {MAX_VALUES} values")
    elif not _scalar(value):
        raise InvalidArgumentError(
            f"{param}.value: '{kind}' compares with a string, a number or a boolean"
        )


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
