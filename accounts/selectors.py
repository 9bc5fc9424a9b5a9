"""Reads of the accounts app; everything returned is evaluated."""

from accounts import cache as accounts_cache
from accounts.models import User
from core.errors import NotFound
from core.pagination import Keyset, PageParams, paginate

PUBLIC_USER_FIELDS = ("id", "username", "display_name", "date_joined")


def _active_users():
    return User.objects.filter(is_active=True)


# Querysets are lazy: these are built once, and each request only adds its own filter to a copy.
_PUBLIC_ROWS = _active_users().values(*PUBLIC_USER_FIELDS)


async def user_public_list(*, params: PageParams) -> dict:
    return await paginate(_active_users().only(*PUBLIC_USER_FIELDS).order_by("id"), params)


USERS_BY_ID = Keyset(User, ("id",), salt="accounts.users.cursor")


async def user_public_cursor_page(*, cursor: str | None, limit: int) -> dict:
    return await USERS_BY_ID.page(_PUBLIC_ROWS.order_by(*USERS_BY_ID.order), cursor=cursor, limit=limit)


async def user_public_get(*, user_id: int) -> dict:
    """The public row of an active user, from the cache when it holds it (accounts/cache.py)."""
    user = await accounts_cache.profile_get(user_id)
    if user == accounts_cache.GONE:
        raise NotFound("No such user.")
    if user is None:
        user = await _PUBLIC_ROWS.filter(pk=user_id).afirst()
        if user is None:
            raise NotFound("No such user.")
        await accounts_cache.profile_fill(user)
    return user


async def user_get_active(*, user_id: int) -> User:
    user = await user_active_or_none(user_id=user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


async def user_active_or_none(*, user_id: int) -> User | None:
    return await _active_users().filter(pk=user_id).afirst()
