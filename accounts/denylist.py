"""Access tokens revoked before they expire (logout), kept in the store exactly as long as they could be used."""

import time

from core.store import get_store


def _key(jti: str) -> str:
    return f"revoked-access:{jti}"


async def deny_access_token(*, jti: str, expires_at: int) -> None:
    remaining = expires_at - int(time.time())
    if remaining > 0:
        await get_store().set(_key(jti), "1", ttl=remaining)


async def is_access_token_denied(jti: str) -> bool:
    return await get_store().exists(_key(jti))
