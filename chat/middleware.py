"""Who is on the other end of a socket, decided before any consumer runs (Channels middleware, as Channels'
own AuthMiddleware does for sessions).

A `?ticket=` (single use, from `POST /chat/tickets`) decides alone: a bad one leaves the socket anonymous even
beside a session cookie. Without one, the Django session (the browser page's cookie) does. Consumers find
`scope["user"]`: the User, or AnonymousUser, whom they close with 4001.
"""

from urllib.parse import parse_qs

from channels.auth import get_user
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser

from chat import services


def query_param(scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


class SocketAuthMiddleware(BaseMiddleware):
    """Inside Channels' SessionMiddlewareStack, which gives it the session."""

    async def __call__(self, scope, receive, send):
        ticket = query_param(scope, "ticket")
        if ticket is not None:
            user = await services.ticket_user(ticket=ticket)
        else:
            user = await get_user(scope)
        return await super().__call__({**scope, "user": user or AnonymousUser()}, receive, send)
