"""The ASGI side of the speed layer: Django's handler with reused request threads, and the loops that serve.

`ASGIHandler` gives each request a thread of its own, as Django's does (`ThreadSensitiveContext`: every
`sync_to_async` call of one request, ORM queries included, runs on one thread, the one holding its database
connection), but takes it from a pool of idle ones instead of starting a thread and joining it per request. API
requests that never used that thread (their reads ran on the event loop: fastpath/db.py, fastpath/cache.py) skip
the request signals, whose known receivers would have nothing to do (`handle`).

`serving(application)` marks each loop the application runs on as one that serves requests for the life of the
process: the reads of fastpath/db.py open their pool only there.

With FAST_PATH off, `http_application()` is Django's own `ASGIHandler` and `serving` adds nothing.
"""

import asyncio
import contextlib
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.cache import caches, close_caches
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler
from django.core.handlers.asgi import get_script_prefix
from django.db import close_old_connections, reset_queries
from django.urls import set_script_prefix

from core.paths import API_PREFIX
from fastpath.db import serve_on_this_loop


def http_application():
    """Django's HTTP application: this module's handler with FAST_PATH on, Django's own with it off. Call after
    `django.setup()`, where the server loads the application."""
    if not settings.FAST_PATH:
        return DjangoASGIHandler()
    # Django's cache backends are context-local, so in async code each request would make its own on first use (a
    # tenth of a cached read). Made here, where the server loads the application, they are in the context its
    # loop's requests are copied from: they share these (requests in worker threads still make their own).
    for alias in settings.CACHES:
        caches[alias]
    return ASGIHandler()


def serving(application):
    """`application`, marking the loop of every connection it serves (see the module)."""
    if not settings.FAST_PATH:
        return application

    async def app(scope, receive, send):
        serve_on_this_loop()
        return await application(scope, receive, send)

    return app


class ASGIHandler(DjangoASGIHandler):
    """Django's ASGI handler with each request's thread borrowed from a pool of idle ones, and API requests that
    ran nothing in their thread closed without the request signals (see the module)."""

    # Idle threads kept for the next requests; more are started when more requests run at once.
    max_idle_threads = 64

    def __init__(self):
        super().__init__()
        self._idle: list[ThreadPoolExecutor] = []
        self._idle_lock = threading.Lock()

    async def handle(self, scope, receive, send):
        """Django's `handle`, less what API requests that ran nothing in their thread (reads go through fastpath/db.py
        and fastpath/cache.py on the loop) do not need, when every receiver of the request signals is one of Django's
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
