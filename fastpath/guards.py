"""Every private part of a library that the speed layer relies on, with the version it was written against.

A private API (a `_name`, a method re-implemented or replaced, an internal's exact behaviour) can change in any
release. The system check below (fastpath/checks.py) refuses to start with FAST_PATH on when an installed version
differs from the one listed here: after an upgrade, read each listed use against the new version's code, run the
suite (with the layer on and off), then update the version here. FAST_PATH=false runs none of it.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class PrivateUse:
    distribution: str  # as pip names it
    version: str
    where: str
    what: str


PRIVATE_USES = (
    PrivateUse(
        "Django",
        "5.2.19",
        "fastpath/db.py",
        "QuerySet.query overridden (QuerySet.query.fget/fset) to build a recorded queryset on first need; "
        "recorded querysets made as copies of a built one's __dict__ (_query, _result_cache, _iterable_class, "
        "_fields, _db, _hints, _sticky_filter, _defer_next_filter, _deferred_filter, _for_write, "
        "_known_related_objects, _prefetch_related_lookups read); QuerySet._chain and "
        "_check_ordering_first_last_queryset_aggregation as first()/get() use them; Query.chain, WhereNode children "
        "replaced in a clone, lookups re-made as Lookup(lhs, rhs); Lookup.process_rhs as a statement's parameters; "
        "SQLCompiler.as_sql/select/col_count/get_converters/apply_converters/has_composite_fields, results_iter fed "
        "fetched rows through a query whose get_compiler returns them; ValuesIterable's dicts made from its names",
    ),
    PrivateUse(
        "Django",
        "5.2.19",
        "fastpath/asgi.py",
        "ASGIHandler.handle re-implemented (read_body, create_request, run_get_response, send_response, "
        "listen_for_disconnect); HttpResponseBase._resource_closers; Signal._live_receivers; base.reset_urlconf; "
        "caches made where the application loads, for requests to inherit (CacheHandler's context-local storage)",
    ),
    PrivateUse(
        "Django",
        "5.2.19",
        "fastpath/middleware.py",
        "MiddlewareMixin.__acall__ overridden; request._messages; SimpleLazyObject._wrapped",
    ),
    PrivateUse(
        "django-csp",
        "4.0",
        "fastpath/middleware.py",
        "CSPMiddleware.process_request/process_response run on the event loop: they must stay free of I/O; for API "
        "responses csp.utils.build_policy() of the settings alone is cached, skipped when a response carries "
        "_csp_config/_csp_update/_csp_replace/_csp_exempt, and DEBUG's 404/500 left without the header as it does",
    ),
    PrivateUse(
        "django-ninja",
        "1.7.1",
        "fastpath/responses.py",
        "Operation._result_to_response replaced per operation; response_models' 'response' field",
    ),
    PrivateUse("django-ninja", "1.7.1", "config/api.py", "Operation._create_response_model (429/503 documented)"),
    PrivateUse("channels", "4.3.2", "fastpath/channels.py", "AsyncConsumer.dispatch replaced"),
    PrivateUse(
        "uvicorn",
        "0.54.0",
        "fastpath/http.py",
        "HttpToolsProtocol.connection_made and handle_websocket_upgrade with a wrapped transport",
    ),
    PrivateUse(
        "redis",
        "8.1.0",
        "fastpath/redis.py",
        "asyncio Connection._writer, pack_command, read_response, connect_check_health",
    ),
    PrivateUse(
        "django-redis",
        "7.0.0",
        "fastpath/cache.py",
        "RedisCache._client/_client_cls/_server/_params (one client per configuration); DefaultClient.make_key/"
        "encode/decode",
    ),
)
