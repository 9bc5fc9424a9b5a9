"""JWT access and refresh tokens, following RFC 8725 (JSON Web Token Best Current Practices).

One pinned algorithm; `iss`, `aud`, `sub`, `jti`, `iat`, `exp` and `typ` are required in every token; the `typ`
claim keeps access and refresh tokens from ever standing in for each other. HMAC verification takes
microseconds, so it runs inline on the event loop.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime

import jwt
from django.conf import settings

ACCESS = "access"
REFRESH = "refresh"
_REQUIRED_CLAIMS = ["iss", "aud", "sub", "jti", "iat", "exp", "typ"]
# Claims of our own each type must carry: the user's token generation, the refresh token's family.
_TYPE_CLAIMS = {ACCESS: "gen", REFRESH: "fam"}


class InvalidToken(Exception):
    """The token is not one we issued for this purpose, or it is no longer valid; the reason is for logs only."""


@dataclass(frozen=True)
class SignedToken:
    token: str
    jti: str
    expires_at: int


def _sign(*, token_type: str, subject: int, lifetime: int, now: datetime, **claims) -> SignedToken:
    issued_at = int(now.timestamp())
    jti = claims.pop("jti", None) or uuid.uuid4().hex
    payload = {
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
        "sub": str(subject),
        "jti": jti,
        "iat": issued_at,
        "exp": issued_at + lifetime,
        "typ": token_type,
        **claims,
    }
    token = jwt.encode(payload, settings.JWT_SIGNING_KEY, algorithm=settings.JWT_ALGORITHM)
    return SignedToken(token=token, jti=jti, expires_at=payload["exp"])


def sign_access(*, user_id: int, generation: int, now: datetime) -> SignedToken:
    return _sign(token_type=ACCESS, subject=user_id, lifetime=settings.JWT_ACCESS_TTL_SECONDS, now=now, gen=generation)


def sign_refresh(*, user_id: int, family_id: uuid.UUID, jti: str, now: datetime) -> SignedToken:
    return _sign(
        token_type=REFRESH,
        subject=user_id,
        lifetime=settings.JWT_REFRESH_TTL_SECONDS,
        now=now,
        jti=jti,
        fam=str(family_id),
    )


def verify(token: str, *, token_type: str, check_expiry: bool = True) -> dict:
    """The token's claims when it is a valid token of `token_type`; raises InvalidToken otherwise."""
    try:
        claims = jwt.decode(
            token,
            settings.JWT_SIGNING_KEY,
            algorithms=[settings.JWT_ALGORITHM],
            audience=settings.JWT_AUDIENCE,
            issuer=settings.JWT_ISSUER,
            options={"require": _REQUIRED_CLAIMS, "verify_exp": check_expiry},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"{type(exc).__name__}: {exc}") from exc
    if claims["typ"] != token_type:
        raise InvalidToken(f"expected a {token_type} token, got {claims['typ']!r}")
    type_claim = _TYPE_CLAIMS[token_type]
    if type_claim not in claims:
        raise InvalidToken(f"missing claim {type_claim!r}")
    if not str(claims["sub"]).isdigit() or not isinstance(claims["jti"], str):
        raise InvalidToken("malformed sub or jti")
    # RFC 7519 NumericDate: a JSON number. PyJWT also takes a string of digits ("exp": "1999999999").
    if any(type(claims.get(name, 0)) not in (int, float) for name in ("exp", "iat", "nbf")):
        raise InvalidToken("a time claim is not a number")
    return claims
