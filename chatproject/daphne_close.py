"""Make daphne send the WebSocket close frames that PROTOCOL.md promises: every code, with its reason.

Daphne 4.2 drops the `reason` of a `websocket.close` message (django/daphne#374) and passes
the code to autobahn's public `sendClose`, which refuses every 1xxx code but 1000. So a
consumer closing with 1008, 1009, 1011 or 1013 raised inside daphne instead: the client saw
a bare 1011 a second later, and the consumer's `disconnect` never ran (its connection stayed
counted and its user online). This sends the close frame itself, as daphne already does
for its own 1011.
"""
import sys

MAX_REASON_BYTES = 123  # a close frame's payload is at most 125 bytes, 2 of them the code


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
