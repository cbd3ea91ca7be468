"""How a connection's frames reach its socket.

Every frame can go through the ASGI `send` the server gave the connection (Channels' `send` and
`close`, awaited): that is the plain ASGI transport, all the test communicator or another server
offers. A server that lets frames be written at once, without an await or a task switch, gives
its connections a `Transport` whose `direct` is true: the hub's fan-out then writes each event,
framed once for every recipient (`Frame`), straight to each socket (`ChatConsumer.deliver`).
The server's module registers itself (`use`); only chat/realtime/daphne/ knows a server.
"""

import contextlib


class Frame:
    """An event's `text`, encoded and framed on first use, then shared by every recipient."""

    __slots__ = ("_prepared", "text")

    def __init__(self, text: str):
        self.text = text
        self._prepared = None

    def prepared(self, factory):
        """The frame as `factory` (the server's WebSocket factory) frames it, made once."""
        if self._prepared is None:
            self._prepared = factory.prepareMessage(self.text.encode())
        return self._prepared


class Transport:
    """The plain ASGI transport: nothing can be written at once (`direct` is false), so every frame
    waits its turn and goes through the ASGI `send`."""

    direct = False

    def write_shared(self, frame: Frame) -> bool:
        """Write a frame shared by many sockets, now; False if the socket is closing or was dropped."""
        raise NotImplementedError("the plain ASGI transport writes through `send`: check `direct` first")

    def write_text(self, text: str) -> bool:
        """Write one frame of this socket's own, now; False if the socket is closing or was dropped."""
        raise NotImplementedError("the plain ASGI transport writes through `send`: check `direct` first")


PLAIN = Transport()


class Server:
    """What a server that offers direct writes registers (`use`)."""

    def transport(self, send) -> Transport | None:
        """The direct transport behind an ASGI `send`, or None (not this server's, or wrapped)."""
        return None

    def batch(self):
        """A context in which direct writes to each socket are held, then sent in one write per socket."""
        return contextlib.nullcontext()


_server = Server()


def use(server: Server) -> None:
    """Give connections `server`'s direct transports from now on (see chat/realtime/daphne/)."""
    global _server
    _server = server


def of(send) -> Transport:
    """The transport of a connection given this ASGI `send`."""
    return _server.transport(send) or PLAIN


def batch():
    """Hold the direct writes made inside (a burst of frames to many sockets), then send each socket's
    in one write. Nothing may await inside."""
    return _server.batch()
