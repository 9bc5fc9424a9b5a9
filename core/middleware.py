"""What the contract promises on every response, in one async middleware (one hop, no thread switch)."""

import logging
import re
import time
import uuid

from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse

from core.database import outage
from core.errors import error_response
from core.lifecycle import is_draining
from core.logging import request_id_var, user_id_var
from core.metrics import observe_request
from core.paths import API_PREFIX
from core.tracing import name_request_span

access_logger = logging.getLogger("access")

# Echo a caller's id only when it is a sane token: it ends up in our logs and response headers.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Orchestrators and Prometheus address each pod by its IP, a Host no allow-list can name in advance; these answers
# carry no URL built from the Host, so serving them under any Host poisons nothing.
_ANY_HOST_PATHS = frozenset({"/health", "/ready", "/metrics"})
security_logger = logging.getLogger("django.security.DisallowedHost")
# Responses that carry no body, and must not say how long one would be (RFC 9110 8.6).
_NO_BODY_STATUSES = frozenset({204, 304})


class ContractMiddleware:
    """Request ids, the request body limit, and JSON error bodies for API paths that Django answered itself.

    - `X-Request-ID`: echoed when the client sent a valid one, generated otherwise; bound to the log context.
    - A Host outside ALLOWED_HOSTS is refused with `400` (the probes and /metrics excepted); Django itself checks it
      only when something asks for the host, which most API views never do.
    - A declared body over MAX_REQUEST_BODY_BYTES is refused with `413` before any view reads it.
    - Under /api/, a non-JSON error (an unknown path's `404`, a `405` from the router) becomes the contract's body.
    - Every response with a body in memory says its `Content-Length` (as Django's CommonMiddleware would).
    - A page that fails because the database is unavailable is a `503`, not a `500`.
    - While the process drains before stopping, every response says `Connection: close`.

    Observability rides along in the same hop: the request's metrics (core/metrics.py), its span named by route,
    and one access log line (method, path without the query string, status, duration).
    """

    sync_capable = False
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request):
        started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = request_id_var.set(request_id)
        user_token = user_id_var.set(None)
        try:
            response = await self._respond(request)
            response["X-Request-ID"] = request_id
            if is_draining():
                # The process is about to stop: a keep-alive client takes its next request elsewhere instead of
                # sending it on a connection that the shutdown will close under it.
                response["Connection"] = "close"
            if not response.streaming and response.status_code not in _NO_BODY_STATUSES:
                # Sized, so the server sends the body as it is instead of in chunked encoding.
                response["Content-Length"] = str(len(response.content))
            self._observe(request, response, time.perf_counter() - started)
        finally:
            user_id_var.reset(user_token)
            request_id_var.reset(token)
        return response

    async def process_exception(self, request, exception):
        """A page (the admin, chat) during a database outage: 503 with a short message rather than a 500 and a
        traceback; the outage is logged once, by core/database.py. The API answers its own (config/api.py)."""
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        outage.failed(exception)
        return HttpResponse(
            "The service is briefly unavailable; try again in a moment.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
            headers={"Retry-After": str(settings.DB_OUTAGE_PROBE_SECONDS)},
        )

    @staticmethod
    def _observe(request, response, duration: float) -> None:
        observe_request(request, response, duration)
        match = request.resolver_match
        if match is not None:
            name_request_span(request.method, "/" + match.route)
        access_logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(duration * 1000, 2),
            },
        )

    async def _respond(self, request):
        if request.path not in _ANY_HOST_PATHS:
            try:
                request.get_host()
            except DisallowedHost as exc:
                security_logger.warning("%s", exc)
                return error_response(400, "The Host header names no host this service answers for.", "bad_host")
        declared_length = request.META.get("CONTENT_LENGTH") or "0"
        if declared_length.isdigit() and int(declared_length) > settings.MAX_REQUEST_BODY_BYTES:
            return error_response(
                413, f"Request body exceeds the limit of {settings.MAX_REQUEST_BODY_BYTES} bytes.", "payload_too_large"
            )
        response = await self.get_response(request)
        if (
            response.status_code >= 400
            and request.path.startswith(API_PREFIX)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            replacement = error_response(response.status_code, response.reason_phrase)
            if response.has_header("Allow"):
                replacement["Allow"] = response["Allow"]
            return replacement
        return response
