"""Daphne as this project's server: its direct `Transport`, and every fix to daphne, autobahn and
Twisted, applied when daphne serves this process (`patch_daphne`, from chatproject/asgi.py).

The only module that knows daphne, autobahn or Twisted. Each fix names what it works around
upstream and the test that fails without it (drop the fix when that test passes without it):

1. Close frames with every code and its reason (`patched_handle_reply`). Daphne 4.2 drops a
   `websocket.close`'s reason (django/daphne#374, crossbario/autobahn-python#1642) and passes
   the code to autobahn's `sendClose`, which refuses every 1xxx code but 1000: a consumer closing
   with 1008, 1009, 1011 or 1013 raised inside daphne, the client saw a bare 1011 a second later,
   and the consumer's `disconnect` never ran. This sends the close frame itself, as daphne does
   for its own 1011. Test: test_live.py::test_refusals_arrive_as_close_codes_after_the_handshake.
2. At shutdown, close every open socket with 1001 and let each consumer's `disconnect` run
   (`_close_sockets_on_shutdown`): daphne cancels its applications with no close frame
   (django/daphne#38 was closed as done by Twisted; it is not, for daphne 4's ASGI instances).
   Test: test_live.py::test_shutdown_closes_sockets_1001.
3. Drop a client that stopped reading (`_writable`): daphne buffers without end; once more than
   CHAT_MAX_SEND_BUFFER bytes wait in the socket's write buffer the connection is aborted, and the
   client recovers with `join since`. No upstream issue. Test:
   test_overload.py::test_slow_consumer_does_not_hold_back_the_others.
4. Autobahn formats the arguments of a debug log line, with terminal colours, for every frame it
   sends, whether or not debug logging is on: about a tenth of the server's time at full fan-out.
   Its `hltype`/`hlval` helpers become pass-throughs. No upstream issue; a measurement, in
   bench/README.md ("make bench"), not a test.
5. Write each frame to the socket at once when nothing waits before it (`_write`), as asyncio's
   transports do, instead of registering the socket with epoll and writing on the loop's next
   pass; and a burst of frames to many sockets with one write per socket (`corked`). Twisted's
   `FileDescriptor.write` always defers. Tests: test_daphne.py (against real Twisted connections)
   and test_live.py::test_the_hub_writes_straight_to_daphnes_sockets.
6. No reference cycle per connection (`_break_cycles`): a closed connection's objects are freed
   when it closes, not at the next full collection. No upstream issue. Test:
   test_live.py::test_a_closed_connection_leaves_nothing_for_the_garbage_collector.
7. WebSocket protocol violations close with a close frame (1002, 1007) instead of a TCP reset, and
   a frame or message over CHAT_MAX_FRAME_BYTES closes with 1009 from its header
   (`_websocket_limits`): autobahn's default `failByDrop` drops the connection, and daphne's own
   limits (1 MiB) were above ours. Test: test_security_frames.py.
8. HTTP responses go out only as fast as the client reads them (`_flow_controlled_responses`):
   daphne writes every body chunk into Twisted's buffer at once (ten clients that never read a
   large export made the server hold it all: +500 MB). The app's `send` waits while Twisted's
   transport is paused; a client that reads nothing for CHAT_HTTP_SEND_TIMEOUT_S is dropped.
   Test: test_security_export.py::test_stalled_export_clients_keep_the_servers_memory_flat.
9. A request body over CHAT_MAX_REQUEST_BYTES (CHAT_MAX_UPLOAD_BYTES for uploads) is refused with 413
   from its Content-Length, before it is read (`_refuse_large_bodies`): daphne reads every body whole before the app sees it.
   Test: test_security_export.py::test_a_body_over_the_limit_is_refused_from_its_content_length_before_it_is_read.
10. An upload's body reaches the app as the file Twisted wrote it to, not in memory
   (`_hand_over_upload_bodies`): Twisted parsed every multipart body with the email package
   (`_parsePOSTFormSubmission`, unused by daphne) and daphne then read the whole body into its
   queue, both on the event loop, which held back every message of the process and kept each
   upload in memory. No upstream issue. Tests: test_uploads_live.py; the figures in bench/README.md
   (item 28).
"""

import asyncio
import contextlib
import logging
import sys

from django.conf import settings

from chat import protocol as chat_protocol
from chat.uploads.limit import UPLOAD_PATH, body_limit, too_large_body

from . import transport

logger = logging.getLogger(__name__)

MAX_REASON_BYTES = 123  # a close frame's payload is at most 125 bytes, 2 of them the code
SHUTDOWN_GRACE_S = 2.0  # time the consumers get to run `disconnect` (presence) before being cancelled


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


