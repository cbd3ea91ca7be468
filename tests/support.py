"""Helpers shared by the tests that are not fixtures (those are in tests/conftest.py).

- `Client`: the one test client of /ws/chat/, over the in-process communicator (`connect`) or a
  real socket to a daphne (`ws_connect`, tests/live.py starts the servers). It reads frames by
  type, skipping the ones a test doesn't care about, and reports close codes. The reconnecting
  socket client of the fault and overload tests is built on it: tests/reconnecting.py.
- `flush_layers`: a fresh channel layer for the next test (or Hypothesis example).
- Reads and checks of the database: `db` (an ORM call from async code), `snapshot`, `db_state`.
- `login` (REST sign-in), `about` (a frame predicate), `PASSWORD`.
- Rooms and messages written through the services: `public_room`, `private_room`, `joined`, `send`.
- What the `published` fixture recorded: `frames`, `room_events`, `subscribe_event`, `unsubscribe_event`.
"""

import asyncio
import contextlib
import json

from channels.db import database_sync_to_async
from rest_framework_simplejwt.tokens import AccessToken
from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import ConnectionClosed

from chat import services
from chat.models import Membership, Message, Room

db = database_sync_to_async
PASSWORD = "s3cret-pass-1"  # every user's password, unless a test gives another (conftest's make_user)


def access_token(user) -> str:
    return str(AccessToken.for_user(user))


# The client


class _Communicator:
    """The in-process ASGI app behind channels' WebsocketCommunicator."""

    def __init__(self, comm):
        self.comm = comm

    def within(self, timeout: float):
        # receive_output cancels the app when its own timeout expires, so only each frame's wait is bounded.
        return contextlib.nullcontext()

    async def send(self, text: str) -> None:
        await self.comm.send_to(text_data=text)

    async def recv(self, timeout: float) -> str:
        out = await self.comm.receive_output(timeout)
        assert out["type"] == "websocket.send", f"expected a frame, got {out}"
        return out["text"]

    async def quiet(self, timeout: float) -> bool:
        return await self.comm.receive_nothing(timeout)

    def waiting(self) -> bool:
        return not self.comm.output_queue.empty()

    async def close_frame(self, timeout: float) -> tuple[int, str]:
        while True:
            out = await self.comm.receive_output(timeout)
            if out["type"] == "websocket.close":
                await self.comm.disconnect()  # the client side hangs up, as a real socket would
                return out.get("code"), out.get("reason", "")

    async def close(self, code: int) -> None:
        await self.comm.disconnect(code)


class _Socket:
    """A real WebSocket (the `websockets` library) to a live server."""

    def __init__(self, ws):
        self.ws = ws

    def within(self, timeout: float):
        return asyncio.timeout(timeout)

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    async def recv(self, timeout: float) -> str:
        return await asyncio.wait_for(self.ws.recv(), timeout)

    async def quiet(self, timeout: float) -> bool:
        raise NotImplementedError("a socket cannot look ahead: use drain() or read_for()")

    def waiting(self) -> bool:
        raise NotImplementedError("a socket cannot look ahead: use drain() or read_for()")

    async def close_frame(self, timeout: float) -> tuple[int, str]:
        async with asyncio.timeout(timeout):
            try:
                while True:
                    await self.ws.recv()
            except ConnectionClosed as exc:
                assert exc.rcvd is not None, f"the connection dropped without a close frame: {exc}"
                return exc.rcvd.code, exc.rcvd.reason

    async def close(self, code: int) -> None:
        await self.ws.close(code)


