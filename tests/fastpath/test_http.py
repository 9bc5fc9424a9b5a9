"""fastpath.http: what a real uvicorn server on the coalescing transport sends, byte for byte and call by call."""

import asyncio
import socket

import pytest
import uvicorn

from fastpath.http import CoalescingHttpToolsProtocol, CoalescingTransport


class RecordingSocket(asyncio.Protocol):
    """The client end of a socket pair on the same loop: keeps every chunk the server's writes delivered."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)


async def app(scope, receive, send):
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    body = b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class CountingTransport:
    """Wraps the server side's real transport and counts the writes that reach it."""

    def __init__(self, transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name):
        return getattr(self.transport, name)


async def serve_one_connection(request: bytes, *, settle: float = 0.3):
    loop = asyncio.get_running_loop()
    config = uvicorn.Config(app, http=CoalescingHttpToolsProtocol, lifespan="off", log_config=None)
    config.load()
    server_state = uvicorn.server.ServerState()
    protocol = CoalescingHttpToolsProtocol(config=config, server_state=server_state, app_state={}, _loop=loop)
    server_socket, client_socket = socket.socketpair()

    def factory():
        return protocol

    transport, _ = await loop.connect_accepted_socket(factory, server_socket)
    # Count what the coalescing transport hands the socket's transport.
    counting = CountingTransport(protocol.transport.transport)
    protocol.transport.transport = counting
    client_transport, client = await loop.connect_accepted_socket(RecordingSocket, client_socket)
    client_transport.write(request)
    await asyncio.sleep(settle)
    client_transport.close()
    transport.close()
    await asyncio.sleep(0.01)
    return counting.writes, b"".join(client.chunks)


async def test_headers_and_body_reach_the_socket_in_one_write():
    writes, received = await serve_one_connection(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert len(writes) == 1
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"\r\n\r\n" + b'{"ok":true}')
    assert b"content-length: 11\r\n" in received


async def test_pipelined_responses_keep_their_order():
    requests = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n"
    writes, received = await serve_one_connection(requests)
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert received.count(b'{"ok":true}') == 2
    assert len(writes) <= 2


async def test_a_streamed_body_still_leaves_chunk_by_chunk():
    writes, received = await serve_one_connection(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n", settle=0.5)
    # Headers with the first chunk, then one write per later chunk, then the terminating chunk.
    assert len(writes) == 4
    assert b"one," in writes[0] and b"two," in writes[1] and b"three" in writes[2]
    assert writes[3] == b"0\r\n\r\n"
    assert received.endswith(b"0\r\n\r\n")


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0


async def test_close_sends_what_is_pending_first_and_abort_drops_it():
    loop = asyncio.get_running_loop()
    closing = CoalescingTransport(RecordingTransport(), loop)
    closing.write(b"a")
    closing.write(b"b")
    assert closing.get_write_buffer_size() == 2
    closing.close()
    assert closing.transport.writes == [b"ab"] and closing.transport.closed
    aborting = CoalescingTransport(RecordingTransport(), loop)
    aborting.write(b"lost")
    aborting.abort()
    await asyncio.sleep(0)
    assert aborting.transport.writes == [] and aborting.transport.aborted


@pytest.mark.parametrize("method", ["is_closing", "get_extra_info"])
def test_everything_else_is_the_transport_s_own(method):
    inner = RecordingTransport()
    inner.get_extra_info = lambda *args: "peer"
    wrapper = CoalescingTransport(inner, None)
    assert getattr(wrapper, method) == getattr(inner, method)
