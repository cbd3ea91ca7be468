"""A resume that brings back every change (Version 2): `join` with `changes_since`, and changes
delivered live in the room's change sequence order, each connection reading from the database
what overtook it.

Runs on whatever channel layer the settings give, like tests/test_consumers.py.
"""

import threading

import pytest
from django.db import connections

from chat import events, services, sql
from chat.models import Message, Room
from tests.support import connect, db

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_layer")]


def changed(frames: list[dict]) -> list[tuple]:
    """(type, id, seq) of the message frames, in order."""
    return [(f["type"], f["message"]["id"], f["message"]["seq"]) for f in frames if "message" in f]


async def send(user, body: str) -> Message:
    return (await db(services.message_send)(user=user, slug="general", body=body))[0]


async def test_join_replays_the_changes_in_seq_order_then_the_new_messages(alice, bob, general):
    await db(services.room_join)(user=bob, slug="general")
    first, second = await send(alice, "first"), await send(alice, "second")
    b = await connect(bob)
    await b.send(type="join", room="general", since=0, ref="j1")
    frames = await b.drain(0.3)
    cursor = max(f["message"]["seq"] for f in frames if "message" in f)
    since = max(f["message"]["id"] for f in frames if "message" in f)
    await b.close()

    await db(services.message_edit)(user=alice, message_id=first.pk, body="first, edited")
    await db(services.message_delete)(user=alice, message_id=second.pk)
    third = await send(alice, "third")
    await db(services.message_edit)(user=alice, message_id=first.pk, body="first, edited twice")

    b = await connect(bob)
    await b.send(type="join", room="general", since=since, changes_since=cursor, ref="j2")
    frames = await b.drain(0.3)
    joined = next(f for f in frames if f["type"] == "room.joined")
    room = await db(Room.objects.get)(slug="general")
    assert joined["seq"] == room.change_seq
    first, second, third = [await db(Message.objects.get)(pk=m.pk) for m in (first, second, third)]
    # Each changed message once, in its newest state, in seq order; then the new one.
    assert changed(frames) == [
        ("message.updated", second.pk, second.seq),
        ("message.updated", first.pk, first.seq),
        ("message.new", third.pk, third.seq),
    ]
    updates = [f["message"] for f in frames if f["type"] == "message.updated"]
    assert (updates[0]["deleted"], updates[0]["body"]) == (True, "")
    assert updates[1]["body"] == "first, edited twice"
    await b.close()


async def test_more_changes_than_the_replay_limit_send_a_gap_instead(alice, bob, general, settings):
    settings.CHAT_REPLAY_LIMIT = 2
    await db(services.room_join)(user=bob, slug="general")
    messages = [await send(alice, f"m{i}") for i in range(3)]
    cursor = (await db(Room.objects.get)(slug="general")).change_seq
    for message in messages:
        await db(services.message_edit)(user=alice, message_id=message.pk, body="edited")
    b = await connect(bob)
    await b.send(type="join", room="general", since=messages[-1].pk, changes_since=cursor, ref="j")
    frames = await b.drain(0.3)
    gap = next(f for f in frames if f["type"] == "room.gap")
    assert gap == {"type": "room.gap", "room": "general", "after": 0, "before": messages[-1].pk + 1, "changes": True}
    assert [f for f in frames if f["type"] == "message.updated"] == []
    await b.close()


async def test_a_change_that_overtakes_another_brings_both_in_order(alice, bob, general, monkeypatch):
    """Two processes publish after commit, so Redis may carry a later change first: the connection
    reads what it lacks from the database, in seq order, and drops the late event."""
    await db(services.room_join)(user=bob, slug="general")
    one, two = await send(alice, "one"), await send(alice, "two")
    b = await connect(bob)
    await b.drain(0.2)
    held = []
    monkeypatch.setattr(events, "send", lambda group, event: held.append((group, event)))
    await db(services.message_edit)(user=alice, message_id=one.pk, body="one, edited")
    await db(services.message_edit)(user=alice, message_id=two.pk, body="two, edited")
    for group, event in reversed(held):
        await events.send_async(group, event)
    one, two = [await db(Message.objects.get)(pk=m.pk) for m in (one, two)]
    assert changed(await b.drain(0.3)) == [
        ("message.updated", one.pk, one.seq),
        ("message.updated", two.pk, two.seq),
    ]
    await b.close()


async def test_a_change_that_overtakes_its_message_brings_the_message_as_it_is_now(alice, bob, general, monkeypatch):
    """An edit's event arrives before the message's own `message.new`: the connection sends the
    message once, edited, and never the stale copy that comes after."""
    await db(services.room_join)(user=bob, slug="general")
    b = await connect(bob)
    await b.drain(0.2)
    held = []
    monkeypatch.setattr(events, "send", lambda group, event: held.append((group, event)))
    message = await send(alice, "draft")
    await db(services.message_edit)(user=alice, message_id=message.pk, body="final")
    for group, event in reversed(held):
        await events.send_async(group, event)
    frames = [f for f in await b.drain(0.3) if "message" in f]
    assert [(f["type"], f["message"]["body"]) for f in frames] == [("message.new", "final")]
    await b.close()


async def test_a_rejoin_replays_only_the_changes_up_to_its_floor(alice, bob, general):
    """On a connection already following the room, the changes after its subscription came live."""
    await db(services.room_join)(user=bob, slug="general")
    message = await send(alice, "one")
    cursor = (await db(Room.objects.get)(slug="general")).change_seq
    await db(services.message_edit)(user=alice, message_id=message.pk, body="before")
    b = await connect(bob)
    await b.drain(0.2)
    await db(services.message_edit)(user=alice, message_id=message.pk, body="live")
    assert [f["message"]["body"] for f in await b.drain(0.3) if f["type"] == "message.updated"] == ["live"]
    await b.send(type="join", room="general", since=message.pk, changes_since=cursor, ref="j")
    frames = await b.drain(0.3)
    joined = next(f for f in frames if f["type"] == "room.joined")
    assert joined["seq"] == (await db(Room.objects.get)(slug="general")).change_seq
    # The edit before the subscription was superseded by the one that came live: nothing to replay.
    assert [f for f in frames if f["type"] == "message.updated"] == []
    await b.close()

    other = await send(alice, "two")
    cursor = (await db(Room.objects.get)(slug="general")).change_seq
    await db(services.message_edit)(user=alice, message_id=other.pk, body="two, before")
    b2 = await connect(bob)
    await b2.drain(0.2)
    await db(services.message_edit)(user=alice, message_id=message.pk, body="one, live")
    await b2.drain(0.3)
    await b2.send(type="join", room="general", since=other.pk, changes_since=cursor, ref="j")
    # The change before the subscription is replayed; the later one came live.
    assert [f["message"]["body"] for f in await b2.drain(0.3) if f["type"] == "message.updated"] == ["two, before"]
    await b2.close()


@pytest.mark.postgres
def test_a_replay_reads_changes_and_messages_in_one_snapshot(general):
    """Under `sql.snapshot` a change another connection commits meanwhile is not seen, so what a
    replay sends never holds a change whose predecessors it lacks."""
    before = Room.objects.get(slug="general").change_seq

    def bump():
        Room.objects.filter(slug="general").update(change_seq=before + 5)
        connections.close_all()

    with sql.snapshot():
        assert Room.objects.get(slug="general").change_seq == before
        writer = threading.Thread(target=bump)
        writer.start()
        writer.join()
        assert Room.objects.get(slug="general").change_seq == before
    assert Room.objects.get(slug="general").change_seq == before + 5