def _writable(protocol) -> bool:
    """Whether a frame may be written to `protocol` now; aborts a client that stopped reading."""
    if protocol.state != protocol.STATE_OPEN:
        return False  # closing or closed: nothing can be sent any more
    if unsent_bytes(protocol.transport) > settings.CHAT_MAX_SEND_BUFFER:
        logger.warning("dropping a client that stopped reading (%s)", protocol.client_addr)
        protocol.transport.abortConnection()
        return False
    return True


class DaphneTransport(transport.Transport):
    """A daphne WebSocket: frames are written straight to its autobahn protocol, without an await."""

    __slots__ = ("protocol",)
    direct = True

    def __init__(self, protocol):
        self.protocol = protocol

    def write_shared(self, frame: transport.Frame) -> bool:
        protocol = self.protocol
        if not _writable(protocol):
            return False
        protocol.sendPreparedMessage(frame.prepared(protocol.factory))
        return True

    def write_text(self, text: str) -> bool:
        protocol = self.protocol
        if not _writable(protocol):
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


def _as_is(value, *args, **kwargs):
    return value


def patch_daphne() -> None:
    """Patch daphne's WebSocket protocol, if daphne is the server running this process."""
    ws_protocol = sys.modules.get("daphne.ws_protocol")
    if ws_protocol is None:  # another ASGI server, or the test client: nothing to fix
        return
    protocol = ws_protocol.WebSocketProtocol
    if getattr(protocol, "chat_close_patched", False):
        return
    handle_reply = protocol.handle_reply

    def patched_handle_reply(self, message):
        kind = message.get("type")
        if kind == "websocket.send":
            if not _writable(self):
                return None
        elif kind == "websocket.close" and self.state != self.STATE_CONNECTING:
            reason = (message.get("reason") or "").encode()[:MAX_REASON_BYTES].decode("utf-8", "ignore")
            self.sendCloseFrame(code=message.get("code") or 1000, reasonUtf8=reason.encode() or None)
            return None
        return handle_reply(self, message)

    send_data = protocol.sendData

    def patched_send_data(self, data, sync=False, chopsize=None):
        if sync or chopsize or self.send_queue:
            return send_data(self, data, sync, chopsize)
        _write(self.transport, data)

    protocol.handle_reply = patched_handle_reply
    protocol.sendData = patched_send_data
    protocol.chat_close_patched = True
    autobahn_protocol = sys.modules["autobahn.websocket.protocol"]
    autobahn_protocol.hltype = autobahn_protocol.hlval = _as_is
    _close_sockets_on_shutdown(sys.modules["daphne.server"].Server, protocol)
    _break_cycles(sys.modules["daphne.http_protocol"].WebRequest, protocol)
    _websocket_limits(ws_protocol.WebSocketFactory, protocol)
    _flow_controlled_responses(sys.modules["daphne.server"].Server, sys.modules["daphne.http_protocol"].WebRequest)
    _refuse_large_bodies(sys.modules["daphne.http_protocol"].WebRequest)
    _hand_over_upload_bodies(sys.modules["daphne.server"].Server, sys.modules["daphne.http_protocol"].WebRequest)
    transport.use(DaphneServer())


def _break_cycles(request_class, protocol_class) -> None:
    """Two reference cycles per WebSocket connection kept about 60 objects each (its protocol,
    transport, HTTP request, headers, buffers) alive after it closed, until a full garbage
    collection: one that walks the whole heap with the GIL held, and that had about 60,000
    objects to free after 1,000 connections closed (90 ms with nothing else served).

    - The HTTP request that a WebSocket handshake arrives as stays in its HTTP channel's list
      of requests, and holds the channel, after daphne hands the socket over to the WebSocket
      protocol: it is taken out of the list once handed over.
    - Autobahn resolves the protocol's `is_closed` Deferred with the protocol itself, which
      holds the Deferred: once the connection is lost, the Deferred's result becomes None
      (nothing in daphne waits on it).
    """
    process = request_class.process

    def process_then_let_go(self):
        channel = self.channel
        process(self)
        if self.transport is None and channel is not None and self in channel.requests:
            channel.requests.remove(self)  # handed over to the WebSocket protocol (daphne sets transport None)

    connection_lost = protocol_class.connectionLost

    def connection_lost_then_let_go(self, *args, **kwargs):
        connection_lost(self, *args, **kwargs)
        closed = getattr(self, "is_closed", None)
        if closed is not None and getattr(closed, "called", False) and closed.result is self:
            closed.result = None

    request_class.process = process_then_let_go
    protocol_class.connectionLost = connection_lost_then_let_go


