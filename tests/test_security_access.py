"""Removal is final: a user who is no longer a member of a room (left, kicked, banned) or whose
room is archived gets nothing of it again, through no path: no subscription, replay, live
frame, typing or resend. Services directly, the consumer through the full ASGI app.
"""

import asyncio
import json

import pytest
from django.contrib.auth import get_user_model

from chat import events, services
from chat.errors import Forbidden, Muted, RoomLocked
from chat.models import Message
from tests.support import connect, db

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_layer")]

User = get_user_model()


@pytest.fixture
def rooms(general_with_bob, secret, alice, bob):
    """alice owns `general` (public) and `secret` (private); bob is a member of both."""
    services.member_invite(actor=alice, slug="secret", username="bob")
    return general_with_bob, secret


REMOVALS = {
    "kicked": lambda alice, bob: services.member_remove(actor=alice, slug="secret", username="bob"),
    "banned": lambda alice, bob: services.member_ban(actor=alice, slug="secret", username="bob"),
    "left": lambda alice, bob: services.room_leave(user=bob, slug="secret"),
    "archived": lambda alice, bob: services.room_archive(user=alice, slug="secret"),
}


# Services: a resend returns its original only while its author may write in the original's room


@pytest.mark.parametrize("removal", REMOVALS)
@pytest.mark.parametrize("resend_to", ["general", "secret"])
def test_a_resend_after_removal_is_forbidden_and_creates_nothing(alice, bob, rooms, removal, resend_to):
    original, _ = services.message_send(user=bob, slug="secret", body="inside", client_id="c-1")
    REMOVALS[removal](alice, bob)
    count = Message.objects.count()
    with pytest.raises(Forbidden) as refused:
        services.message_send(user=bob, slug=resend_to, body="inside", client_id="c-1")
    assert refused.value.code == "forbidden" and "new client_id" in refused.value.detail
    assert Message.objects.count() == count


def test_a_resend_racing_its_original_after_removal_is_forbidden(alice, bob, rooms, monkeypatch):
    """The original is found only when the insert collides with it (`_insert_or_original`)."""
    services.message_send(user=bob, slug="secret", body="inside", client_id="c-1")
    services.member_remove(actor=alice, slug="secret", username="bob")
    real, calls = services.batch._originals_from, []

    def lookup(rows, wanted):  # the batch's lookup misses it, as if it committed just after
        calls.append(wanted)
        return {} if len(calls) == 1 else real(rows, wanted)

    monkeypatch.setattr(services.batch, "_originals_from", lookup)
    count = Message.objects.count()
    with pytest.raises(Forbidden):
        services.message_send(user=bob, slug="general", body="inside", client_id="c-1")
    assert len(calls) == 2 and Message.objects.count() == count


def test_a_resend_by_a_member_who_may_not_write_gets_the_sends_refusal_then_the_original(alice, bob, rooms):
    """Muted or locked: the refusal a new send there gets (with `retry_after` when muted); once
    the member may write again, the duplicate acknowledgement."""
    original, _ = services.message_send(user=bob, slug="secret", body="inside", client_id="c-1")
    services.member_mute(actor=alice, slug="secret", username="bob", minutes=5)
    with pytest.raises(Muted) as muted:
        services.message_send(user=bob, slug="general", body="inside", client_id="c-1")
    assert muted.value.retry_after > 0
    services.member_unmute(actor=alice, slug="secret", username="bob")
    services.room_update(user=alice, slug="secret", locked=True)
    with pytest.raises(RoomLocked):
        services.message_send(user=bob, slug="secret", body="inside", client_id="c-1")
    services.room_update(user=alice, slug="secret", locked=False)
    assert services.message_send(user=bob, slug="general", body="inside", client_id="c-1") == (original, False)
    assert Message.objects.filter(client_id="c-1").count() == 1


def test_a_resend_over_rest_after_removal_is_403(alice, bob, rooms, api):
    services.message_send(user=bob, slug="secret", body="inside", client_id="c-1")
    services.member_ban(actor=alice, slug="secret", username="bob")
    response = api(bob).post("/api/rooms/general/messages/", {"body": "inside", "client_id": "c-1"}, format="json")
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert Message.objects.filter(client_id="c-1").count() == 1


# The consumer


async def nothing_of(client, slug: str, timeout=0.3):
    """Read until quiet: no frame names `slug`."""
    frames = await client.drain(timeout)
    leaked = [frame for frame in frames if frame.get("room") == slug]
    assert not leaked, f"frames of {slug!r} reached a non-member: {leaked}"
    return frames


@pytest.mark.parametrize("removal", ["kicked", "banned"])
async def test_the_resend_attack_gets_forbidden_and_no_subscription(alice, bob, rooms, removal):
    """The review's attack: removed from a private room, resend a client_id used there to a public room."""
    b = await connect(bob)
    await b.send(type="message.send", room="secret", body="inside", client_id="c-1", ref="s1")
    await b.expect("message.new", ref="s1")
    await db(REMOVALS[removal])(alice, bob)
    assert (await b.expect("room.left", room="secret"))["reason"] == removal
    await b.send(type="message.send", room="general", body="inside", client_id="c-1", ref="again")
    error = await b.expect("error", ref="again")
    assert error["code"] == "forbidden"
    await db(services.message_send)(user=alice, slug="secret", body="after the removal")
    a = await connect(alice)
    await a.send(type="typing", room="secret")
    await nothing_of(b, "secret")
    assert await db(Message.objects.filter(client_id="c-1").count)() == 1
    await a.close(), await b.close()


