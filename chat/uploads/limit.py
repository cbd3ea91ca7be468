"""The request body limits, by path: an upload may carry CHAT_MAX_UPLOAD_BYTES (plus its
multipart framing), any other request CHAT_MAX_REQUEST_BYTES.

Under daphne the limit is enforced in Twisted, as the body arrives (chat/realtime/daphne/):
daphne reads a body whole before the application sees any of it. `BodyLimit` enforces the same
limit for any other ASGI server, which passes the body on as it arrives.
"""

import contextvars
import json
import re

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

from ..protocol import TOO_LARGE

UPLOAD_PATH = re.compile(r"^/api/rooms/[^/]+/uploads/$")
_body_file = contextvars.ContextVar("chat_body_file", default=None)
MULTIPART_SLACK = 64 * 1024  # the boundaries and part headers around the file


def body_limit(path: str) -> int:
    if UPLOAD_PATH.match(path):
        return settings.CHAT_MAX_UPLOAD_BYTES + MULTIPART_SLACK
    return settings.CHAT_MAX_REQUEST_BYTES


def too_large_body(limit: int) -> bytes:
    return json.dumps(
        {"detail": f"Request bodies are limited to {limit} bytes: send less.", "code": TOO_LARGE}
    ).encode()


class BodyLimit:
    """ASGI middleware: 413 `too_large` at once for a Content-Length over the path's limit, and,
    for a body without one, as soon as what arrived passes it (the app then sees a disconnect)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit(scope.get("path", ""))
        length = dict(scope.get("headers", [])).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await _refuse(send, limit)
        state = {"received": 0, "refused": False, "started": False}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    if not state["started"]:
                        state["refused"] = True
                        await _refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message):
            if state["refused"]:
                return
            state["started"] = True
            await send(message)

        return await self.app(scope, limited_receive, tracked_send)


async def _refuse(send, limit: int) -> None:
    body = too_large_body(limit)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyFileHandler(ASGIHandler):
    """Django's ASGI handler, which takes a body the server already holds in a file
    (`scope["chat.body_file"]`, from chat/realtime/daphne/) as it is, instead of copying every
    byte from the server's messages into a file of its own on the event loop."""

    async def handle(self, scope, receive, send):
        token = _body_file.set(scope.get("chat.body_file"))
        try:
            return await super().handle(scope, receive, send)
        finally:
            _body_file.reset(token)

    async def read_body(self, receive):
        body_file = _body_file.get()
        if body_file is None:
            return await super().read_body(receive)
        (await super().read_body(receive)).close()  # the server's (empty) messages, up to the last
        body_file.seek(0)
        return body_file