def _close_sockets_on_shutdown(server_class, protocol_class) -> None:
    """Before daphne cancels its applications at shutdown, close each socket with 1001 and let
    its consumer's `disconnect` run, so clients reconnect elsewhere and presence is cleared."""
    from twisted.internet import defer

    kill_all_applications = server_class.kill_all_applications

    def close_then_kill(self):
        pending = []
        for protocol, details in list(self.connections.items()):
            if not isinstance(protocol, protocol_class) or protocol.state != protocol.STATE_OPEN:
                continue
            protocol.sendCloseFrame(code=1001, reasonUtf8=b"server shutting down")
            protocol.application_queue.put_nowait({"type": "websocket.disconnect", "code": 1001})
            instance = details.get("application_instance")
            if instance is not None and not instance.done():
                pending.append(instance)

        async def grace():
            if pending:
                await asyncio.wait(pending, timeout=SHUTDOWN_GRACE_S)

        waited = defer.Deferred.fromFuture(asyncio.ensure_future(grace()))
        waited.addBoth(lambda _: kill_all_applications(self))
        return waited

    server_class.kill_all_applications = close_then_kill


def _websocket_limits(factory_class, protocol_class) -> None:
    """Fail WebSocket connections with a close frame, and refuse frames over CHAT_MAX_FRAME_BYTES early.

    Daphne sets its factory's options when the server starts (`Server.run`), after this module
    is imported; ours are applied on top of its own. With `failByDrop` off, autobahn answers a
    protocol violation (reserved bits, unknown opcode, bad masking) with 1002 and invalid UTF-8
    with 1007, waits for the client's close frame, then closes. The consumer checks the frame
    size too, for other servers; here a frame or message over the limit is refused from its
    header, before its payload is buffered.
    """
    set_protocol_options = factory_class.setProtocolOptions

    def set_protocol_options_with_ours(self, **options):
        limit = settings.CHAT_MAX_FRAME_BYTES
        set_protocol_options(
            self, **{**options, "failByDrop": False, "maxFramePayloadSize": limit, "maxMessagePayloadSize": limit}
        )

    def message_too_big(self, size, limit, reason):
        self._fail_connection(chat_protocol.CLOSE_TOO_BIG, chat_protocol.frame_too_big_reason(limit))

    factory_class.setProtocolOptions = set_protocol_options_with_ours
    protocol_class._max_message_size_exceeded = message_too_big


class _ResponseFlow:
    """A push producer for one HTTP response: Twisted pauses it while the client's socket and
    the transport's buffer are full, and resumes it once they drain."""

    def __init__(self):
        self.writable = asyncio.Event()
        self.writable.set()

    def pauseProducing(self):
        self.writable.clear()

    def resumeProducing(self):
        self.writable.set()

    def stopProducing(self):  # the connection is gone: nothing will wait for it
        self.writable.set()


def _flow_controlled_responses(server_class, request_class) -> None:
    """Make the app's `send` of an HTTP response wait while the client is not reading.

    Each response registers a `_ResponseFlow` with its Twisted request (the HTTP channel passes
    its transport's pause and resume on to it), and `Server.handle_reply`, which the app's
    `send` calls, waits while it is paused. An export stream therefore reads the database
    only as fast as its client takes the file. A client that takes nothing for
    CHAT_HTTP_SEND_TIMEOUT_S is dropped, so it cannot hold its export (and its slot) forever.
    """
    from twisted.internet.interfaces import IPushProducer
    from zope.interface import classImplements

    classImplements(_ResponseFlow, IPushProducer)
    handle_reply = request_class.handle_reply

    def handle_reply_with_flow(self, message):
        handle_reply(self, message)
        if (
            message.get("type") == "http.response.start"
            and self.channel is not None
            and not self.finished
            and self.producer is None
        ):
            self.chat_flow = _ResponseFlow()
            self.registerProducer(self.chat_flow, True)
            if self.channel._waitingForTransport:  # already full from an earlier response
                self.chat_flow.pauseProducing()

    finish = request_class.finish

    def finish_without_flow(self):
        if self.producer is not None and self.channel is not None:
            self.unregisterProducer()  # Twisted logs an error for a producer left registered
        flow = getattr(self, "chat_flow", None)
        if flow is not None:  # the last write may have filled the buffer: nothing more waits on it
            flow.stopProducing()
        finish(self)

    connection_lost = request_class.connectionLost

    def connection_lost_waking_flow(self, reason):
        flow = getattr(self, "chat_flow", None)
        if flow is not None:
            flow.stopProducing()
        connection_lost(self, reason)

    server_handle_reply = server_class.handle_reply

    async def handle_reply_waiting(self, protocol, message):
        await server_handle_reply(self, protocol, message)
        flow = getattr(protocol, "chat_flow", None)
        if flow is None or flow.writable.is_set():
            return
        try:
            await asyncio.wait_for(flow.writable.wait(), settings.CHAT_HTTP_SEND_TIMEOUT_S)
        except TimeoutError:
            logger.warning(
                "dropping an HTTP client that read nothing for %s s (%s)",
                settings.CHAT_HTTP_SEND_TIMEOUT_S,
                protocol.client_addr,
            )
            flow.stopProducing()
            if protocol.channel is not None:
                protocol.channel.transport.abortConnection()

    request_class.handle_reply = handle_reply_with_flow
    request_class.finish = finish_without_flow
    request_class.connectionLost = connection_lost_waking_flow
    server_class.handle_reply = handle_reply_waiting


