"""Daphne's HTTP fixes: responses paced by the client, request bodies limited as they arrive,
and upload bodies handed over as files (fixes 8, 9 and 10 of the package's list)."""

import asyncio
import logging

from django.conf import settings

from chat.uploads.limit import UPLOAD_PATH, body_limit, too_large_body

logger = logging.getLogger(__name__)


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
