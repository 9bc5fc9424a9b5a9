"""The hot path of API requests: Django's own middlewares without their thread hops, and reused request threads.

Under ASGI, Django runs each hook of a `MiddlewareMixin` middleware (`process_request`, `process_view`,
`process_response`) through `sync_to_async`: a hand-off to the request's thread and back, seven middlewares deep,
about a dozen per request. For API requests those hooks do no I/O (security and clickjacking headers, the CORS
check, a lazy session and user, the CSRF cookie), so the subclasses below run them inline on the event loop:
the same code, with the same results, in the same order. The exceptions still go through a thread, exactly as
before: a session that must be saved, messages that were used or added, CSRF secrets kept in the session.

Every other path (the admin, the chat pages and their forms) takes Django's unchanged route: those views are
synchronous, their session and messages are read and written in the request's thread, and they are not hot.

`ASGIHandler` gives each request a thread of its own, as Django's does (`ThreadSensitiveContext`: every
`sync_to_async` call of one request, ORM queries included, runs on one thread, the one holding its database
connection), but takes it from a pool of idle ones instead of starting a thread and joining it per request.
"""

import asyncio
import contextlib
import contextvars
import functools
import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.messages.storage import default_storage
from django.contrib.sessions import middleware as sessions
from django.core import signals
from django.core.cache import close_caches
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler
from django.core.handlers.asgi import get_script_prefix
from django.db import close_old_connections, reset_queries
from django.middleware import clickjacking, csrf, security
from django.urls import set_script_prefix
from django.utils.functional import SimpleLazyObject, empty

API_PREFIX = "/api/"


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


# settings.MIDDLEWARE names Django's classes (so that Django's own checks, `check --deploy` included, see them);
# the server's handler loads these in their place.
INLINE_FOR_API = {
    "django.middleware.security.SecurityMiddleware": SecurityMiddleware,
    "django.contrib.sessions.middleware.SessionMiddleware": SessionMiddleware,
    "django.middleware.csrf.CsrfViewMiddleware": CsrfViewMiddleware,
    "django.contrib.auth.middleware.AuthenticationMiddleware": AuthenticationMiddleware,
    "django.contrib.messages.middleware.MessageMiddleware": MessageMiddleware,
    "django.middleware.clickjacking.XFrameOptionsMiddleware": XFrameOptionsMiddleware,
}


class ASGIHandler(DjangoASGIHandler):
    """Django's ASGI handler with the middlewares of INLINE_FOR_API in place of Django's, and each request's thread
    borrowed from a pool of idle ones (see the module)."""

    # Idle threads kept for the next requests; more are started when more requests run at once.
    max_idle_threads = 64

    def __init__(self):
        super().__init__()
        self._idle: list[ThreadPoolExecutor] = []
        self._idle_lock = threading.Lock()

    def load_middleware(self, is_async=False):
        # Django's own loader, resolving the dotted paths of INLINE_FOR_API to the subclasses (once, at startup).
        original = base.import_string
        base.import_string = lambda path: INLINE_FOR_API.get(path) or original(path)
        try:
            super().load_middleware(is_async=is_async)
        finally:
            base.import_string = original

    async def handle(self, scope, receive, send):
        """Django's `handle`, less what API requests that ran nothing in their thread (reads go through fastpath/db.py
        and core/cache.py on the loop) do not need, when every receiver of the request signals is one of Django's
        own: the `request_started` signal is not sent and the response is closed inline without `request_finished`
        (two thread hops in Django, and then receivers that find nothing to do: see _KNOWN_RECEIVERS). A request
        that did use its thread (a write: Django's connection lives there) is closed there, as Django does."""
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        if not path.startswith(API_PREFIX) or not _only_known_receivers():
            return await super().handle(scope, receive, send)
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        # No request_started: its receivers (reset_queries, close_old_connections) act on the database connections
        # of the thread they run in. The request's thread comes from the idle pool, and a request that opened a
        # connection there closed it at its end (request_finished, below): there is nothing to close. Query logs
        # are kept with DEBUG only, capped by Django.
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            await sync_to_async(error_response.close)()
            return

        async def process_request(request, send):
            response = await self.run_get_response(request)
            with contextlib.suppress(asyncio.CancelledError):
                await self.send_response(response, send)
            return response

        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            thread = _request_thread.get(None)
            if response.streaming or thread is None or thread.used:
                # The request ran code in its thread (Django's connection lives there): closed there, as Django does.
                await sync_to_async(response.close)()
            else:
                _close_without_request_finished(response)
        body_file.close()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        with self._idle_lock:
            executor = self._idle.pop() if self._idle else None
        if executor is None:
            executor = _RequestThread(max_workers=1, thread_name_prefix="request")
        executor.used = False
        token = _request_thread.set(executor)
        try:
            # The caller owns the executor: leaving the context does not shut it down.
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            _request_thread.reset(token)
            with self._idle_lock:
                keep = len(self._idle) < self.max_idle_threads
                if keep:
                    self._idle.append(executor)
            if not keep:
                executor.shutdown(wait=False)


# Django's own receivers of the request signals: with only these connected, handle() leaves the signals out for
# API requests that never used their thread (there is nothing for them to do).
_KNOWN_RECEIVERS = {
    signals.request_started: {reset_queries, close_old_connections},
    signals.request_finished: {close_old_connections, close_caches, base.reset_urlconf},
}


# The answer of _only_known_receivers for the receivers and settings it last saw.
_known_receivers_answer: tuple[tuple, bool] = ((), False)


def _only_known_receivers() -> bool:
    # Asked on every request: answered again only when a receiver was connected or disconnected (or, in tests,
    # the settings were overridden).
    global _known_receivers_answer
    state = (*(tuple(lookup for lookup, *_ in signal.receivers) for signal in _KNOWN_RECEIVERS), id(settings._wrapped))
    seen, answer = _known_receivers_answer
    if seen != state:
        answer = _check_known_receivers()
        _known_receivers_answer = (state, answer)
    return answer


def _check_known_receivers() -> bool:
    if settings.CACHES and any(cache.get("OPTIONS", {}).get("CLOSE_CONNECTION") for cache in settings.CACHES.values()):
        return False
    if getattr(settings, "DJANGO_REDIS_CLOSE_CONNECTION", False):
        return False
    for signal, known in _KNOWN_RECEIVERS.items():
        sync_receivers, async_receivers = signal._live_receivers(ASGIHandler)
        if async_receivers or not set(sync_receivers) <= known:
            return False
    return True


def _close_without_request_finished(response) -> None:
    """`HttpResponseBase.close()` less its `request_finished`, whose known receivers have nothing to do for a request
    that never used its thread: close_old_connections (this thread has no connection), close_caches (django-redis
    keeps its pool: CLOSE_CONNECTION is off, or this path is not taken), reset_urlconf (the URLconf was set in this
    request's own context, which ends with it)."""
    for closer in response._resource_closers:
        with contextlib.suppress(Exception):
            closer()
    response._resource_closers.clear()
    response.closed = True


class _RequestThread(ThreadPoolExecutor):
    """A request's thread, which knows whether the request ran anything in it (Django's connections, which are
    thread-local, are opened there and only there)."""

    used = False

    def submit(self, *args, **kwargs):
        self.used = True
        return super().submit(*args, **kwargs)


_request_thread: contextvars.ContextVar[_RequestThread] = contextvars.ContextVar("request_thread")