def _refuse_large_bodies(request_class) -> None:
    """Answer 413 to a request whose body is over its path's limit (`chat.uploads.limit.body_limit`:
    CHAT_MAX_REQUEST_BYTES, or CHAT_MAX_UPLOAD_BYTES for uploads), and close its connection.

    Twisted calls `gotLength` with the Content-Length once the headers are in, before any of the
    body is read: the request is refused there. A body without a length (chunked) is counted as
    it arrives and refused once over. Daphne itself reads every body whole, to a temporary file,
    and then queues all of it for the app at once.
    """
    got_length = request_class.gotLength

    def got_length_within_limit(self, length):
        self.chat_body_limit = _limit(self)
        got_length(self, 0 if length and length > self.chat_body_limit else length)
        self.chat_body_bytes = 0
        if length and length > self.chat_body_limit:
            _refuse(self)

    handle_content_chunk = request_class.handleContentChunk

    def handle_content_chunk_within_limit(self, data):
        if getattr(self, "chat_refused", False):
            return
        self.chat_body_bytes = getattr(self, "chat_body_bytes", 0) + len(data)
        if self.chat_body_bytes > getattr(self, "chat_body_limit", settings.CHAT_MAX_REQUEST_BYTES):
            _refuse(self)
            return
        handle_content_chunk(self, data)

    process = request_class.process

    def process_unless_refused(self):
        if not getattr(self, "chat_refused", False):
            return process(self)

    request_class.gotLength = got_length_within_limit
    request_class.handleContentChunk = handle_content_chunk_within_limit
    request_class.process = process_unless_refused


def _limit(request) -> int:
    """The body limit of `request`'s path: the request line is in, its path on the channel
    (Twisted gives it to the request only once the body is read)."""
    path = getattr(request.channel, "_path", b"") or b""
    return body_limit(path.split(b"?", 1)[0].decode("latin-1"))


def _refuse(request) -> None:
    """Write a 413 to `request`'s connection and close it, as Twisted answers a malformed request."""
    request.chat_refused = True
    request.requestHeaders.removeHeader(b"Expect")  # no "100 Continue" after the refusal
    body = too_large_body(getattr(request, "chat_body_limit", settings.CHAT_MAX_REQUEST_BYTES))
    request.channel.transport.write(
        b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    request.channel.loseConnection()


def _hand_over_upload_bodies(server_class, request_class) -> None:
    """Twisted parses no request body (daphne passes the raw body on); an upload's body goes to
    the app as Twisted's temporary file, in the scope (`chat.body_file`, read by
    `chat.uploads.limit.BodyFileHandler`), and daphne queues none of its bytes."""
    got_length = request_class.gotLength

    def got_length_unparsed(self, length):
        self._parsePOSTFormSubmission = False  # set per request by Twisted's __init__
        got_length(self, length)

    process = request_class.process

    def process_handing_over(self):
        if UPLOAD_PATH.match((self.path or b"").decode("latin-1")) and not isinstance(self.content, _HandedOver):
            self.chat_body_file, self.content = self.content, _HandedOver(self.content)
        return process(self)

    create_application = server_class.create_application

    def create_application_with_body_file(self, protocol, scope):
        body_file = getattr(protocol, "chat_body_file", None)
        if body_file is not None:
            scope["chat.body_file"] = body_file
        return create_application(self, protocol, scope)

    request_class.gotLength = got_length_unparsed
    request_class.process = process_handing_over
    server_class.create_application = create_application_with_body_file


class _HandedOver:
    """What daphne reads of a body handed to the app as a file: nothing."""

    def __init__(self, file):
        self.file = file

    @property
    def closed(self) -> bool:
        return self.file.closed

    def seek(self, *args) -> int:
        return 0

    def tell(self) -> int:
        return 0

    def read(self, *args) -> bytes:
        return b""

    def close(self) -> None:
        """The app may still be reading the file: it goes with its last reference."""
