"""Bearer authentication for every protected endpoint, and the staff-only requirement."""

import functools
import logging

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from ninja.security import HttpBearer, SessionAuth

from accounts import tokens
from accounts.denylist import is_access_token_denied
from accounts.models import User
from core.errors import PermissionDenied, ServiceUnavailable
from core.keyvalue import KeyValueUnavailable
from core.logging import user_id_var
from core.metrics import AUTH_FAILURES

logger = logging.getLogger(__name__)


def verified_access_claims(request, token: str) -> dict:
    """The claims of a valid access token, verified once per request: the rate limiter (config/api.py) and the
    authentication both read them. Raises tokens.InvalidToken."""
    cached = getattr(request, "_verified_access", None)
    if cached is not None and cached[0] == token:
        return cached[1]
    claims = tokens.verify(token, token_type=tokens.ACCESS)
    request._verified_access = (token, claims)
    return claims


class JWTAuth(HttpBearer):
    """Accepts a live access token of an active user: one signature check (inline, microseconds), one store
    lookup for revocation and one query for the user. Returning None makes ninja answer 401."""

    async def authenticate(self, request, token: str) -> User | None:
        try:
            claims = verified_access_claims(request, token)
        except tokens.InvalidToken as exc:
            logger.info("access token refused: %s", exc)
            AUTH_FAILURES.labels("invalid_token").inc()
            return None
        try:
            if await is_access_token_denied(claims["jti"]):
                logger.info("access token refused: revoked")
                AUTH_FAILURES.labels("revoked_token").inc()
                return None
        except KeyValueUnavailable as exc:
            # Revocation cannot be checked; accepting the token could accept a logged-out one.
            logger.error("token denylist unavailable: %s", exc)
            raise ServiceUnavailable(
                "Authentication is temporarily unavailable; try again shortly.", code="auth_unavailable"
            ) from None
        user = await User.objects.filter(pk=int(claims["sub"]), is_active=True).afirst()
        if user is None or user.token_generation != claims["gen"]:
            logger.info("access token refused: user inactive or logged out everywhere")
            AUTH_FAILURES.labels("inactive_or_logged_out").inc()
            return None
        user_id_var.set(user.pk)
        request.user = user
        request.token_claims = claims
        return user


class OptionalJWTAuth(JWTAuth):
    """For endpoints open to everyone that show more to some: no Authorization header means anonymous
    (`request.auth` is an AnonymousUser), while a header that is present but invalid is still a `401`."""

    async def __call__(self, request):
        if "Authorization" not in request.headers:
            return _ANONYMOUS
        pending = super().__call__(request)
        return await pending if pending is not None else None


class BrowserSessionAuth(SessionAuth):
    """The browser page's Django session, with ninja's CSRF check on writes. A request without a session cookie is
    not a browser's session at all: it falls through to 401 (with `WWW-Authenticate`), not a CSRF 403."""

    def __call__(self, request):
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            return None
        return super().__call__(request)


_ANONYMOUS = AnonymousUser()
jwt_auth = JWTAuth()
optional_jwt_auth = OptionalJWTAuth()
session_auth = BrowserSessionAuth()


def staff_required(view):
    """For endpoints behind `jwt_auth` that only staff may call: `403` for everyone else."""

    @functools.wraps(view)
    async def wrapper(request, *args, **kwargs):
        if not request.auth.is_staff:
            raise PermissionDenied("Only staff can do this.")
        return await view(request, *args, **kwargs)

    return wrapper
