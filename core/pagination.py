"""Offset pagination with the contract's Page body: `{"items": [...], "pagination": {...}}`."""

from typing import Generic, TypeVar

from ninja import Field, Schema

T = TypeVar("T")

MAX_PER_PAGE = 100
# Bounded so that the offset always fits the database's integer type.
MAX_PAGE = 1_000_000


class PageParams(Schema):
    page: int = Field(1, ge=1, le=MAX_PAGE)
    per_page: int = Field(20, ge=1, le=MAX_PER_PAGE)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


class PaginationOut(Schema):
    page: int
    per_page: int
    total: int
    pages: int


class Page(Schema, Generic[T]):
    items: list[T]
    pagination: PaginationOut


def pagination_meta(params: PageParams, total: int) -> dict:
    return {
        "page": params.page,
        "per_page": params.per_page,
        "total": total,
        "pages": (total + params.per_page - 1) // params.per_page,
    }


async def paginate(queryset, params: PageParams) -> dict:
    """One count and one page query, whatever the page size; the items come back evaluated."""
    total = await queryset.acount()
    items = [item async for item in queryset[params.offset : params.offset + params.per_page]]
    return {"items": items, "pagination": pagination_meta(params, total)}
