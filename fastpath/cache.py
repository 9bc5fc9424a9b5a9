"""django-redis' cache backend with its async reads and writes on the event loop.

Django's async cache API (`cache.aget()`, ...) runs the backend's blocking client in a worker thread
(`sync_to_async`): a thread hop per cache call, which made a cached post slower to serve than one read from
PostgreSQL (README, Performance). This backend answers `aget`, `aadd` and `aset` on the event loop instead, through
the lean per-loop connections of fastpath.redis.LoopCommands, with django-redis' own key function and value
encoding: the entries are the very ones its synchronous methods read and replace. Gets, hits and misses are counted
in django-prometheus' cache series as the synchronous `get` counts them. Every other method is django-redis'.
Configured by settings.CACHES when FAST_PATH is on.
"""

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django_prometheus.cache.backends.redis import RedisCache as CountedRedisCache
from django_prometheus.cache.metrics import (
    django_cache_get_fail_total,
    django_cache_get_total,
    django_cache_hits_total,
    django_cache_misses_total,
)

from fastpath.redis import LoopCommands

_REDIS = {"backend": "redis"}

# Django makes a cache backend per thread, and in async code per request (`caches` is context-local): what they
# hold that is costly to make (django-redis' client, the loop's connections) is shared by every backend of one
# configuration instead of made again for each request.
_shared_clients: dict[str, object] = {}
_shared_commands: dict[tuple, LoopCommands] = {}


class RedisCache(CountedRedisCache):
    def __init__(self, server, params) -> None:
        super().__init__(server, params)
        self._configuration = repr((server, params))
        # One server: with several (a list, or replicas), django-redis' client picks one; this leaves them to it.
        self._single_server = isinstance(server, str) and "," not in server
        self._socket_timeout = params.get("OPTIONS", {}).get("SOCKET_TIMEOUT", 2)

    @property
    def client(self):
        if self._client is None:
            client = _shared_clients.get(self._configuration)
            if client is None:
                client = _shared_clients.setdefault(
                    self._configuration, self._client_cls(self._server, self._params, self)
                )
            self._client = client
        return self._client

    def _commands(self) -> LoopCommands | None:
        if not self._single_server:
            return None
        key = (self._server, self._socket_timeout)
        commands = _shared_commands.get(key)
        if commands is None:
            commands = _shared_commands.setdefault(key, LoopCommands(self._server, timeout=self._socket_timeout))
        return commands

    def _ttl_ms(self, timeout) -> int | None:
        seconds = self.default_timeout if timeout is DEFAULT_TIMEOUT else timeout
        return None if seconds is None else int(seconds * 1000)

    async def aget(self, key, default=None, version=None):
        commands = self._commands()
        if commands is None:
            return await super().aget(key, default, version)
        django_cache_get_total.labels(**_REDIS).inc()
        try:
            value = await commands.execute("GET", self.client.make_key(key, version=version))
        except Exception:
            django_cache_get_fail_total.labels(**_REDIS).inc()
            raise
        if value is None:
            django_cache_misses_total.labels(**_REDIS).inc()
            return default
        django_cache_hits_total.labels(**_REDIS).inc()
        return self.client.decode(value)

    async def _aset(self, key, value, ttl, version, *, only_new: bool):
        ttl_ms = self._ttl_ms(ttl)
        command = ["SET", self.client.make_key(key, version=version), self.client.encode(value)]
        if ttl_ms is not None:
            command += ["PX", ttl_ms]
        if only_new:
            command.append("NX")
        return await self._commands().execute(*command)

    def _writes_on_loop(self, timeout) -> bool:
        # A timeout of 0 or less means "expire now", which django-redis turns into a delete: its business.
        return self._commands() is not None and (self._ttl_ms(timeout) or 1) > 0

    async def aset(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):  # noqa: ASYNC109 (Django's signature)
        if not self._writes_on_loop(timeout):
            return await super().aset(key, value, timeout, version)
        await self._aset(key, value, timeout, version, only_new=False)

    async def aadd(self, key, value, timeout=DEFAULT_TIMEOUT, version=None) -> bool:  # noqa: ASYNC109 (Django's)
        if not self._writes_on_loop(timeout):
            return await super().aadd(key, value, timeout, version)
        return await self._aset(key, value, timeout, version, only_new=True) is not None
