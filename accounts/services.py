"""Writes of the accounts app: registration, the token lifecycle, profile and password changes, deactivation."""

import logging
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.hashers import check_password, make_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts import cache as accounts_cache
from accounts import tokens
from accounts.denylist import deny_access_token
from accounts.models import RefreshTokenFamily, User
from accounts.selectors import PUBLIC_USER_FIELDS
from core.errors import Conflict, InvalidInput, NotAuthenticated, RateLimited, ServiceError, ServiceUnavailable
from core.keyvalue import KeyValueUnavailable
from core.metrics import AUTH_FAILURES
from core.store import get_store
from core.tracing import span

logger = logging.getLogger(__name__)

INVALID_CREDENTIALS = "Invalid username or password."
INVALID_REFRESH_TOKEN = "Refresh token is invalid, expired or revoked."


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"


# --- registration and profile ---------------------------------------------------------------------------


def _validate_new_password(password: str, user: User) -> None:
    try:
        password_validation.validate_password(password, user)
    except DjangoValidationError as exc:
        code = exc.error_list[0].code or "password_invalid"
        raise InvalidInput(loc=["body", "password"], msg=" ".join(exc.messages), type=code) from None


def _ensure_unique(*, username: str | None = None, email: str | None = None, exclude_id: int | None = None) -> None:
    others = User.objects.exclude(pk=exclude_id) if exclude_id else User.objects.all()
    if username is not None and others.filter(username__iexact=username).exists():
        raise Conflict("A user with that username already exists.", code="username_taken")
    if email is not None and others.filter(email__iexact=email).exists():
        raise Conflict("A user with that email address already exists.", code="email_taken")


def _conflict_from_integrity_error(exc: IntegrityError) -> Conflict:
    # A concurrent request won the race past _ensure_unique; the constraint's name says which field.
    if "email" in str(exc):
        return Conflict("A user with that email address already exists.", code="email_taken")
    return Conflict("A user with that username already exists.", code="username_taken")


def user_register(*, username: str, email: str, password: str) -> User:
    from accounts.tasks import send_welcome_email

    user = User(username=username, email=email)
    _validate_new_password(password, user)
    user.password = make_password(password)
    try:
        with transaction.atomic():
            _ensure_unique(username=username, email=email)
            user.save()
            transaction.on_commit(lambda: send_welcome_email.delay(user.pk))
    except IntegrityError as exc:
        raise _conflict_from_integrity_error(exc) from None
    return user


def user_update_profile(*, user: User, email: str | None = None, display_name: str | None = None) -> User:
    changed = []
    if email is not None and email != user.email:
        user.email = email
        changed.append("email")
    if display_name is not None and display_name != user.display_name:
        user.display_name = display_name
        changed.append("display_name")
    if not changed:
        return user
    try:
        with transaction.atomic():
            if "email" in changed:
                _ensure_unique(email=email, exclude_id=user.pk)
            user.save(update_fields=changed)
    except IntegrityError as exc:
        raise _conflict_from_integrity_error(exc) from None
    return user


# --- brute-force guard ----------------------------------------------------------------------------------


def login_guard_key(*, username: str, client_ip: str) -> str:
    """Attempts are counted per username and client address, whichever door they come through (API or form)."""
    return f"login-attempts:{client_ip}:{username.casefold()}"


async def login_attempt_reserve(key: str) -> None:
    """Reserve one attempt before checking a password, so concurrent guesses cannot all slip under the limit.
    Fails closed: with the store unreachable no password is checked at all."""
    try:
        attempts, seconds_left = await get_store().hit(key, settings.LOGIN_FAILURE_WINDOW_SECONDS)
    except KeyValueUnavailable as exc:
        logger.error("login guard unavailable, refusing logins: %s", exc)
        raise ServiceUnavailable(
            "Authentication is temporarily unavailable; try again shortly.", code="auth_unavailable"
        ) from None
    if attempts > settings.LOGIN_MAX_FAILURES:
        raise RateLimited(seconds_left, "Too many failed attempts; try again later.")


async def login_attempt_given_back(key: str) -> None:
    """A reserved attempt that checked no password (the database failed first): it does not count."""
    try:
        await get_store().unhit(key)
    except KeyValueUnavailable as exc:
        logger.warning("could not give back a login attempt: %s", exc)


@asynccontextmanager
async def login_attempt(key: str):
    """One attempt at a password: reserved first (login_attempt_reserve), given back if the database failed
    before the password could be checked, so an outage does not lock anyone out."""
    await login_attempt_reserve(key)
    try:
        yield
    except DatabaseError:
        await login_attempt_given_back(key)
        raise


