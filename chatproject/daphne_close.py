"""Make daphne send the WebSocket close frames that PROTOCOL.md promises: every code, with its reason,
and 1001 to every open socket when the server shuts down.

Daphne 4.2 drops the `reason` of a `websocket.close` message (django/daphne#374) and passes
the code to autobahn's public `sendClose`, which refuses every 1xxx code but 1000. So a
consumer closing with 1008, 1009, 1011 or 1013 raised inside daphne instead: the client saw
a bare 1011 a second later, and the consumer's `disconnect` never ran (its connection stayed
counted and its user online). This sends the close frame itself, as daphne already does
for its own 1011.
"""
import asyncio
import sys

MAX_REASON_BYTES = 123  # a close frame's payload is at most 125 bytes, 2 of them the code
SHUTDOWN_GRACE_S = 2.0  # time the consumers get to run `disconnect` (presence) before being cancelled


def patch_daphne() -> None:
    """Patch daphne's WebSocket protocol, if daphne is the server running this process."""
    ws_protocol = sys.modules.get("daphne.ws_protocol")
    if ws_protocol is None:  # another ASGI server, or the test client: nothing to fix
        return
    protocol = ws_protocol.WebSocketProtocol
    if getattr(protocol, "chat_close_patched", False):
        return
    handle_reply = protocol.handle_reply

    def handle_reply_closing_with_reason(self, message):
        if message.get("type") != "websocket.close" or self.state == self.STATE_CONNECTING:
            return handle_reply(self, message)
        reason = (message.get("reason") or "").encode()[:MAX_REASON_BYTES].decode("utf-8", "ignore")
        self.sendCloseFrame(code=message.get("code") or 1000, reasonUtf8=reason.encode() or None)

    protocol.handle_reply = handle_reply_closing_with_reason
    protocol.chat_close_patched = True
    _close_sockets_on_shutdown(sys.modules["daphne.server"].Server, protocol)


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
