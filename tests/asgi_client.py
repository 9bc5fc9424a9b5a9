"""A Django test client whose API requests take the production path: the project's ASGI application, on one event
loop (uvloop, as `manage.py serve` runs) that lives as long as the test session.

Django's own test client calls the view stack directly (no ASGI handler, and every async view on a loop made for
that one request), so it never runs what the service runs in production: the speed layer's handler and
middlewares, the event loop's database pool, the cache backend's loop calls. This one sends every `/api/` request
through `fastpath.asgi.serving(http_application())` with FAST_PATH on, or Django's own ASGI handler with it off,
and gives back a response the way Django's client does (`.json()`, headers, cookies, exceptions re-raised).
Other paths (admin, pages) keep Django's handler.

The requests run in the handler's threads and on the loop's pool, not on the test's connection: tests that use
this client commit their data (`django_db(transaction=True)`), like tests against a live server.
"""

import asyncio
import threading
from http.cookies import SimpleCookie
from urllib.parse import quote_from_bytes

import uvloop
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpResponse
from django.test import Client

from fastpath import db as loop_db
from fastpath.asgi import http_application, serving

API_PREFIX = "/api/"
REQUEST_TIMEOUT_SECONDS = 60


class ServingLoop:
    """The session's serving loop, in a thread of its own, with the application it runs."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="asgi-test-loop", daemon=True)
        self.thread.start()
        self.application = serving(http_application())

    def run(self, coroutine, timeout: float = REQUEST_TIMEOUT_SECONDS):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.run(loop_db.close_pool())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def _scope(environ: dict) -> dict:
    headers = [
        (name[5:].replace("_", "-").lower().encode("latin-1"), str(value).encode("latin-1"))
        for name, value in environ.items()
        if name.startswith("HTTP_")
    ]
    for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(name):
            headers.append((name.replace("_", "-").lower().encode(), str(environ[name]).encode("latin-1")))
    # WSGI carries the decoded path's bytes as a latin-1 string; ASGI, as the server gives it, the path decoded as
    # UTF-8 and the bytes as they came, percent-encoded.
    path_bytes = environ["PATH_INFO"].encode("latin-1")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": environ["REQUEST_METHOD"],
        "scheme": environ.get("wsgi.url_scheme", "http"),
        "path": path_bytes.decode("utf-8", errors="replace"),
        "raw_path": quote_from_bytes(path_bytes, safe="/:@!$&'()*+,;=-._~").encode("ascii"),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": (environ.get("REMOTE_ADDR", "127.0.0.1"), 50000),
        "server": (environ.get("SERVER_NAME", "testserver"), int(environ.get("SERVER_PORT", 80))),
    }


async def _exchange(application, scope: dict, body: bytes) -> tuple[dict, list[dict]]:
    """Runs one request through the application: its `http.response.start` and its body messages."""
    finished = asyncio.Event()
    sent: list[dict] = []
    received = False

    async def receive():
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            finished.set()

    try:
        await application(scope, receive, send)
    finally:
        finished.set()
    return sent[0], [message for message in sent[1:] if message["type"] == "http.response.body"]


def _response(start: dict, bodies: list[dict]):
    # Streamed or not, the whole body, as a client reads it.
    response = HttpResponse(b"".join(message.get("body", b"") for message in bodies))
    response.status_code = start["status"]
    del response["Content-Type"]
    for raw_name, raw_value in start.get("headers", []):
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        if name.lower() == "set-cookie":
            response.cookies.load(SimpleCookie(value))
        elif name in response.headers:
            response.headers[name] = f"{response.headers[name]}, {value}"
        else:
            response.headers[name] = value
    return response


class _Handler:
    def __init__(self, serving_loop: ServingLoop, django_handler) -> None:
        self.serving_loop = serving_loop
        self.django_handler = django_handler

    def __call__(self, environ: dict):
        if not environ["PATH_INFO"].startswith(API_PREFIX):
            return self.django_handler(environ)
        body = environ["wsgi.input"].read()
        start, bodies = self.serving_loop.run(_exchange(self.serving_loop.application, _scope(environ), body))
        response = _response(start, bodies)
        # What Django's client reads back (the URLconf the request resolved with, for resolver_match).
        response.wsgi_request = WSGIRequest(environ)
        return response


class ASGIClient(Client):
    def __init__(self, serving_loop: ServingLoop, **defaults) -> None:
        super().__init__(**defaults)
        self.handler = _Handler(serving_loop, self.handler)