async def login_attempts_forget(key: str) -> None:
    try:
        await get_store().delete(key)
    except KeyValueUnavailable as exc:
        # The password was right; a stale counter only shortens the next window of attempts.
        logger.warning("could not reset the attempt counter: %s", exc)


def _password_matches(user: User | None, password: str) -> bool:
    if user is None:
        # Hash anyway so an unknown username takes as long as a wrong password (no user enumeration).
        make_password(password)
        return False
    return check_password(password, user.password)


# Hashing is deliberately slow CPU work: run it off the thread that serves the async ORM.
_check_password_off_loop = sync_to_async(_password_matches, thread_sensitive=False)


# --- token lifecycle ------------------------------------------------------------------------------------


def _issue_pair(user: User, family: RefreshTokenFamily, now) -> TokenPair:
    access = tokens.sign_access(user_id=user.pk, generation=user.token_generation, now=now)
    refresh = tokens.sign_refresh(user_id=user.pk, family_id=family.pk, jti=family.current_jti, now=now)
    return TokenPair(
        access_token=access.token, refresh_token=refresh.token, expires_in=settings.JWT_ACCESS_TTL_SECONDS
    )


@transaction.atomic
def _family_start(user: User) -> TokenPair:
    now = timezone.now()
    family = RefreshTokenFamily.objects.create(
        id=uuid.uuid4(),
        user=user,
        current_jti=uuid.uuid4().hex,
        expires_at=now + timedelta(seconds=settings.JWT_REFRESH_TTL_SECONDS),
    )
    User.objects.filter(pk=user.pk).update(last_login=now)
    return _issue_pair(user, family, now)


async def token_obtain(*, username: str, password: str, client_ip: str) -> TokenPair:
    guard_key = login_guard_key(username=username, client_ip=client_ip)
    async with login_attempt(guard_key):
        user = await User.objects.filter(username__iexact=username).afirst()
    if not await _check_password_off_loop(user, password) or not user.is_active:
        AUTH_FAILURES.labels("invalid_credentials").inc()
        raise NotAuthenticated(INVALID_CREDENTIALS, code="invalid_credentials")
    await login_attempts_forget(guard_key)
    return await sync_to_async(_family_start)(user)


def _rotate(claims: dict) -> TokenPair | None:
    """The next pair of the family, or None when the presented token was already rotated (reuse: the family
    is revoked, and that revocation must commit even though the caller is refused)."""
    now = timezone.now()
    with transaction.atomic():
        family = (
            RefreshTokenFamily.objects.select_for_update()
            .select_related("user")
            .filter(pk=claims["fam"], user_id=int(claims["sub"]), revoked_at__isnull=True)
            .first()
        )
        if family is None or not family.user.is_active:
            raise NotAuthenticated(INVALID_REFRESH_TOKEN, code="invalid_token")
        if family.current_jti != claims["jti"]:
            family.revoked_at = now
            family.revoked_reason = RefreshTokenFamily.RevokedReason.REUSE
            family.save(update_fields=["revoked_at", "revoked_reason"])
            logger.warning("refresh token reuse detected; family revoked", extra={"user_id": family.user_id})
            return None
        family.current_jti = uuid.uuid4().hex
        family.last_rotated_at = now
        family.rotations = F("rotations") + 1
        family.expires_at = now + timedelta(seconds=settings.JWT_REFRESH_TTL_SECONDS)
        family.save(update_fields=["current_jti", "last_rotated_at", "rotations", "expires_at"])
        return _issue_pair(family.user, family, now)


def _verified_refresh_claims(refresh_token: str, *, check_expiry: bool = True) -> dict:
    try:
        claims = tokens.verify(refresh_token, token_type=tokens.REFRESH, check_expiry=check_expiry)
        uuid.UUID(str(claims["fam"]))
    except (tokens.InvalidToken, ValueError) as exc:
        logger.info("refresh token refused: %s", exc)
        raise NotAuthenticated(INVALID_REFRESH_TOKEN, code="invalid_token") from None
    return claims


def token_refresh(*, refresh_token: str) -> TokenPair:
    # Attributes: the user id and the outcome; never the token.
    with span("token.refresh") as current:
        try:
            claims = _verified_refresh_claims(refresh_token)
        except NotAuthenticated:
            AUTH_FAILURES.labels("invalid_refresh_token").inc()
            current.set_attribute("token.outcome", "invalid")
            raise
        current.set_attribute("enduser.id", str(claims["sub"]))
        pair = _rotate(claims)
        if pair is None:
            AUTH_FAILURES.labels("refresh_token_reuse").inc()
            current.set_attribute("token.outcome", "reuse")
            raise NotAuthenticated(INVALID_REFRESH_TOKEN, code="invalid_token")
        current.set_attribute("token.outcome", "rotated")
        return pair


