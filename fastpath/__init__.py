"""The speed layer: everything that makes the service fast, under public extension points, behind one switch.

The apps read as plain Django, ninja and Channels code (`await Post.objects.filter(...).afirst()`, endpoints that
return dicts, consumers that subclass `AsyncJsonWebsocketConsumer`); this package makes those calls fast:

- db.py: `LoopManager` / `LoopQuerySet`, the async ORM's reads on the event loop's own psycopg pool;
- cache.py: django-redis' backend with `aget` / `aadd` / `aset` on the event loop (CACHES);
- redis.py: lean per-loop Redis commands and scripts (the cache's calls and the rate limiter's);
- responses.py: response bodies projected onto their schemas without ninja's second pydantic pass;
- middleware.py: Django's middlewares with their hooks inline for /api/ requests (MIDDLEWARE);
- asgi.py: Django's ASGI handler with reused request threads, and the loops that serve (config/asgi.py);
- http.py: uvicorn's protocol with one socket write per response (manage.py serve);
- channels.py: consumers without a thread hop before channel-layer events;
- guards.py, checks.py: the private APIs used above, pinned to the versions they were written for.

FAST_PATH=false turns all of it off: the service is then stock Django + ninja + Channels + uvicorn.
"""
