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
import sys

from django.conf import settings

from chat import protocol as chat_protocol

from .. import transport
from .http import _flow_controlled_responses, _hand_over_upload_bodies, _refuse_large_bodies
from .sockets import DaphneServer, DaphneTransport, _writable, _write, corked, unsent_bytes, writes_straight_through

__all__ = ["DaphneServer", "DaphneTransport", "corked", "patch_daphne", "unsent_bytes", "writes_straight_through"]

MAX_REASON_BYTES = 123  # a close frame's payload is at most 125 bytes, 2 of them the code
SHUTDOWN_GRACE_S = 2.0  # time the consumers get to run `disconnect` (presence) before being cancelled


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
            if not _writable(self, settings.CHAT_MAX_SEND_BUFFER):
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
