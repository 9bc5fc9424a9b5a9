"""Accounts endpoints: registration, tokens, the caller's profile and the user directory."""

from asgiref.sync import sync_to_async
from django.http import HttpResponse
from ninja import Form, Query, Router, Status

from accounts import selectors, services
from accounts.auth import jwt_auth, staff_required
from accounts.schemas import (
    LogoutIn,
    PasswordChangeIn,
    PasswordGrantIn,
    RefreshIn,
    RegisterIn,
    TokenIn,
    TokenPairOut,
    UserOut,
    UserPatchIn,
    UserPublic,
)
from core.net import client_ip
from core.pagination import CursorPage, CursorParams, Page, PageParams
from core.params import ObjectId
from core.paths import api_url, version_of
from core.schemas import INVALID, UNAUTHENTICATED, ErrorOut, RateLimitedOut

auth_router = Router(tags=["auth"])
# New in v2.
password_grant_router = Router(tags=["auth"])
# Both versions, except the directory: offset pages in v1, cursor pages in v2.
users_router = Router(tags=["users"])
users_v1_router = Router(tags=["users"])
users_v2_router = Router(tags=["users"])


@auth_router.post("/register", response={201: UserOut, 409: ErrorOut, **INVALID}, summary="Create an account")
async def register(request, payload: RegisterIn, response: HttpResponse):
    user = await sync_to_async(services.user_register)(
        username=payload.username, email=payload.email, password=payload.password
    )
    response["Location"] = api_url("user", version=version_of(request), user_id=user.pk)
    return Status(201, user)


@auth_router.post(
    "/token",
    response={200: TokenPairOut, **UNAUTHENTICATED, **INVALID, 429: RateLimitedOut, 503: ErrorOut},
    summary="Log in: exchange a username and password for a token pair",
)
async def obtain_token(request, payload: TokenIn):
    return await services.token_obtain(
        username=payload.username, password=payload.password, client_ip=client_ip(request)
    )


@password_grant_router.post(
    "/password-grant",
    response={200: TokenPairOut, **UNAUTHENTICATED, **INVALID, 429: RateLimitedOut, 503: ErrorOut},
    summary="Log in with a form (OAuth 2.0 password grant): what the docs' Authorize dialog uses",
    description="The same login as `POST /auth/token`, with the body as `application/x-www-form-urlencoded` "
    "(`grant_type=password&username=...&password=...`).",
)
async def obtain_token_by_form(request, payload: Form[PasswordGrantIn]):
    return await obtain_token(request, payload)


@auth_router.post(
    "/refresh",
    response={200: TokenPairOut, **UNAUTHENTICATED, **INVALID},
    summary="Rotate a refresh token; the presented one stops working",
)
async def refresh_token(request, payload: RefreshIn):
    return await sync_to_async(services.token_refresh)(refresh_token=payload.refresh_token)


@auth_router.post(
    "/logout",
    auth=jwt_auth,
    response={204: None, **UNAUTHENTICATED, **INVALID, 503: ErrorOut},
    summary="Revoke the refresh token's family and the presented access token",
)
async def logout(request, payload: LogoutIn):
    await services.token_logout(
        user=request.auth, access_claims=request.token_claims, refresh_token=payload.refresh_token
    )
    return Status(204, None)


@users_router.get("/me", auth=jwt_auth, response={200: UserOut, **UNAUTHENTICATED}, summary="The caller's profile")
async def me(request):
    return request.auth


@users_router.patch(
    "/me",
    auth=jwt_auth,
    response={200: UserOut, **UNAUTHENTICATED, 409: ErrorOut, **INVALID},
    summary="Change the caller's email or display name",
)
async def update_me(request, payload: UserPatchIn):
    changes = payload.model_dump(exclude_unset=True, exclude_none=True)
    return await sync_to_async(services.user_update_profile)(user=request.auth, **changes)


@users_router.post(
    "/me/password",
    auth=jwt_auth,
    response={204: None, 400: ErrorOut, **UNAUTHENTICATED, **INVALID, 429: RateLimitedOut, 503: ErrorOut},
    summary="Change the caller's password; every session of the user is logged out",
)
async def change_password(request, payload: PasswordChangeIn):
    await services.user_change_password(
        user=request.auth, current_password=payload.current_password, new_password=payload.new_password
    )
    return Status(204, None)


@users_v1_router.get(
    "/", auth=jwt_auth, response={200: Page[UserPublic], **UNAUTHENTICATED, **INVALID}, summary="Active users"
)
async def list_users(request, params: Query[PageParams]):
    return await selectors.user_public_list(params=params)


@users_v2_router.get(
    "",
    auth=jwt_auth,
    response={200: CursorPage[UserPublic], **UNAUTHENTICATED, **INVALID},
    summary="Active users, oldest first, by cursor",
)
async def list_users_v2(request, params: Query[CursorParams]):
    return await selectors.user_public_cursor_page(cursor=params.cursor, limit=params.limit)


@users_router.get(
    "/{user_id}", url_name="user", response={200: UserPublic, 404: ErrorOut, **INVALID}, summary="One active user"
)
async def get_user(request, user_id: ObjectId):
    return await selectors.user_public_get(user_id=user_id)


@users_router.delete(
    "/{user_id}",
    auth=jwt_auth,
    response={204: None, **UNAUTHENTICATED, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, **INVALID},
    summary="Staff only: deactivate a user (data kept) and revoke all their tokens",
)
@staff_required
async def deactivate_user(request, user_id: ObjectId):
    user = await selectors.user_get_active(user_id=user_id)
    await sync_to_async(services.user_deactivate)(user=user, actor=request.auth)
    return Status(204, None)