class Client:
    """A connected test client. `comm` (in process) or `ws` (a socket) is the raw connection, for
    a test that reads what is below frames; `hello` is the `hello` frame when `connect` read it."""

    def __init__(self, transport, timeout: float):
        self.transport, self.timeout = transport, timeout
        self.comm = getattr(transport, "comm", None)
        self.ws = getattr(transport, "ws", None)
        self.hello: dict | None = None

    async def send(self, **frame) -> None:
        await self.transport.send(json.dumps(frame))

    async def send_raw(self, text: str) -> None:
        await self.transport.send(text)

    async def recv(self, timeout: float | None = None) -> dict:
        return json.loads(await self.transport.recv(timeout or self.timeout))

    async def expect(self, type_: str, timeout: float | None = None, where=None, **match) -> dict:
        """The next frame of `type_` matching `match` (and `where(frame)`); other frames are skipped."""
        timeout = timeout or self.timeout
        async with self.transport.within(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame["type"] == type_ and all(frame.get(k) == v for k, v in match.items()):
                    if where is None or where(frame):
                        return frame

    async def drain(self, timeout: float | None = None) -> list[dict]:
        """Read until quiet for `timeout` seconds; returns the frames read."""
        out = []
        if self.comm is not None:
            while not await self.quiet(timeout or 0.2):
                out.append(await self.recv())
            return out
        with contextlib.suppress(TimeoutError):
            while True:
                out.append(await self.recv(timeout or 0.3))
        return out

    async def read_for(self, seconds: float) -> list[dict]:
        """Every frame that arrives within `seconds`, however busy the connection."""
        out = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    out.append(await self.recv(seconds))
        return out

    async def quiet(self, timeout: float) -> bool:
        """Nothing arrives within `timeout` seconds (in process only: it looks without reading)."""
        return await self.transport.quiet(timeout)

    def waiting(self) -> bool:
        """A frame has arrived and is not read yet (in process only)."""
        return self.transport.waiting()

    async def nothing(self, timeout: float = 0.2) -> None:
        assert await self.quiet(timeout), "expected no frame"

    async def close_frame(self, timeout: float | None = None) -> tuple[int, str]:
        """(code, reason) of the close frame the server sends, as a browser's CloseEvent shows them."""
        return await self.transport.close_frame(timeout or self.timeout)

    async def closed(self, timeout: float | None = None) -> int:
        """The close code the server sent."""
        return (await self.close_frame(timeout))[0]

    async def close(self, code: int = 1000) -> None:
        """Hang up; in process, code 1006 is how a lost network looks to the server."""
        await self.transport.close(code)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame, as a lost network does."""
        self.ws.transport.abort()


async def connect(user=None, path="/ws/chat/", *, via="query", headers=None, hello=True) -> Client:
    """A client of the in-process app (auth middleware and routing included), as `user` with a JWT
    in the query string (`via="header"`: the Authorization header) or anonymous; with `hello`,
    the `hello` frame is read and kept as `client.hello`."""
    from channels.testing import WebsocketCommunicator  # imports daphne: only in tests that talk to the app

    from chatproject.asgi import application

    token = access_token(user) if user is not None else None
    headers = list(headers or [])
    if token and via == "header":
        headers.append((b"authorization", f"Bearer {token}".encode()))
    elif token:
        path = f"{path}?token={token}"
    comm = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await comm.connect()
    assert connected
    client = Client(_Communicator(comm), timeout=2)
    if hello:
        client.hello = await client.recv()
        assert client.hello["type"] == "hello", client.hello
    return client


async def ws_connect(
    server, user=None, path: str = "/ws/chat/", *, token: str | None = None, hello: bool = True, **options
) -> Client:
    """A client on a real socket to `server` (tests/live.py) with `user`'s JWT (or `token`) in
    the Authorization header. The handshake must succeed (the server refuses with close codes
    after accepting); with `hello` the `hello` frame is read and kept as `client.hello`.
    `options` go to `websockets`' `connect` (`sock`, `max_queue`, `ping_interval`, `open_timeout`, ...)."""
    if user is not None:
        token = access_token(user)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    ws = await websocket_connect(server.ws_url + path, additional_headers=headers, **{"open_timeout": 5, **options})
    client = Client(_Socket(ws), timeout=5.0)
    if hello:
        client.hello = await client.expect("hello")
    return client


async def flush_layers() -> None:
    """Empty and forget this process's channel layers: a layer holds queues bound to one event loop."""
    from channels.layers import channel_layers

    for layer in channel_layers.backends.values():
        if hasattr(layer, "flush"):
            await layer.flush()
    channel_layers.backends = {}


def about(username):
    """A `where=` predicate for `Client.expect`: the frame is about `username` (presence, member)."""
    return lambda frame: frame["user"]["username"] == username


def login(api, username="alice", password=PASSWORD):
    """A JWT sign-in over REST; `api` is the conftest fixture."""
    return api().post("/api/auth/token/", {"username": username, "password": password}, format="json")


# The database


def snapshot() -> tuple:
    """Every row of rooms, memberships and messages."""
    return tuple(list(model.objects.order_by("pk").values()) for model in (Room, Membership, Message))


def db_state() -> tuple:
    """Everything a refused request must leave as it was."""
    return (
        list(Room.objects.order_by("pk").values_list("slug", "name", "kind", "topic", "locked", "archived")),
        list(Membership.objects.order_by("pk").values_list("room_id", "user_id", "role", "last_read_id", "banned")),
        list(
            Message.objects.order_by("pk").values_list("room_id", "author_id", "body", "kind", "edited_at", "deleted")
        ),
    )


def user_bodies() -> list[str]:
    """The bodies of every user message, in id order."""
    return list(Message.objects.filter(kind="user").order_by("id").values_list("body", flat=True))


def membership(room, user) -> Membership:
    return Membership.objects.get(room=room, user=user)


# Rooms and messages, through the services


def public_room(owner, slug="general"):
    return services.room_create(user=owner, name=slug.title(), slug=slug)


def private_room(owner, slug="secret", members=()):
    room = services.room_create(user=owner, name=slug.title(), slug=slug, kind="private")
    for user in members:
        services.member_invite(actor=owner, slug=slug, username=user.username)
    return room


def joined(room, *users):
    for user in users:
        services.room_join(user=user, slug=room.slug)
    return room


def send(user, room, body="hi", **kwargs) -> Message:
    return services.message_send(user=user, slug=room.slug, body=body, **kwargs)[0]


# What the `published` fixture recorded


def frames(sent, type_=None):
    """The decoded frames in recorded events, optionally of one type."""
    out = [e["frame"] for _, e in sent if "frame" in e]
    return [f for f in out if type_ is None or f["type"] == type_]


def room_events(published, room):
    return [e["frame"] for group, e in published if group == f"room.{room.pk}"]


def subscribe_event(user, room, since=0):
    return (f"user.{user.pk}", {"type": "chat.subscribe", "room_id": room.pk, "slug": room.slug, "since": since})


def unsubscribe_event(user, room, reason):
    return (f"user.{user.pk}", {"type": "chat.unsubscribe", "room_id": room.pk, "slug": room.slug, "reason": reason})
