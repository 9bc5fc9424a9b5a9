"""The two page shapes of the contract.

- Offset pages (v1): `{"items": [...], "pagination": {"page", "per_page", "total", "pages"}}`.
- Cursor pages (v2): `{"items": [...], "next_cursor": str | null}`, keyset pagination: a page is the rows strictly
  after the last one of the previous page in a fixed order, so it is stable under inserts, never repeats or skips a
  row, and costs the same at any depth.
"""

from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from django.core import signing
from django.db import models
from django.db.models import Q
from ninja import Field, Schema

from core.errors import InvalidInput
from core.params import MAX_OBJECT_ID

T = TypeVar("T")

MAX_PER_PAGE = 100
# Bounded so that the offset always fits the database's integer type.
MAX_PAGE = 1_000_000
MAX_CURSOR_LENGTH = 512


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


# --- cursor pages ----------------------------------------------------------------------------------------


class CursorParams(Schema):
    cursor: str | None = Field(None, max_length=MAX_CURSOR_LENGTH, description="`next_cursor` of the previous page.")
    limit: int = Field(20, ge=1, le=MAX_PER_PAGE)


class CursorPage(Schema, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="The cursor of the next page; null on the last page.")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Keyset:
    """Cursors over one model in one order, e.g. `Keyset(Post, ("-created_at", "-id"), salt="posts.cursor")`.

    The last field of the order must be unique (the primary key), so the order is total. A cursor is the signed
    position of a page's last row: a client can hold one, not forge or edit one, and one made for another list (a
    different salt) is refused.
    """

    def __init__(self, model: type[models.Model], order: tuple[str, ...], *, salt: str):
        self.order = order
        self.names = tuple(spec.removeprefix("-") for spec in order)
        self._timestamps = {
            name for name in self.names if isinstance(model._meta.get_field(name), models.DateTimeField)
        }
        self._signer = signing.Signer(salt=salt)

    def cursor_for(self, row) -> str:
        """The cursor of the page that follows `row` (a model instance, or a dict holding the order's fields)."""
        values = [row[name] if isinstance(row, dict) else getattr(row, name) for name in self.names]
        position = [
            (value - _EPOCH) // timedelta(microseconds=1) if name in self._timestamps else value
            for name, value in zip(self.names, values, strict=True)
        ]
        return self._signer.sign_object(position)

    def position(self, cursor: str) -> list:
        """The values a cursor holds, or a 422 on `cursor`."""
        try:
            values = self._signer.unsign_object(cursor)
            # Only ever signed by cursor_for, but checked all the same: a bad value must not reach the database.
            if not isinstance(values, list) or len(values) != len(self.names):
                raise ValueError("cursor shape")
            if not all(type(value) is int and -MAX_OBJECT_ID <= value <= MAX_OBJECT_ID for value in values):
                raise ValueError("cursor content")
            if values[-1] < 1:
                raise ValueError("a primary key")
            return [
                _EPOCH + timedelta(microseconds=value) if name in self._timestamps else value
                for name, value in zip(self.names, values, strict=True)
            ]
        except (signing.BadSignature, ValueError, TypeError, OverflowError):
            raise InvalidInput(loc=["query", "cursor"], msg="Invalid cursor.", type="invalid_cursor") from None

    def after(self, rows, position: list):
        """`rows` (already in this order) strictly after `position`."""
        first, *_ = self.order
        if len(self.order) > 1:
            # The first field's range alone is what an index range scan uses; the condition below settles ties.
            rows = rows.filter(**{f"{self.names[0]}__{'lte' if first.startswith('-') else 'gte'}": position[0]})
        later, equal = Q(), {}
        for spec, name, value in zip(self.order, self.names, position, strict=True):
            later |= Q(**equal, **{f"{name}__{'lt' if spec.startswith('-') else 'gt'}": value})
            equal[name] = value
        return rows.filter(later)

    async def page(self, rows, *, cursor: str | None, limit: int, item=None) -> dict:
        """A cursor page of `rows` (a queryset ordered by this keyset), one query: one row more than asked,
        to know whether there is a next page. `item` turns a row into what the page lists."""
        return await self.page_after(rows, self.position(cursor) if cursor else None, limit=limit, item=item)

    async def page_after(self, rows, position: list | None, *, limit: int, item=None) -> dict:
        """`page`, for a caller that read the cursor's position itself (to refuse a bad one before other work)."""
        if position is not None:
            rows = self.after(rows, position)
        found = [row async for row in rows[: limit + 1]]
        next_cursor = self.cursor_for(found[limit - 1]) if len(found) > limit else None
        items = found[:limit] if item is None else [item(row) for row in found[:limit]]
        return {"items": items, "next_cursor": next_cursor}