async def token_logout(*, user: User, access_claims: dict, refresh_token: str) -> None:
    """Revoke the presented access token and the refresh token's family. An expired refresh token is still
    accepted here: logging out must work for a client that comes back after a week."""
    claims = _verified_refresh_claims(refresh_token, check_expiry=False)
    if int(claims["sub"]) != user.pk:
        raise NotAuthenticated(INVALID_REFRESH_TOKEN, code="invalid_token")
    try:
        await deny_access_token(jti=access_claims["jti"], expires_at=access_claims["exp"])
    except KeyValueUnavailable as exc:
        logger.error("cannot revoke access token: %s", exc)
        raise ServiceUnavailable("Logout is temporarily unavailable; try again shortly.", code="auth_unavailable")
    await RefreshTokenFamily.objects.filter(pk=claims["fam"], user=user, revoked_at__isnull=True).aupdate(
        revoked_at=timezone.now(), revoked_reason=RefreshTokenFamily.RevokedReason.LOGOUT
    )


# --- revocation of everything a user holds --------------------------------------------------------------


@transaction.atomic
def user_log_out_everywhere(*, user: User, reason: str = RefreshTokenFamily.RevokedReason.LOGGED_OUT_EVERYWHERE):
    """Every refresh family revoked, and every access token issued so far refused (generation bump)."""
    RefreshTokenFamily.objects.filter(user=user, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_reason=reason
    )
    User.objects.filter(pk=user.pk).update(token_generation=F("token_generation") + 1)
    user.refresh_from_db(fields=["token_generation"])


def _password_change(user: User, new_password: str) -> None:
    _validate_new_password(new_password, user)
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
        user_log_out_everywhere(user=user, reason=RefreshTokenFamily.RevokedReason.PASSWORD_CHANGE)


async def user_change_password(*, user: User, current_password: str, new_password: str) -> None:
    guard_key = f"password-attempts:{user.pk}"
    await login_attempt_reserve(guard_key)
    if not await _check_password_off_loop(user, current_password):
        raise ServiceError("The current password is incorrect.", code="wrong_password", status=400)
    await login_attempts_forget(guard_key)
    await sync_to_async(_password_change)(user, new_password)


@transaction.atomic
def user_deactivate(*, user: User, actor: User | None = None) -> None:
    if actor is not None and actor.pk == user.pk:
        raise Conflict("Staff cannot deactivate their own account.", code="cannot_deactivate_self")
    User.objects.filter(pk=user.pk).update(is_active=False)
    user.is_active = False
    public_profiles_changed(user_ids=[user.pk])
    user_log_out_everywhere(user=user, reason=RefreshTokenFamily.RevokedReason.DEACTIVATED)
    logger.info("user deactivated", extra={"user_id": user.pk, "actor_id": actor.pk if actor else None})


def user_reactivate(*, user: User) -> None:
    User.objects.filter(pk=user.pk).update(is_active=True)
    user.is_active = True
    public_profiles_changed(user_ids=[user.pk])


def public_profiles_changed(*, user_ids: list[int]) -> None:
    """What these users' public profiles show may have changed (accounts/signals.py, and the bulk updates above):
    once the transaction commits, their cached copies are replaced with the rows as they are then."""

    def replace() -> None:
        public = User.objects.filter(pk__in=user_ids, is_active=True).values(*PUBLIC_USER_FIELDS)
        rows = {row["id"]: row for row in public}
        accounts_cache.profiles_store({user_id: rows.get(user_id) for user_id in user_ids})

    transaction.on_commit(replace)


def welcome_email_send(*, user: User) -> None:
    from django.core.mail import send_mail

    name = user.display_name or user.username
    send_mail(
        subject="Welcome!",
        message=f"Hello {name},\n\nyour account {user.username!r} is ready.\n",
        from_email=None,
        recipient_list=[user.email],
    )


def token_families_purge_expired() -> int:
    """Delete refresh token families past their expiry: every token they issued is refused on its `exp` alone,
    so neither rotation nor reuse detection needs them any more. Returns how many."""
    deleted, _ = RefreshTokenFamily.objects.filter(expires_at__lt=timezone.now()).delete()
    return deleted
