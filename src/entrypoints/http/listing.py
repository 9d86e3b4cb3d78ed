"""``GET /objects``: a page of the stored IDs, merged from every node's listing.

An ordinary Litestar route (it carries no object bytes, so the framework's per-request cost does
not matter here, and its schema and parameter checks come for free). A collection of its own
rather than ``GET /object``: ``/object/...`` is the raw, byte-exact object path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from litestar import get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import Parameter

from application.listing import ListObjects
from domain.listing import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, ListingQuery
from domain.object_id import MAX_OBJECT_ID_LENGTH, OBJECT_ID_PATTERN
from entrypoints.http.auth import AUTH_RULE, Rule
from entrypoints.http.errors import ErrorBody

__all__ = ["ListedObjectBody", "ObjectListBody", "list_objects"]


@dataclass(frozen=True, slots=True)
class ListedObjectBody:
    id: str
    size: int
    etag: str
    last_modified: datetime | None


@dataclass(frozen=True, slots=True)
class ObjectListBody:
    """``next``: pass it as ``after`` for the following page; null on the last page."""

    objects: list[ListedObjectBody]
    next: str | None


@get(
    "/objects",
    summary="List stored objects, in ID order, a page at a time",
    description="Every ID the fleet stores, once, as its newest copy has it (deleted IDs are not "
    "listed), merged from every node's listing. Pass `next` as `after` for the following page. "
    "503 names a node that cannot be listed: a page without it could miss IDs.",
    responses={
        400: ResponseSpec(data_container=ErrorBody, description="A parameter is not valid."),
        503: ResponseSpec(data_container=ErrorBody, description="A node cannot be listed."),
    },
    opt={AUTH_RULE: Rule.LIST},
)
async def list_objects(
    listing: NamedDependency[ListObjects],
    prefix: Annotated[
        str,
        Parameter(
            description="Only IDs that start with this.",
            max_length=MAX_OBJECT_ID_LENGTH,
            pattern=f"^[A-Za-z0-9]{{0,{MAX_OBJECT_ID_LENGTH}}}$",
        ),
    ] = "",
    after: Annotated[
        str | None,
        Parameter(description="Only IDs after this one.", pattern=f"^{OBJECT_ID_PATTERN}$"),
    ] = None,
    limit: Annotated[
        int, Parameter(description="At most this many objects.", ge=1, le=MAX_PAGE_SIZE)
    ] = DEFAULT_PAGE_SIZE,
) -> ObjectListBody:
    page = await listing.page(ListingQuery(prefix=prefix, after=after, limit=limit))
    return ObjectListBody(
        objects=[
            ListedObjectBody(entry.object_id, entry.size, entry.etag, entry.last_modified)
            for entry in page.objects
        ],
        next=page.next,
    )
