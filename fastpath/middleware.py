"""Django's own middlewares, with their hooks run on the event loop for API requests (no thread hop per hook).

Under ASGI, Django runs each hook of a `MiddlewareMixin` middleware (`process_request`, `process_view`,
`process_response`) through `sync_to_async`: a hand-off to the request's thread and back, seven middlewares deep,
about a dozen per request. For API requests those hooks do no I/O (security and clickjacking headers, the CORS
check, a lazy session and user, the CSRF cookie), so the subclasses below run them inline on the event loop:
the same code, with the same results, in the same order. The exceptions still go through a thread, exactly as
before: a session that must be saved, messages that were used or added, CSRF secrets kept in the session.

Every other path (the admin, the chat pages and their forms) takes Django's unchanged route: those views are
synchronous, their session and messages are read and written in the request's thread, and they are not hot.
With FAST_PATH on, settings.MIDDLEWARE lists these classes in place of Django's.
"""

import functools

import csp.constants
import csp.middleware
import csp.utils
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.messages.storage import default_storage
from django.contrib.sessions import middleware as sessions
from django.middleware import clickjacking, csrf, security
from django.utils.functional import SimpleLazyObject, empty

from core.paths import API_PREFIX


def inline(request) -> bool:
    """Whether this request's middleware hooks may run on the event loop."""
    return request.path_info.startswith(API_PREFIX)


class _InlineForAPI:
    """Mixed into a `MiddlewareMixin` middleware: for API requests its hooks run inline, for the rest Django's
    own `__acall__` runs them in the request's thread. `response_needs_thread` names the exceptions."""

    def runs_inline(self, request) -> bool:
        return inline(request)

    def response_needs_thread(self, request) -> bool:
        return False

    async def __acall__(self, request):
        if not self.runs_inline(request):
            return await super().__acall__(request)
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            if self.response_needs_thread(request):
                return await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
            response = self.process_response(request, response)
        return response


class SecurityMiddleware(_InlineForAPI, security.SecurityMiddleware):
    """HTTPS redirect, HSTS, nosniff, Referrer-Policy, COOP: header arithmetic only."""


class SessionMiddleware(_InlineForAPI, sessions.SessionMiddleware):
    """The session is lazy: nothing is read unless someone looks at it (the chat API's session auth does, in its
    own thread). Saving it is I/O, so a modified session is saved in the request's thread."""

    def response_needs_thread(self, request) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class CsrfViewMiddleware(_InlineForAPI, csrf.CsrfViewMiddleware):
    """Reads and sets the CSRF cookie. API operations are exempt from this middleware's check: django-ninja makes
    its own, the same one, for session-authenticated operations (the chat API), whatever runs here."""

    def __init__(self, get_response):
        super().__init__(get_response)
        if self.async_mode:
            # Django hands a synchronous process_view to a thread; a coroutine it awaits as it is.
            self.process_view = self._process_view_async

    def runs_inline(self, request) -> bool:
        # With CSRF_USE_SESSIONS the secret lives in the session: reading it is I/O.
        return inline(request) and not settings.CSRF_USE_SESSIONS

    async def _process_view_async(self, request, callback, callback_args, callback_kwargs):
        if self.runs_inline(request):
            return super().process_view(request, callback, callback_args, callback_kwargs)
        return await sync_to_async(super().process_view, thread_sensitive=True)(
            request, callback, callback_args, callback_kwargs
        )


class AuthenticationMiddleware(_InlineForAPI, auth.AuthenticationMiddleware):
    """Sets the lazy `request.user` and `request.auser`; nothing is queried until they are used."""


class MessageMiddleware(_InlineForAPI, messages.MessageMiddleware):
    """For API requests the message storage is made on first use (the API sends no Django messages: building the
    storage and its cookie signer was pure cost); storing messages, if something did add some, touches the
    session: a thread."""

    def process_request(self, request):
        if not inline(request):
            return super().process_request(request)
        request._messages = SimpleLazyObject(functools.partial(default_storage, request))

    def process_response(self, request, response):
        if _untouched(getattr(request, "_messages", None)):
            return response
        return super().process_response(request, response)

    def response_needs_thread(self, request) -> bool:
        storage = getattr(request, "_messages", None)
        return not _untouched(storage) and storage is not None and (storage.used or storage.added_new)


def _untouched(storage) -> bool:
    return isinstance(storage, SimpleLazyObject) and storage._wrapped is empty


class XFrameOptionsMiddleware(_InlineForAPI, clickjacking.XFrameOptionsMiddleware):
    """`X-Frame-Options: DENY` on every response, API ones included."""


class CSPMiddleware(_InlineForAPI, csp.middleware.CSPMiddleware):
    """django-csp's `Content-Security-Policy` on every response. API views neither change the policy (django-csp's
    decorators) nor render a nonce, so for an API response the header is the settings' policy alone: built once
    per settings value instead of once per request (31 µs of a read of about 500). Anything else, a response that
    carries a policy of its own, or a report-only policy configured, takes django-csp's own path."""

    _built: tuple[object, str] | None = None

    def process_request(self, request):
        if not inline(request):
            return super().process_request(request)
        return None  # no template renders for an API request: no nonce to offer

    def process_response(self, request, response):
        if (
            not inline(request)
            or any(getattr(response, name, None) is not None for name in _OWN_POLICY)
            or getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None)
        ):
            return super().process_response(request, response)
        if settings.DEBUG and response.status_code in (404, 500):
            return response  # as django-csp does: the debug pages keep their inline scripts working
        if csp.constants.HEADER not in response:
            response[csp.constants.HEADER] = self._policy()
        return response

    def _policy(self) -> str:
        config = getattr(settings, "CONTENT_SECURITY_POLICY", None)
        # The settings' value itself is the key: override_settings (the tests) replaces it, never edits it.
        if self._built is None or self._built[0] is not config:
            self._built = (config, csp.utils.build_policy())
        return self._built[1]


# What a view sets on its response to change the policy (django-csp's decorators).
_OWN_POLICY = ("_csp_config", "_csp_update", "_csp_replace", "_csp_exempt")
