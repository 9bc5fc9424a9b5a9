"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

from core.tracing import setup_tracing, traced_asgi

# Before Django connects to anything: the database driver and Redis client are instrumented in place.
setup_tracing("web")

# Django must be set up before anything imports models (consumers, routing), as get_asgi_application() does.
django.setup(set_prefix=False)

from fastpath.asgi import http_application, serving  # noqa: E402

# Django's ASGI handler; with FAST_PATH on, the speed layer's (fastpath/asgi.py).
django_asgi_app = http_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from chat.middleware import SocketAuthMiddleware  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from core.backends import log_backends_in_use  # noqa: E402
from core.metrics import forget_process_on_exit  # noqa: E402
from core.websocket import browser_origin_validator  # noqa: E402

log_backends_in_use("web server")
forget_process_on_exit()

application = serving(
    ProtocolTypeRouter(
        {
            # Static files (admin, API docs) are served by the app itself, so one image needs no extra web server.
            "http": traced_asgi(ASGIStaticFilesHandler(django_asgi_app)),
            # Origins outside ALLOWED_HOSTS are refused at the handshake; a single-use ticket (API clients) or the
            # session cookie (the browser page) identifies the user (chat/middleware.py).
            "websocket": browser_origin_validator(
                SessionMiddlewareStack(SocketAuthMiddleware(URLRouter(websocket_urlpatterns)))
            ),
        }
    )
)

# Everything loaded by now lives as long as the process: moved out of the cyclic collector's generations, so that
# its collections under load scan only what requests allocate (shorter pauses; README, Performance).
gc.collect()
gc.freeze()
