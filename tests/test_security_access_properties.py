"""Removal is final, as a property: whatever the schedule of membership changes (invite, kick,
ban, unban, leave, join, archive) and frames (sends, resends of earlier client_ids to any room,
typing, `join since`) over several connections, no frame of a room reaches a connection of a
user who is not a member once the removal has reached it.

Each connection tracks the rooms it was told it is in: those of `hello`, opened by `room.joined`,
closed by `room.left` or an archiving `room.updated`. Invariants, checked on every frame read:
- a frame naming a room (message, typing, member, presence...) arrives only while it is open;
- after a removal reached the connection, a `room.joined` of that room comes only once the
  user is a member again (in the database).
At the end, after every connection is quiet: each connection is open in exactly the rooms the
user is an active member of (unarchived); then the owner writes to every room and nothing
reaches a non-member. Every client_id names at most one message.
"""

import asyncio
import itertools

import hypothesis
import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from django.contrib.auth import get_user_model
from django.db.models import Count
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from chat import selectors, services
from chat.errors import ChatError
from chat.models import Message
from tests.support import Client, connect, db, flush_layers

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()
QUIET_S = 0.1
examples = itertools.count()
NOT_OF_A_ROOM = {"hello", "pong", "error", "notice"}


class Connection:
    def __init__(self, name: str, user, rooms: list[str]):
        self.name, self.user, self.rooms = name, user, rooms
        self.open: set[str] = set()
        self.removed: set[str] = set()  # rooms whose removal reached this connection
        self.client: Client | None = None
        self.refs = itertools.count()

    async def connect(self):
        self.client = await connect(self.user)
        self.open = {room["slug"] for room in self.client.hello["rooms"] if room["slug"] in self.rooms}

    async def send(self, **frame) -> str:
        frame["ref"] = ref = f"{self.name}:{next(self.refs)}"
        await self.client.send(**frame)
        return ref

    async def recv(self) -> dict:
        return await self.client.recv(5)

    async def check(self, frame: dict):
        room = frame.get("room")
        kind = frame["type"]
        if kind in NOT_OF_A_ROOM or room not in self.rooms:
            return
        if kind == "room.joined":
            if room in self.removed:
                assert await member(self.user, room), f"{self.name}: {frame} after its removal from {room!r}"
                self.removed.discard(room)
            self.open.add(room)
        elif kind == "room.left" or (kind == "room.updated" and frame.get("archived")):
            assert room in self.open, f"{self.name}: {frame} for a room it was not in"
            self.open.discard(room)
            self.removed.add(room)
        else:
            assert room in self.open, f"{self.name}: {frame} of a room it is not in (removed: {room in self.removed})"

    async def read_queued(self, limit: int | None = None):
        for _ in itertools.repeat(None) if limit is None else range(limit):
            if not self.client.waiting():
                return
            await self.check(await self.recv())

    async def read_until(self, ref: str):
        while True:
            frame = await self.recv()
            await self.check(frame)
            if frame.get("ref") == ref:
                return frame

    async def read_until_quiet(self):
        while not await self.client.quiet(QUIET_S):
            await self.read_queued()


@db
def member(user, slug: str) -> bool:
    return slug in {room_slug for _, room_slug in selectors.member_room_ids(user)}


USER = st.integers(0, 2)  # which of the three users
CONN = st.integers(0, 3)  # which of the four connections (user 0 has two)
ROOM = st.integers(0, 1)  # the public room or the private one
STEP = st.one_of(
    st.tuples(st.sampled_from(["invite", "kick", "ban", "unban", "leave"]), USER, ROOM),  # by the owner, or the user
    st.tuples(st.just("archive"), ROOM),
    st.tuples(st.just("join"), CONN, ROOM, st.booleans()),  # `join`, with `since` or not
    st.tuples(st.just("frame-leave"), CONN, ROOM),
    st.tuples(st.just("send"), CONN, ROOM),
    st.tuples(st.just("send"), CONN, ROOM),
    st.tuples(st.just("resend"), CONN, ROOM, st.integers(0, 20)),  # an earlier client_id of the user, to any room
    st.tuples(st.just("resend"), CONN, ROOM, st.integers(0, 20)),
    st.tuples(st.just("typing"), CONN, ROOM),
    st.tuples(st.just("read"), CONN, st.integers(1, 5)),
    st.tuples(st.just("owner-send"), ROOM),
)

# The review's attack: user 0 sends in the private room, is kicked (then banned), resends that
# client_id to the public room, and the owner writes in the private room.
ATTACK = [
    ("send", 0, 1),
    ("read", 0, 5),
    ("kick", 0, 1),
    ("read", 0, 5),
    ("resend", 0, 0, 0),
    ("owner-send", 1),
    ("send", 1, 1),
    ("ban", 0, 1),
    ("resend", 1, 0, 0),
    ("typing", 2, 1),
    ("owner-send", 1),
]


