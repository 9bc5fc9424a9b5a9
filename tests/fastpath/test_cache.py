"""fastpath.cache.RedisCache on real Redis: the backend Django makes per request context shares what is costly to
make, and the application's loop hands its requests the backends made when it loaded."""

import asyncio
import contextvars

from django.core.cache import caches

from fastpath.asgi import http_application


def test_backends_of_one_configuration_share_their_client_and_connections():
    first, second = caches.create_connection("default"), caches.create_connection("default")
    assert first is not second
    assert first.client is second.client
    assert first._commands() is second._commands()


async def test_every_request_reads_with_the_same_connections():
    backends = [caches.create_connection("default") for _ in range(3)]
    await asyncio.gather(*(backend.aset(f"t-cache:{i}", i, 30) for i, backend in enumerate(backends)))
    assert [await backend.aget(f"t-cache:{i}") for i, backend in enumerate(backends)] == [0, 1, 2]
    # One pool of the loop's connections for all three backends: at most the calls made at once were opened.
    pool = backends[0]._commands()._pool()
    assert pool.created <= 3 and pool.created == len(pool.idle)


def test_requests_inherit_the_backends_made_where_the_application_loads():
    def load_then_serve():
        http_application()
        loaded = caches["default"]
        # A request's context is a copy of the one the server loaded the application in.
        return loaded, contextvars.copy_context().run(lambda: caches["default"])

    loaded, in_request = contextvars.Context().run(load_then_serve)
    assert in_request is loaded
