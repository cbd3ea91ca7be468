"""Daphne's WebSocket write path: the direct `Transport` and the writes straight to Twisted's
sockets (fixes 3 and 5 of the package's list)."""

import contextlib
import logging
import sys

from django.conf import settings

from .. import transport

logger = logging.getLogger(__name__)


# Twisted's private state: read here only, and checked against real Twisted connections (test_daphne.py).


def unsent_bytes(connection) -> int:
    """Bytes written to a Twisted TCP connection and not yet accepted by the kernel."""
    buffered = getattr(connection, "dataBuffer", b"")
    return len(buffered) - getattr(connection, "offset", 0) + getattr(connection, "_tempDataLen", 0)


def writes_straight_through(connection) -> bool:
    """Whether `connection` is a plain (not TLS) Twisted TCP connection, open, with nothing waiting
    in its buffer: a write to its socket now keeps the order of what was written."""
    tcp = sys.modules.get("twisted.internet.tcp")
    return (
        tcp is not None
        and isinstance(connection, tcp.Connection)
        and not connection.TLS
        and connection.connected
        and not connection.disconnecting
        and not connection._writeDisconnected
        and not unsent_bytes(connection)
    )


def _writable(protocol, limit: int) -> bool:
    """Whether a frame may be written to `protocol` now; aborts a client that stopped reading
    (more than `limit` bytes unsent)."""
    if protocol.state != protocol.STATE_OPEN:
        return False  # closing or closed: nothing can be sent any more
    if unsent_bytes(protocol.transport) > limit:
        logger.warning("dropping a client that stopped reading (%s)", protocol.client_addr)
        protocol.transport.abortConnection()
        return False
    return True


class DaphneTransport(transport.Transport):
    """A daphne WebSocket: frames are written straight to its autobahn protocol, without an await."""

    __slots__ = ("protocol", "limit")
    direct = True

    def __init__(self, protocol):
        self.protocol = protocol
        self.limit = settings.CHAT_MAX_SEND_BUFFER  # read once: a settings lookup per frame showed at fan-out

    def write_shared(self, frame: transport.Frame) -> bool:
        protocol = self.protocol
        if not _writable(protocol, self.limit):
            return False
        protocol.sendPreparedMessage(frame.prepared(protocol.factory))
        return True

    def write_text(self, text: str) -> bool:
        protocol = self.protocol
        if not _writable(protocol, self.limit):
            return False
        protocol.sendPreparedMessage(protocol.factory.prepareMessage(text.encode()))
        return True


class DaphneServer(transport.Server):
    def transport(self, send) -> DaphneTransport | None:
        """The daphne WebSocket protocol behind an ASGI `send` callable (daphne's own
        `partial(server.handle_reply, protocol)`), or None: another server's, or wrapped by a
        middleware, which turns the direct writes off (test_live.py checks that they are on)."""
        server = getattr(getattr(send, "func", None), "__self__", None)
        ws_protocol = sys.modules.get("daphne.ws_protocol")
        if ws_protocol is None or not isinstance(server, sys.modules["daphne.server"].Server):
            return None
        protocol = send.args[0] if len(send.args) == 1 else None
        return DaphneTransport(protocol) if isinstance(protocol, ws_protocol.WebSocketProtocol) else None

    def batch(self):
        return corked()


# While `corked()` is open: the frames written to each connection, sent when it closes.
_corked: dict | None = None


@contextlib.contextmanager
def corked():
    """Hold the frames written inside, then send each socket's in one system call: a burst of
    k frames to N sockets costs N writes instead of k x N (the kernel's send was most of the
    event loop's time at full fan-out). Nothing may await inside."""
    global _corked
    if _corked is not None:  # inside another: that one sends
        yield
        return
    _corked = {}
    try:
        yield
    finally:
        held, _corked = _corked, None
        for connection, chunks in held.items():
            _write(connection, b"".join(chunks))


def _write(connection, data: bytes) -> None:
    """`connection.write(data)`, but sent at once when nothing waits before it, as asyncio's
    transports do. Twisted registers the socket for writing and unregisters it again for
    every write: two epoll calls and a pass of the loop, per frame and socket, at fan-out."""
    if _corked is not None:
        _corked.setdefault(connection, []).append(data)
        return
    if not writes_straight_through(connection):
        connection.write(data)
        return
    try:
        sent = connection.socket.send(data)
    except OSError:  # would block, or the connection failed: Twisted's own write sends it or reports it
        sent = 0
    if sent < len(data):
        connection.write(data[sent:])
