"""One POST to an address the SSRF guard checked: pinned to it, bounded in time, no redirect followed."""

import contextlib
import http.client
import socket
import ssl
import threading
from dataclasses import dataclass

from django.conf import settings

from webhooks.services.targets import Target

# What is read of a failed answer, to show its owner why; the rest is never read.
_ERROR_SNIPPET_BYTES = 300
# Addresses tried per request when a host has several.
_MAX_ADDRESSES_TRIED = 3


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to an address already checked, whatever the host name would resolve to now. The host name is still
    the Host header, the TLS server name and what the certificate is checked against."""

    def __init__(self, target: Target, addresses: list[str]) -> None:
        super().__init__(target.host, target.port, timeout=settings.WEBHOOK_READ_TIMEOUT_SECONDS)
        self.addresses = addresses[:_MAX_ADDRESSES_TRIED]
        self.tls = ssl.create_default_context() if target.scheme == "https" else None

    def connect(self) -> None:
        error: OSError | None = None
        for address in self.addresses:
            try:
                sock = socket.create_connection((address, self.port), timeout=settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS)
                break
            except OSError as exc:
                error = exc
        else:
            raise error or OSError("no address to connect to")
        sock.settimeout(self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host) if self.tls else sock


@dataclass(frozen=True)
class Answer:
    status: int
    snippet: str
    retry_after: int | None


def _cut(connection: _PinnedConnection, fired: threading.Event) -> None:
    """The whole exchange took too long (a receiver trickling bytes defeats per-read timeouts): wake the blocked
    read by shutting the socket down under it."""
    fired.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def post(target: Target, addresses: list[str], headers: dict[str, str], body: bytes) -> Answer:
    """One request, no redirect followed. Raises OSError or http.client.HTTPException on network failures."""
    connection = _PinnedConnection(target, addresses)
    fired = threading.Event()
    deadline = settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS + settings.WEBHOOK_READ_TIMEOUT_SECONDS
    timer = threading.Timer(deadline, _cut, (connection, fired))
    timer.daemon = True
    timer.start()
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        snippet = b"" if 200 <= response.status < 300 else response.read(_ERROR_SNIPPET_BYTES)
        if fired.is_set():
            # Cut off mid-answer: what was parsed is not an answer (http.client takes the end of input for the end
            # of the headers).
            raise TimeoutError(f"no complete answer within {deadline} s")
        retry_after = response.headers.get("Retry-After", "").strip()
        return Answer(
            status=response.status,
            snippet=snippet.decode("utf-8", "replace").strip(),
            retry_after=int(retry_after) if retry_after.isdigit() else None,
        )
    except (OSError, http.client.HTTPException) as exc:
        if fired.is_set():
            raise TimeoutError(f"no complete answer within {deadline} s") from exc
        raise
    finally:
        timer.cancel()
        connection.close()
