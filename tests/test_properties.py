"""Delivery guarantees as a property: whatever the schedule of connects, drops, sends,
resends, edits, deletes and reactions, every client ends up with exactly the room's history, each
message as the database holds it now.

Hypothesis draws schedules for 2-4 users (one or two devices each) in one room, run against
the in-process ASGI app. Each device keeps what a correct client keeps
(`tests.client_state.ClientState`: its view, the mark it resumes from with `join since`, its
unacknowledged sends, resent with the same `client_id` after each `room.joined`).

Invariant, after a final resync of every device (`join since changes_since`): its id-ordered
view equals the database's sequence for the room, message for message and field for field
(bodies, deleted flags, reactions, seq), and every `client_id` names exactly one message,
the one every acknowledgement of it named. Throughout, `ClientState` checks that each
connection sends the room's messages in id order.
"""

import asyncio
import itertools

import hypothesis
import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from chat import services
from chat.models import Message
from chat.serializers import message_data
from tests.client_state import ClientState
from tests.support import Client, connect, flush_layers

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()
QUIET_S = 0.1  # a device is done reading when nothing arrives for this long
examples = itertools.count()


class Device:
    """One client application of a user, on the test communicator: a connection at a time."""

    def __init__(self, name: str, user, room: str, seen: set):
        self.user = user
        self.state = ClientState(name, user.pk, room)
        self.client: Client | None = None
        self.seen = seen  # what happened in this example, for Hypothesis' statistics

    async def connect(self):
        self.client = await connect(self.user)

    async def send(self, frame: dict):
        await self.client.send(**frame)

    async def recv(self) -> dict:
        return await self.client.recv(5)

    async def handle(self, frame: dict):
        if frame.get("duplicate"):
            self.seen.add("a resend answered as a duplicate")
        for reply in self.state.handle(frame):
            await self.send(reply)

    async def read_queued(self, limit: int | None = None):
        """Handle the frames already waiting (at most `limit`), without waiting for more."""
        for _ in itertools.repeat(None) if limit is None else range(limit):
            if not self.client.waiting():
                return
            await self.handle(await self.recv())

    async def read_until_quiet(self):
        # receive_output's timeout would cancel the app: check that something waits first.
        while not await self.client.quiet(QUIET_S):
            await self.read_queued()

    async def read_until_reply(self, ref: str):
        """Read up to and including the reply to the frame sent with `ref`, and no further."""
        while True:
            frame = await self.recv()
            await self.handle(frame)
            if frame.get("ref") == ref:
                return

    async def close(self, code: int):
        """Hang up: 1000 after reading what already arrived, 1006 (a lost network) dropping it."""
        if code == 1000:
            await self.read_queued()
        elif self.client.waiting():
            self.seen.add("an abort dropped unread frames")
        await self.client.close(code)
        self.client = None
        self.state.connection_lost()


# Schedules

DEVICE = st.integers(0, 7)  # taken modulo the number of devices
SEND = st.tuples(st.just("send"), DEVICE, st.booleans())  # and wait for the acknowledgement, or not
REACT = st.tuples(st.just("react"), DEVICE, st.integers(0, 30), st.sampled_from(["👍", "🇨🇳", ":tada:"]), st.booleans())
READ = st.tuples(st.just("read"), DEVICE, st.integers(1, 4))  # some of what waits, as a busy client does
STEP = st.one_of(
    st.tuples(st.just("connect"), DEVICE),  # a fresh connection, without `join since`
    st.tuples(st.just("resync"), DEVICE),  # reconnect, then `join since`
    st.tuples(st.just("rejoin"), DEVICE),  # `join since` again on the open connection
    st.tuples(st.just("close"), DEVICE),
    st.tuples(st.just("abort"), DEVICE),
    SEND,
    SEND,
    SEND,  # sends are what the schedules are about: draw them more often
    st.tuples(st.just("resend"), DEVICE, st.integers(0, 30), st.booleans()),  # an earlier client_id of the user
    READ,
    READ,
    st.tuples(st.just("edit"), DEVICE, st.integers(0, 30), st.booleans()),  # one of the user's messages it holds
    st.tuples(st.just("delete"), DEVICE, st.integers(0, 30), st.booleans()),
    REACT,
    REACT,
    st.just(("pause",)),
)