async def test_a_stale_subscribe_event_subscribes_nobody(alice, bob, rooms):
    """Invited then removed, the `chat.subscribe` of the invitation may come after the removal."""
    b = await connect(bob)
    await db(services.member_remove)(actor=alice, slug="secret", username="bob")
    await b.expect("room.left", room="secret")
    _, secret = rooms
    await events.send_async(
        events.user_group(bob.pk), {"type": "chat.subscribe", "room_id": secret.pk, "slug": "secret", "since": 0}
    )
    await db(services.message_send)(user=alice, slug="secret", body="after the removal")
    await nothing_of(b, "secret")
    await b.close()


@pytest.mark.parametrize("removal", ["kicked", "archived"])
async def test_a_removal_while_connecting_leaves_the_connection_out(alice, bob, rooms, removal, monkeypatch):
    """Removed (or archived) between the read of the user's rooms and their subscription: the
    removal's event is not missed, and nothing of the room comes after."""
    from chat.realtime.consumer import ChatConsumer

    read = ChatConsumer._open_session

    def open_session(self, slug):
        room_ids = read(self, slug)
        if self.user.pk == bob.pk:
            REMOVALS[removal](alice, bob)
        return room_ids

    monkeypatch.setattr(ChatConsumer, "_open_session", open_session)
    b = await connect(bob)
    _, secret = rooms
    await events.send_async(
        events.room_group(secret.pk),
        events.frame_event(
            {"type": "typing", "room": "secret", "user": {"id": alice.pk, "username": "alice"}}, room_id=secret.pk
        ),
    )
    frames = await b.drain()
    after = frames[max((i for i, f in enumerate(frames) if f["type"] == "room.left"), default=-1) + 1 :]
    assert not [frame for frame in after if frame.get("room") == "secret"], frames
    await b.close()


async def test_room_events_on_their_way_after_leaving_are_dropped(alice, rooms):
    """An event of a room still waiting in the inbox when the connection left it (no message id:
    typing, member and presence frames) is not sent."""
    from chat.realtime.consumer import ChatConsumer

    sent = []
    consumer = ChatConsumer()
    consumer.turn, consumer.acks, consumer.registered = asyncio.Lock(), {}, set()
    consumer.user, consumer.channel_name, consumer.socket = alice, "conn.me", None
    consumer.base_send = lambda message: asyncio.sleep(0, sent.append(json.loads(message["text"])))
    consumer.rooms, consumer.slugs = {}, {}
    general, _ = rooms
    typing = events.frame_event({"type": "typing", "room": "general"}, room_id=general.pk)
    await consumer.chat_frame(typing)
    assert sent == []
    consumer.rooms, consumer.slugs = {general.pk: 0}, {general.pk: "general"}
    await consumer.chat_frame(typing)
    assert [frame["type"] for frame in sent] == ["typing"]


async def test_join_of_a_room_archived_meanwhile_is_refused(alice, bob, rooms, monkeypatch):
    """`join` checks access, then subscribes: archived in between, the join answers the error and
    the connection is not subscribed."""
    b = await connect(bob)
    await b.send(type="leave", room="general", ref="l")
    await b.expect("room.left", ref="l")
    real = services.room_join

    def join_then_archive(*, user, slug):
        joined = real(user=user, slug=slug)
        services.room_archive(user=alice, slug=slug)
        return joined

    monkeypatch.setattr(services, "room_join", join_then_archive)
    await b.send(type="join", room="general", ref="j")
    error = await b.expect("error", ref="j")
    assert error["code"] == "not_found" and "archived" in error["detail"], error
    general, _ = rooms
    await events.send_async(
        events.room_group(general.pk),
        events.frame_event(
            {"type": "typing", "room": "general", "user": {"id": alice.pk, "username": "alice"}}, room_id=general.pk
        ),
    )
    await nothing_of(b, "general")
    await b.close()


async def test_an_acknowledgement_subscribes_only_a_member(alice, bob, staff, monkeypatch):
    """The first message to a new direct room subscribes its sender's connection when answered;
    archived between the write and the answer, the connection gets its acknowledgement and no
    subscription."""
    real = services.message_send_batch

    def send_then_archive(requests):
        results = real(requests)
        services.room_archive(user=staff, slug=results[0][0].room.slug)
        return results

    monkeypatch.setattr(services, "message_send_batch", send_then_archive)
    b = await connect(bob)
    await b.send(type="message.send", to="alice", body="hi", ref="dm")
    ack = await b.expect("message.new", ref="dm")
    slug = ack["room"]
    room_id = await db(lambda: Message.objects.get(pk=ack["message"]["id"]).room_id)()
    await events.send_async(
        events.room_group(room_id),
        events.frame_event(
            {"type": "typing", "room": slug, "user": {"id": alice.pk, "username": "alice"}}, room_id=room_id
        ),
    )
    frames = await b.drain()
    assert not [frame for frame in frames if frame.get("room") == slug and frame["type"] != "room.updated"], frames
    await b.close()