REMOVING = {"kick", "ban", "leave", "archive"}


async def run_step(step, owner, users, rooms, connections, used):
    kind = step[0]
    if kind in REMOVING:
        # The check of a `room.joined` read after a removal asks the database whether the user is
        # a member now: one sent while they were (another connection's `join`, an invite) must be
        # read before this step can remove them again.
        await asyncio.gather(*(conn.read_until_quiet() for conn in connections))
    if kind in ("invite", "kick", "ban", "unban", "leave"):
        user, slug = users[step[1]], rooms[step[2]]
        call = {
            "invite": lambda: services.member_invite(actor=owner, slug=slug, username=user.username),
            "kick": lambda: services.member_remove(actor=owner, slug=slug, username=user.username),
            "ban": lambda: services.member_ban(actor=owner, slug=slug, username=user.username),
            "unban": lambda: services.member_unban(actor=owner, slug=slug, username=user.username),
            "leave": lambda: services.room_leave(user=user, slug=slug),
        }[kind]
        await db(refused_or)(call)
    elif kind == "archive":
        if step[1] == 1:  # archiving the public room too would leave little to test
            await db(refused_or)(lambda: services.room_archive(user=owner, slug=rooms[1]))
    elif kind == "owner-send":
        await db(refused_or)(lambda: services.message_send(user=owner, slug=rooms[step[1]], body="from the owner"))
    elif kind == "read":
        await connections[step[1]].read_queued(step[2])
    else:
        conn, slug = connections[step[1]], rooms[step[2]]
        if kind == "join":
            ref = await conn.send(type="join", room=slug, **({"since": 0} if step[3] else {}))
        elif kind == "frame-leave":
            ref = await conn.send(type="leave", room=slug)
        elif kind == "send":
            client_id = f"{conn.name}-{next(conn.refs)}"
            used.setdefault(conn.user.pk, []).append(client_id)
            ref = await conn.send(type="message.send", room=slug, body="hi", client_id=client_id)
        elif kind == "resend":
            if not used.get(conn.user.pk):
                return
            earlier = used[conn.user.pk]
            ref = await conn.send(type="message.send", room=slug, body="hi", client_id=earlier[step[3] % len(earlier)])
        else:  # typing: no reply
            await conn.send(type="typing", room=slug)
            return
        await conn.read_until(ref)


def refused_or(call):
    """A membership change or send the state refuses (not a member, already banned...) changes nothing."""
    try:
        call()
    except ChatError:
        pass


async def play(owner, users, rooms, connections, steps, used):
    channel_layers.backends = {}
    try:
        for conn in connections:
            await conn.connect()
        for step in steps:
            await run_step(step, owner, users, rooms, connections, used)
        await asyncio.gather(*(conn.read_until_quiet() for conn in connections))
        for conn in connections:
            members = {slug for _, slug in await db(selectors.member_room_ids)(conn.user)} & set(rooms)
            assert conn.open == members, f"{conn.name} is in {conn.open}, its user in {members}"
        for slug in rooms:
            await db(refused_or)(lambda slug=slug: services.message_send(user=owner, slug=slug, body="last"))
        await asyncio.gather(*(conn.read_until_quiet() for conn in connections))
    finally:
        for conn in connections:
            if conn.client is not None:
                await conn.client.close()
        await flush_layers()


@hypothesis.settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, min_size=1, max_size=25))
@hypothesis.example(steps=ATTACK)
# Once a flaky failure of this test's own: the invite's `room.joined` was read after the kick.
@hypothesis.example(steps=[("frame-leave", 0, 0), ("invite", 0, 0), ("kick", 0, 0)])
def test_no_frame_of_a_room_reaches_a_non_member(steps, settings):
    settings.CHAT_RATE_PER_10S = 100_000
    settings.CHAT_TYPING_INTERVAL_S = 0
    n = next(examples)
    owner = User.objects.create_user(f"o{n}", password="x")
    users = [User.objects.create_user(f"a{n}u{i}", password="x") for i in range(3)]
    rooms = [
        services.room_create(user=owner, name=f"Public {n}", slug=f"pub-{n}").slug,
        services.room_create(user=owner, name=f"Private {n}", slug=f"priv-{n}", kind="private").slug,
    ]
    for user in users:
        services.room_join(user=user, slug=rooms[0])
        services.member_invite(actor=owner, slug=rooms[1], username=user.username)
    connections = [Connection(f"c{i}", users[owner_index], rooms) for i, owner_index in enumerate([0, 0, 1, 2])]
    used: dict[int, list[str]] = {}

    async_to_sync(play)(owner, users, rooms, connections, steps, used)

    duplicated = (
        Message.objects.exclude(client_id="").values("author_id", "client_id").annotate(n=Count("id")).filter(n__gt=1)
    )
    assert not duplicated.exists(), list(duplicated)