# Device 1 resends the client_id that device 0 (same user) sends at the same time, while
# user 1's message, committed just before, is on its way to device 1; device 1 reads up to
# the answer (a duplicate), then loses its connection and resumes from the highest id it
# holds. Three times: the race can go either way.
DUPLICATE_AHEAD = [
    ("resync", 1),
    *[("pause",)] * 6,
    ("read", 1, 4),
    ("read", 1, 4),
    ("send", 2, False),
    ("send", 0, False),
    ("resend", 1, -1, True),
    ("abort", 1),
]

# Device 0 misses a message while offline, reconnects, gets a live one before sending its
# `join since`, and loses the connection before the replay: the live message must not
# have become its resume point.
LIVE_BEFORE_JOIN = [
    ("abort", 0),
    ("send", 1, True),
    ("connect", 0),
    ("send", 1, True),
    ("pause",),
    ("read", 0, 4),
    ("rejoin", 0),
    ("abort", 0),
]


# Device 0 is away while device 1 edits, deletes and edits again the messages device 0 holds;
# device 0 resumes with both cursors, and again after losing the connection mid-replay.
CHANGES_WHILE_AWAY = [
    ("send", 0, True),
    ("send", 1, True),
    ("send", 1, True),
    ("read", 0, 4),
    ("read", 1, 4),
    ("abort", 0),
    ("edit", 1, 0, True),
    ("delete", 1, 1, True),
    ("edit", 1, 0, False),
    ("resync", 0),
    ("read", 0, 2),
    ("abort", 0),
    ("edit", 1, 0, True),
    ("react", 1, 0, "👍", True),
    ("abort", 0),
    ("react", 1, 0, "👍", False),
    ("react", 1, 1, ":tada:", True),
    ("resync", 0),
]


@st.composite
def schedules(draw):
    users = draw(st.integers(2, 4))
    second_devices = draw(st.lists(st.integers(0, users - 1), max_size=2, unique=True))
    return users, sorted([*range(users), *second_devices]), draw(st.lists(STEP, min_size=1, max_size=25))


async def run_step(step, devices: list[Device], sent: dict, counter):
    device = devices[step[1] % len(devices)] if len(step) > 1 else None
    kind = step[0]
    if kind == "pause":
        await asyncio.sleep(0.005)
    elif kind == "connect" and device.client is None:
        await device.connect()
    elif kind == "resync":
        if device.client is not None:
            await device.close(1000)
        await device.connect()
        await device.send(device.state.join())
    elif kind == "rejoin" and device.client is not None:
        await device.send(device.state.join())
    elif kind in ("close", "abort") and device.client is not None:
        await device.close(1000 if kind == "close" else 1006)
    elif kind == "send":
        client_id = f"{device.state.name}-{next(counter)}"
        sent.setdefault(device.user.pk, {})[client_id] = body = f"body of {client_id}"
        frame = device.state.send(client_id, body)  # offline, it goes after the next `room.joined`
        if device.client is not None:
            await device.send(frame)
            if step[2]:
                await device.read_until_reply(frame["ref"])
    elif kind == "resend" and device.client is not None and sent.get(device.user.pk):
        client_id, body = list(sent[device.user.pk].items())[step[2] % len(sent[device.user.pk])]
        frame = device.state.message_send(client_id, body)
        await device.send(frame)
        if step[3]:
            await device.read_until_reply(frame["ref"])
    elif kind == "read" and device.client is not None:
        await device.read_queued(step[2])
    elif kind == "react" and device.client is not None and device.state.view:
        held = device.state.ordered()
        target = held[step[2] % len(held)]
        mine = any(r["emoji"] == step[3] and device.user.username in r["users"] for r in target["reactions"])
        frame = device.state.change(
            {"type": "reaction.remove" if mine else "reaction.add", "id": target["id"], "emoji": step[3]}
        )
        device.seen.add("a reaction")
        await device.send(frame)
        if step[4]:
            await device.read_until_reply(frame["ref"])
    elif kind in ("edit", "delete") and device.client is not None:
        own = [m["id"] for m in device.state.ordered() if m["author"]["id"] == device.user.pk and m["kind"] == "user"]
        if own:
            target = own[step[2] % len(own)]
            change = {"type": "message.edit", "id": target, "body": f"edit {next(counter)}"}
            frame = device.state.change(change if kind == "edit" else {"type": "message.delete", "id": target})
            device.seen.add(f"an {kind}" if kind == "edit" else "a delete")
            await device.send(frame)
            if step[3]:
                await device.read_until_reply(frame["ref"])


