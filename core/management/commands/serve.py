"""The production ASGI server: uvicorn (uvloop, httptools) with a drain phase before a graceful shutdown.

On SIGTERM (or SIGINT) the process first *drains*: it keeps serving, but `/ready` answers 503 so the load
balancer stops sending new traffic. After `--drain-seconds` it shuts down the uvicorn way: no new connections,
open WebSockets closed with 1012 (clients reconnect elsewhere and backfill), in-flight requests given
`--graceful-seconds` to finish. A second signal skips the drain.
"""

import logging
import signal
import threading

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand
from uvicorn.supervisors import Multiprocess

from core.lifecycle import begin_draining, is_draining
from core.metrics_dir import clear_stale_files
from fastpath.http import CoalescingHttpToolsProtocol

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    drain_seconds: float = 0.0

    def handle_exit(self, sig, frame) -> None:
        if is_draining() or self.drain_seconds <= 0:
            super().handle_exit(sig, frame)
            return
        begin_draining()
        self.drain_timer = threading.Timer(self.drain_seconds, super().handle_exit, args=(sig, frame))
        self.drain_timer.daemon = True
        self.drain_timer.start()


class Command(BaseCommand):
    help = "Serve the ASGI application in production: uvicorn with graceful, draining shutdown."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1, help="server processes sharing the port")
        parser.add_argument("--drain-seconds", type=float, default=settings.SHUTDOWN_DRAIN_SECONDS)
        parser.add_argument("--graceful-seconds", type=float, default=settings.SHUTDOWN_GRACE_SECONDS)

    def handle(self, *args, host: str, port: int, workers: int, drain_seconds: float, graceful_seconds: float, **_):
        # Before any server process records a sample: an earlier run's files would add to this run's
        # (core/metrics_dir.py).
        stale = clear_stale_files()
        if stale:
            logger.info("removed %d metrics files of an earlier run", len(stale), extra={"files": stale})
        config = uvicorn.Config(
            "config.asgi:application",
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            # httptools; with FAST_PATH, each response's headers and body written to the socket at once
            # (fastpath/http.py).
            http=CoalescingHttpToolsProtocol if settings.FAST_PATH else "httptools",
            ws="websockets-sansio",
            # Frames over the limit close the socket with 1009.
            ws_max_size=settings.WEBSOCKET_MAX_MESSAGE_BYTES,
            # Chat frames are small, and compressing each broadcast once per socket was the largest single cost
            # of fan-out in the profile: a room of N sockets would deflate every message N times.
            ws_per_message_deflate=False,
            lifespan="off",
            # Our middleware logs requests (JSON, with request ids); X-Forwarded-For is read by core/net.py.
            access_log=False,
            proxy_headers=False,
            server_header=False,
            log_config=None,
            timeout_graceful_shutdown=graceful_seconds,
        )
        DrainingServer.drain_seconds = drain_seconds
        # uvicorn re-raises the signal it handled once it has shut down; with these handlers underneath, a
        # graceful stop ends the process with status 0 instead of dying by that signal.
        for handled in (signal.SIGTERM, signal.SIGINT):
            signal.signal(handled, lambda *_: None)
        server = DrainingServer(config)
        if workers > 1:
            # uvicorn >= 0.54 runs a plain uvicorn.Server in each worker process (it takes no target any more):
            # workers shut down gracefully on SIGTERM, without the /ready drain phase.
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server.run()
