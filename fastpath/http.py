"""uvicorn's httptools protocol, with the writes of one event-loop turn sent to the socket as one.

An ASGI response is at least two messages (`http.response.start`, then `http.response.body`) and uvicorn writes
each to the socket as it comes: two `send` syscalls, and two segments on the wire, for every response. In the
profile of a single-row read they were an eighth of the server's time. Here the transport hands what it is given
to the socket once the current turn of the event loop is over (`call_soon`): headers and body go out together,
in order, and a streamed body still leaves chunk by chunk (each chunk is written after an `await`).

WebSocket connections get the socket's own transport: a frame leaves when it is sent, as before.
"""

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose `write`s within one loop turn reach the wrapped transport as a single `write`.

    Everything that could observe the pending bytes sees them: `close` and `write_eof` send them first,
    `get_write_buffer_size` counts them, `abort` drops them (as the transport's own buffer is dropped).
    """

    __slots__ = ("transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def writelines(self, chunks) -> None:
        for data in chunks:
            self.write(data)

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if self.transport.is_closing():
            return
        self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + sum(map(len, self._pending))

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._pending = []
        self.transport.abort()

    def __getattr__(self, name: str):
        # Everything else (is_closing, get_extra_info, pause_reading, set_protocol, ...) is the transport's own.
        return getattr(self.transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """`uvicorn.Config(http=...)`: uvicorn's HTTP/1.1 protocol on a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(CoalescingTransport(transport, self.loop))

    def handle_websocket_upgrade(self) -> None:
        # The handshake's bytes are not written here, so nothing is pending: the socket protocol gets the raw
        # transport, and this protocol (which uvicorn drops after the upgrade) keeps nothing it would write.
        self.transport.flush()
        self.transport = self.transport.transport
        super().handle_websocket_upgrade()