async def play(devices: list[Device], steps, sent: dict):
    channel_layers.backends = {}  # a layer per event loop: each example runs in a new one
    counter = itertools.count()
    try:
        for device in devices:  # every device starts online, its join on the way
            await device.connect()
            await device.send(device.state.join())
        for step in steps:
            await run_step(step, devices, sent, counter)
        for device in devices:  # recovery: every device that is not in sync resumes with `since`
            if device.client is None:
                await device.connect()
            if not device.state.synced:
                await device.send(device.state.join())
        await asyncio.gather(*(device.read_until_quiet() for device in devices))
        unacked = {device.state.name: device.state.unacked for device in devices if device.state.unacked}
        assert not unacked, f"sends left unacknowledged after the resync: {unacked}"
    finally:
        for device in devices:
            if device.client is not None:
                await device.client.close()
        await flush_layers()


@hypothesis.settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=schedules())
@hypothesis.example(schedule=(2, [0, 0, 1], DUPLICATE_AHEAD * 3))
@hypothesis.example(schedule=(2, [0, 1], LIVE_BEFORE_JOIN))
@hypothesis.example(schedule=(2, [0, 1], CHANGES_WHILE_AWAY))
def test_every_client_ends_with_the_rooms_history(schedule, settings):
    settings.CHAT_RATE_PER_10S = 100_000
    users, owners, steps = schedule
    n = next(examples)
    people = [User.objects.create_user(f"p{n}u{i}", password="x") for i in range(users)]
    room = services.room_create(user=people[0], name=f"Room {n}", slug=f"prop-{n}")
    for person in people[1:]:
        services.room_join(user=person, slug=room.slug)
    seen: set[str] = set()
    devices = [Device(f"d{i}", people[owner], room.slug, seen) for i, owner in enumerate(owners)]
    sent: dict[int, dict[str, str]] = {}  # user id -> client_id -> body, every send of the schedule

    async_to_sync(play)(devices, steps, sent)
    for what in seen:
        hypothesis.event(what)

    rows = Message.objects.filter(room=room).select_related("room", "author").order_by("id")
    history = [message_data(m) for m in rows]
    for device in devices:
        assert device.state.ordered() == history, f"{device.state.name}'s view differs from the database"
    for user_id, client_ids in sent.items():
        for client_id, body in client_ids.items():
            stored = list(Message.objects.filter(author_id=user_id, client_id=client_id))
            assert len(stored) == 1, f"{client_id!r} is {len(stored)} messages"
            assert stored[0].edited_at is not None or stored[0].body == body, f"{client_id!r} stored another text"
            acks = {d.state.acks[client_id] for d in devices if client_id in d.state.acks}
            assert acks == {stored[0].pk}, f"{client_id!r} acknowledged as {acks}, stored as {stored[0].pk}"
