"""The consumer through the full ASGI stack (auth middleware, routing) with WebsocketCommunicator.

Runs on whatever channel layer the settings give: in memory by default, the real Redis
layer when REDIS_URL is set.
"""

import asyncio
import gc
import json
import time

import pytest
from django.conf import settings as django_settings

from chat import events, services
from chat.models import Message
from tests.support import connect, db

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_layer")]


# Authentication and close codes


async def test_hello_lists_rooms_and_limits(alice, general):
    client = await connect(alice, via="header")
    assert client.hello["user"] == {"id": alice.pk, "username": "alice"}
    assert [r["slug"] for r in client.hello["rooms"]] == ["general"]
    assert client.hello["limits"] == {
        "max_body": django_settings.CHAT_MAX_BODY,
        "rate_per_10s": django_settings.CHAT_RATE_PER_10S,
    }
    assert client.hello["connection_id"]
    await client.close()


async def test_a_closed_connection_leaves_nothing_for_the_garbage_collector(alice, general):
    """A connection's objects are freed by reference counting as it closes: a full collection,
    which walks the whole heap with the GIL held, has nothing of it to find."""

    async def open_join_close():
        client = await connect(alice)
        await client.send(type="join", room="general")
        await client.expect("room.joined")
        await client.close()

    await open_join_close()  # first use: lazy imports and caches
    gc.collect()
    gc.disable()  # an automatic collection would free the cycles before they are counted
    try:
        for _ in range(10):
            await open_join_close()
        found = gc.collect()
    finally:
        gc.enable()
    assert found < 100, found  # 30 here; about 50 per connection while the finished tasks kept a cycle


async def test_no_credentials_closes_4401():
    client = await connect(None, hello=False)
    assert await client.closed() == 4401


async def test_bad_token_closes_4401_without_falling_back(alice):
    client = await connect(None, "/ws/chat/?token=not-a-jwt", hello=False)
    assert await client.closed() == 4401


async def test_inactive_user_closes_4403(make_user):
    user = await db(make_user)("ghost", is_active=False)
    client = await connect(user, hello=False)
    assert await client.closed() == 4403


async def test_room_route_close_codes(alice, bob, general, secret):
    assert await (await connect(bob, "/ws/chat/nope/", hello=False)).closed() == 4404
    assert await (await connect(bob, "/ws/chat/Bad_Slug/", hello=False)).closed() == 4404
    assert await (await connect(bob, "/ws/chat/secret/", hello=False)).closed() == 4403
    await db(services.room_archive)(user=alice, slug="general")
    assert await (await connect(bob, "/ws/chat/general/", hello=False)).closed() == 4410


async def test_room_route_joins_at_connect(alice, bob, general):
    client = await connect(bob, "/ws/chat/general/")
    joined = await client.expect("room.joined")
    assert joined["room"] == "general"
    assert "bob" in joined["online"]
    assert await db(Message.objects.filter(room=general, kind="system").count)() == 1
    await client.close()


async def test_session_cookie_needs_allowed_origin(client, alice, general):
    await db(client.force_login)(alice)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    good = await connect(
        path="/ws/chat/",
        headers=[(b"cookie", cookie), (b"origin", b"http://localhost:8000"), (b"host", b"localhost:8000")],
    )
    assert good.hello["user"]["username"] == "alice"
    await good.close()
    bad = await connect(
        path="/ws/chat/", headers=[(b"cookie", cookie), (b"origin", b"http://evil.example")], hello=False
    )
    assert await bad.closed() == 4401


async def test_connection_limit_closes_1013(alice, settings):
    settings.CHAT_MAX_CONNECTIONS = 1
    first = await connect(alice)
    second = await connect(alice, hello=False)
    assert await second.closed() == 1013
    await first.close()


async def test_per_user_connection_limit(alice, settings):
    settings.CHAT_MAX_CONNECTIONS_PER_USER = 1
    first = await connect(alice)
    second = await connect(alice, hello=False)
    assert await second.closed() == 1013
    await first.close()


# Messages


async def test_send_persists_then_delivers_to_every_subscriber(alice, bob, general):
    await db(services.room_join)(user=bob, slug="general")
    a, b = await connect(alice), await connect(bob)
    await a.send(type="message.send", room="general", body="hello", client_id="c1", ref="r1")
    ack = await a.expect("message.new")
    assert ack["ref"] == "r1" and "duplicate" not in ack
    got = await b.expect("message.new")
    assert got["message"] == {**ack["message"]}
    assert got["message"]["body"] == "hello" and got["message"]["author"] == {"id": alice.pk, "username": "alice"}
    assert await db(Message.objects.filter(pk=got["message"]["id"], body="hello").exists)()
    # the sender gets its acknowledgement once, not the broadcast again
    assert not [f for f in await a.drain() if f["type"] == "message.new"]
    await a.close(), await b.close()


async def test_resend_with_same_client_id_creates_nothing(alice, general):
    a = await connect(alice)
    await a.send(type="message.send", room="general", body="once", client_id="same")
    first = await a.expect("message.new")
    await a.send(type="message.send", room="general", body="once", client_id="same", ref="again")
    again = await a.expect("message.new")
    assert again["duplicate"] is True and again["ref"] == "again"
    assert again["message"]["id"] == first["message"]["id"]
    assert await db(Message.objects.filter(client_id="same").count)() == 1
    await a.close()


async def test_edit_and_delete_are_broadcast(alice, bob, general):
    await db(services.room_join)(user=bob, slug="general")
    a, b = await connect(alice), await connect(bob)
    await a.send(type="message.send", room="general", body="typo")
    mid = (await a.expect("message.new"))["message"]["id"]
    await a.send(type="message.edit", id=mid, body="fixed", ref="e")
    assert (await a.expect("message.updated"))["ref"] == "e"
    updated = await b.expect("message.updated")
    assert updated["message"]["body"] == "fixed" and updated["message"]["edited_at"]
    await b.send(type="message.edit", id=mid, body="hijack", ref="x")
    err = await b.expect("error")
    assert err["code"] == "forbidden" and err["ref"] == "x"
    await a.send(type="message.delete", id=mid)
    assert (await b.expect("message.deleted")) == {"type": "message.deleted", "room": "general", "id": mid}
    await a.close(), await b.close()


async def test_join_since_replays_in_order_without_duplicates(alice, bob, general):
    for i in range(5):
        await db(services.message_send)(user=alice, slug="general", body=f"m{i}")
    first_id = await db(lambda: Message.objects.filter(body="m0").get().pk)()
    b = await connect(bob)
    await b.send(type="join", room="general", since=first_id, ref="j")
    joined = await b.expect("room.joined")
    assert joined["ref"] == "j"
    bodies = [(await b.expect("message.new"))["message"]["body"] for _ in range(5)]
    assert bodies == ["m1", "m2", "m3", "m4", "bob joined"]
    await b.nothing()
    a = await connect(alice)
    await a.send(type="message.send", room="general", body="live")
    assert (await b.expect("message.new"))["message"]["body"] == "live"
    await b.nothing()
    await a.close(), await b.close()


async def test_join_since_with_too_many_missed_sends_gap(alice, general, settings):
    settings.CHAT_REPLAY_LIMIT = 3
    ids = [(await db(services.message_send)(user=alice, slug="general", body=f"m{i}"))[0].pk for i in range(6)]
    a = await connect(alice)
    await a.send(type="join", room="general", since=ids[0])
    await a.expect("room.joined")
    gap = await a.expect("room.gap")
    assert gap == {"type": "room.gap", "room": "general", "after": ids[0], "before": ids[3]}
    assert [(await a.expect("message.new"))["message"]["id"] for _ in range(3)] == ids[3:]
    await a.close()


async def test_direct_message_reaches_recipients_open_connection(alice, bob):
    a, b = await connect(alice), await connect(bob)
    await a.send(type="message.send", to="bob", body="psst", ref="dm")
    ack = await a.expect("message.new", ref="dm")
    room = ack["message"]["room"]
    assert room.startswith("dm-")
    joined = await b.expect("room.joined")
    assert joined["room"] == room
    got = await b.expect("message.new")
    assert got["message"]["body"] == "psst"
    await b.send(type="message.send", to="alice", body="hi back")
    assert (await a.expect("message.new"))["message"]["body"] == "hi back"
    await a.close(), await b.close()


# Bad input


@pytest.mark.parametrize(
    "raw, code",
    [
        ("not json", "bad_frame"),
        ("[1, 2]", "bad_frame"),
        ('{"room": "general"}', "bad_frame"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "join"}', "invalid"),
        ('{"type": "join", "room": 5}', "invalid"),
        ('{"type": "join", "room": "general", "since": -1}', "invalid"),
        ('{"type": "message.send", "body": "x"}', "invalid"),
        ('{"type": "message.edit", "id": "7", "body": "x"}', "invalid"),
        ('{"type": "join", "room": "nope"}', "not_found"),
    ],
)
async def test_bad_frames_get_errors_and_connection_survives(alice, general, raw, code):
    a = await connect(alice)
    await a.send_raw(raw)
    err = await a.expect("error")
    assert err["code"] == code and err["detail"]
    await a.send(type="ping", ref="p")
    assert (await a.expect("pong"))["ref"] == "p"
    await a.close()


async def test_oversized_body_is_too_large_and_stores_nothing(alice, general):
    a = await connect(alice)
    await a.send(type="message.send", room="general", body="x" * (django_settings.CHAT_MAX_BODY + 1), ref="big")
    err = await a.expect("error")
    assert (err["code"], err["ref"]) == ("too_large", "big")
    assert await db(Message.objects.filter(kind="user").count)() == 0
    await a.send(type="ping")
    await a.expect("pong")
    await a.close()


async def test_oversized_frame_closes_1009(alice, settings):
    settings.CHAT_MAX_FRAME_BYTES = 1000
    a = await connect(alice)
    await a.send(type="message.send", room="general", body="x" * 2000)
    assert await a.closed() == 1009


async def test_forbidden_actions(alice, bob, secret):
    b = await connect(bob)
    await b.send(type="join", room="secret")
    assert (await b.expect("error"))["code"] == "forbidden"
    await b.send(type="message.send", room="secret", body="let me in")
    assert (await b.expect("error"))["code"] == "forbidden"
    await b.send(type="typing", room="secret")
    assert (await b.expect("error"))["code"] == "forbidden"
    assert await db(Message.objects.filter(kind="user").count)() == 0
    await b.close()


async def test_rate_limit_then_flood_close(alice, general, settings):
    settings.CHAT_RATE_PER_10S = 2
    settings.CHAT_FLOOD_CLOSE_AFTER = 3
    a = await connect(alice)
    for i in range(2):
        await a.send(type="message.send", room="general", body=f"m{i}")
        await a.expect("message.new")
    await a.send(type="message.send", room="general", body="too many")
    err = await a.expect("error")
    assert err["code"] == "rate_limited" and 1 <= err["retry_after"] <= 10
    await a.send(type="message.send", room="general", body="again")
    await a.expect("error")
    await a.send(type="message.send", room="general", body="and again")
    assert await a.closed() == 1008
    assert await db(Message.objects.filter(kind="user").count)() == 2


# Rooms, presence, typing, reads


async def test_presence_first_open_and_last_close(alice, bob, general):
    await db(services.room_join)(user=bob, slug="general")
    a = await connect(alice)
    b1 = await connect(bob)
    is_bob = lambda f: f["user"]["username"] == "bob"  # noqa: E731
    assert (await a.expect("presence", where=is_bob))["status"] == "online"
    b2 = await connect(bob)
    await b1.close()
    assert not [f for f in await a.drain() if f["type"] == "presence"]  # still online through b2
    await b2.close()
    offline = await a.expect("presence", where=is_bob)
    assert offline["status"] == "offline"
    await a.close()


async def test_typing_relayed_to_others_throttled(alice, bob, general):
    await db(services.room_join)(user=bob, slug="general")
    a, b = await connect(alice), await connect(bob)
    await a.drain(), await b.drain()
    await a.send(type="typing", room="general")
    typing = await b.expect("typing")
    assert typing == {"type": "typing", "room": "general", "user": {"id": alice.pk, "username": "alice"}}
    await a.send(type="typing", room="general")
    await b.nothing(0.3)
    await a.nothing(0.1)
    await a.close(), await b.close()


async def test_read_marker_sends_unread(alice, bob, general):
    await db(services.room_join)(user=bob, slug="general")
    ids = [(await db(services.message_send)(user=alice, slug="general", body=f"m{i}"))[0].pk for i in range(3)]
    b1, b2 = await connect(bob), await connect(bob)
    await b1.send(type="read", room="general", message_id=ids[0], ref="rd")
    assert await b1.expect("unread") == {
        "type": "unread",
        "room": "general",
        "count": 2,
        "last_read_id": ids[0],
        "mentions": 0,
        "ref": "rd",
    }
    other = await b2.expect("unread")
    assert (other["count"], other["last_read_id"]) == (2, ids[0])
    await b1.close(), await b2.close()


async def test_leave_and_kick(alice, bob, carol, general):
    b = await connect(bob, "/ws/chat/general/")
    await b.expect("room.joined")
    c = await connect(carol)
    await c.send(type="join", room="general")
    await c.expect("room.joined")
    await c.send(type="leave", room="general", ref="bye")
    assert await c.expect("room.left") == {"type": "room.left", "room": "general", "reason": "left", "ref": "bye"}
    await db(services.member_remove)(actor=alice, slug="general", username="bob")
    left = await b.expect("room.left")
    assert left["reason"] == "kicked"
    assert await b.closed() == 4403
    await c.close()


async def test_join_over_rest_subscribes_open_connections(alice, bob, general):
    b = await connect(bob)
    await db(services.room_join)(user=bob, slug="general")
    assert (await b.expect("room.joined"))["room"] == "general"
    a = await connect(alice)
    await a.send(type="message.send", room="general", body="welcome")
    assert await b.expect("message.new", where=lambda f: f["message"]["body"] == "welcome")
    await a.close(), await b.close()


async def test_http_send_is_delivered_live(alice, bob, general):
    await db(services.room_join)(user=bob, slug="general")
    b = await connect(bob)
    await db(services.message_send)(user=alice, slug="general", body="from rest")
    assert (await b.expect("message.new"))["message"]["body"] == "from rest"
    await b.close()


async def test_archive_closes_bound_connections_4410(alice, bob, general):
    b = await connect(bob, "/ws/chat/general/")
    await b.expect("room.joined")
    await db(services.room_archive)(user=alice, slug="general")
    updated = await b.expect("room.updated")
    assert updated["archived"] is True
    assert await b.closed() == 4410


async def test_replay_races_with_live_sends(alice, bob, general, settings):
    """Messages committed while a join replays arrive exactly once."""
    settings.CHAT_RATE_PER_10S = 1000
    b = await connect(bob)  # not yet a member: the join below is its first subscription

    async def writer():
        for i in range(30):
            await db(services.message_send)(user=alice, slug="general", body=f"w{i}", client_id=f"w{i}")
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    await asyncio.sleep(0.01)
    await b.send(type="join", room="general", since=0)
    await task
    seen = [f["message"]["id"] for f in await b.drain(0.5) if f["type"] == "message.new"]
    expected = await db(
        lambda: list(Message.objects.filter(room=general).order_by("id").values_list("id", flat=True))
    )()
    assert sorted(seen) == expected and len(seen) == len(set(seen))
    await b.close()


async def test_internal_error_closes_1011_with_reference(alice, general, monkeypatch, caplog):
    def broken(requests):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services, "message_send_batch", broken)
    a = await connect(alice)
    await a.drain()
    await a.send(type="message.send", room="general", body="hi")
    out = await a.comm.receive_output(2)
    assert (out["type"], out["code"]) == ("websocket.close", 1011)
    reference = out["reason"].removeprefix("internal error ")
    assert len(reference) == 12 and reference in caplog.text and "disk on fire" in caplog.text
    await a.comm.disconnect()


async def test_events_that_overtake_each_other_are_delivered_in_id_order(alice, bob, general, monkeypatch):
    """Two processes publish after commit, so Redis may carry m2 before m1: the connection
    sends m1 (read from the database) before m2, and drops m1's late event."""
    await db(services.room_join)(user=bob, slug="general")
    b = await connect(bob)
    await b.drain()
    held = []
    monkeypatch.setattr(events, "send", lambda group, event: held.append((group, event)))
    m1, _ = await db(services.message_send)(user=alice, slug="general", body="first")
    m2, _ = await db(services.message_send)(user=alice, slug="general", body="second")
    assert [e["message_id"] for _, e in held] == [m1.pk, m2.pk]
    assert held[1][1]["prev_id"] == m1.pk
    for group, event in reversed(held):
        await events.send_async(group, event)
    got = [f["message"]["id"] for f in await b.drain(0.3) if f["type"] == "message.new"]
    assert got == [m1.pk, m2.pk]
    await b.close()


async def test_a_message_that_never_comes_is_read_once_for_every_connection(alice, bob, carol, general, monkeypatch):
    """m1's event is lost on its way from another process: after the hub's wait, the process
    reads m1 from the database once, and each connection sends m1 before m2."""
    from chat import metrics

    for user in (bob, carol):
        await db(services.room_join)(user=user, slug="general")
    clients = [await connect(bob), await connect(carol)]
    for client in clients:
        await client.drain()
    held = []
    monkeypatch.setattr(events, "send", lambda group, event: held.append((group, event)))
    m1, _ = await db(services.message_send)(user=alice, slug="general", body="first")
    m2, _ = await db(services.message_send)(user=alice, slug="general", body="second")
    before = metrics.LAYER_GAPS._value.get()
    await events.send_async(*held[1])  # m1 never comes
    for client in clients:
        got = [
            (f["message"]["id"], f["message"]["body"]) for f in await client.drain(0.3) if f["type"] == "message.new"
        ]
        assert got == [(m1.pk, "first"), (m2.pk, "second")]
    assert metrics.LAYER_GAPS._value.get() == before + 1  # one read, not one per connection
    for client in clients:
        await client.close()


async def test_a_catch_up_larger_than_the_replay_limit_announces_the_gap(alice, bob, general, monkeypatch, settings):
    settings.CHAT_REPLAY_LIMIT = 1
    await db(services.room_join)(user=bob, slug="general")
    b = await connect(bob)
    mark = b.hello["rooms"][0]["last_message_id"]
    await b.drain()
    held = []
    monkeypatch.setattr(events, "send", lambda group, event: held.append((group, event)))
    ids = [(await db(services.message_send)(user=alice, slug="general", body=f"m{i}"))[0].pk for i in range(3)]
    await events.send_async(*held[-1])  # the newest overtook both others
    frames = [f for f in await b.drain(0.3) if f["type"] in ("room.gap", "message.new")]
    # Its creation is a change too, and the changes before it are over the limit: the client is
    # told to reload up to it (`changes`), gets the first one read, then the newest.
    assert frames[0] == {"type": "room.gap", "room": "general", "after": mark, "before": ids[2], "changes": True}
    assert [f["message"]["id"] for f in frames[1:]] == [ids[0], ids[2]]
    await b.close()


async def test_an_ack_waits_for_the_messages_before_it(alice, bob, general, monkeypatch):
    """Bob's m1 is still on its way when Alice's m2 is stored: her ack (m2) comes after m1."""
    await db(services.room_join)(user=bob, slug="general")
    a = await connect(alice)
    await a.drain()
    held = []
    monkeypatch.setattr(events, "send", lambda group, event: held.append((group, event)))
    m1, _ = await db(services.message_send)(user=bob, slug="general", body="first")
    await a.send(type="message.send", room="general", body="second", ref="r1")
    frames = [f for f in await a.drain(0.3) if f["type"] == "message.new"]
    assert [(f["message"]["body"], f.get("ref")) for f in frames] == [("first", None), ("second", "r1")]
    await events.send_async(*held[0])  # m1's late event changes nothing
    await a.nothing(0.3)
    await a.close()


async def test_an_ack_whose_own_event_is_lost_still_comes_in_order(alice, bob, general, monkeypatch):
    from chat import events
    from chat.realtime import delivery

    monkeypatch.setattr(delivery, "ACK_WAIT_S", 0.3)
    await db(services.room_join)(user=bob, slug="general")
    a = await connect(alice)
    await a.drain()
    monkeypatch.setattr(events, "send", lambda group, event: None)  # m1's event is lost
    m1, _ = await db(services.message_send)(user=bob, slug="general", body="first")
    send_async = events.send_async

    async def lose_messages(group, event):
        if event.get("message_id") is None:
            await send_async(group, event)

    monkeypatch.setattr(events, "send_async", lose_messages)  # and so is m2's
    await a.send(type="message.send", room="general", body="second", ref="r1")
    await a.nothing(0.15)  # the ack waits...
    frames = [f for f in await a.drain(0.5) if f["type"] == "message.new"]  # ...then reads m1 from the database
    assert [(f["message"]["body"], f.get("ref")) for f in frames] == [("first", None), ("second", "r1")]
    assert await db(Message.objects.filter(room=general, body="second").count)() == 1
    await a.close()


async def test_an_unexpected_error_in_an_event_handler_ends_the_connection(alice, bob, general, monkeypatch):
    """A failing channel-layer handler must not leave the socket open with nothing delivering to it."""
    from chat.realtime.consumer import ChatConsumer

    async def broken(self, event):
        raise RuntimeError("handler bug")

    from chat.realtime import connections

    await db(services.room_join)(user=bob, slug="general")
    before = connections.count()
    b = await connect(bob)
    await b.drain()
    monkeypatch.setattr(ChatConsumer, "chat_frame", broken)
    await db(services.message_send)(user=alice, slug="general", body="hi")
    with pytest.raises(RuntimeError, match="handler bug"):
        await b.comm.receive_output(2)
    assert connections.count() == before  # cleaned up as on a disconnect


@pytest.mark.parametrize("max_batch, expected", [(500, [11]), (4, [4, 4, 3])])
async def test_sends_in_a_row_are_written_together_and_every_frame_is_answered_in_order(
    alice, general, monkeypatch, max_batch, expected
):
    """Read while none was written yet: one batch, one commit; up to MAX_BATCH sends each."""
    from chat import services as chat_services
    from chat.realtime import writer

    monkeypatch.setattr(writer, "MAX_BATCH", max_batch)

    batches = []
    send_batch = chat_services.message_send_batch

    def record(requests):
        batches.append(len(requests))
        return send_batch(requests)

    monkeypatch.setattr(chat_services, "message_send_batch", record)
    a = await connect(alice)
    await a.drain()
    for i in range(10):
        await a.send(type="message.send", room="general", body=f"m{i}", ref=f"s{i}")
    await a.send(type="message.send", room="general", body="", ref="bad")  # refused, in its place
    await a.send(type="ping", ref="p")
    frames = [await a.recv() for _ in range(12)]
    assert [f.get("ref") for f in frames] == [f"s{i}" for i in range(10)] + ["bad", "p"]
    assert [f["type"] for f in frames[10:]] == ["error", "pong"]
    assert [f["message"]["body"] for f in frames[:10]] == [f"m{i}" for i in range(10)]
    assert batches == expected
    await a.close()


async def test_a_send_is_parsed_as_it_arrives_before_its_batch_is_written(alice, general, monkeypatch):
    """The Markdown parse runs on the event loop as the frame arrives (`markup.parse_ahead`): the
    database thread, busy with the batch before it, then only renders."""
    from chat import markup
    from chat import services as chat_services

    events_seen = []
    monkeypatch.setattr(markup, "parse_ahead", lambda body: events_seen.append(("parsed", body)))
    send_batch = chat_services.message_send_batch

    def record(requests):
        events_seen.append(("written", [request["body"] for request in requests]))
        return send_batch(requests)

    monkeypatch.setattr(chat_services, "message_send_batch", record)
    a = await connect(alice)
    await a.drain()
    await a.send(type="message.send", room="general", body="**bold**", ref="s")
    assert (await a.recv())["message"]["html"] == "<p><strong>bold</strong></p>"
    assert events_seen == [("parsed", "**bold**"), ("written", ["**bold**"])]
    await a.close()


async def test_an_ack_is_waiting_before_its_event_can_overtake_the_answer(alice, general):
    """The connection's own event may come back before its `message.send` is answered: the ack
    goes out in the event's place, once, before the next message."""
    from chat.realtime.consumer import ChatConsumer
    from chat.realtime.stream import RoomStream

    sent = []
    consumer = ChatConsumer()
    consumer.turn, consumer.inbox, consumer.queued, consumer.ack_timers = asyncio.Lock(), None, 0, {}
    consumer.user, consumer.channel_name = alice, "conn.me"
    consumer.base_send = lambda message: asyncio.sleep(0, sent.append(json.loads(message["text"])))
    first, _ = await db(services.message_send)(user=alice, slug="general", body="before")
    consumer.stream = RoomStream(user_id=alice.pk, origin="conn.me")
    consumer.stream.subscribe(general.pk, "general")
    consumer.stream.advance(general.pk, first.pk)
    mine, _ = await db(services.message_send)(user=alice, slug="general", body="mine")
    consumer._written("r1", (mine, True))  # stored: its ack waits from now on
    own = events.frame_event(
        {"type": "message.new"}, room_id=general.pk, message_id=mine.pk, prev_id=first.pk, origin="conn.me"
    )
    later = events.frame_event(
        {"type": "message.new", "n": 3}, room_id=general.pk, message_id=mine.pk + 1, prev_id=mine.pk
    )
    await consumer.chat_frame(own)  # the event came back first
    await consumer.chat_frame(later)
    await consumer._acknowledge(None, (mine, True), time.perf_counter())  # the answer adds nothing
    assert [(f.get("ref"), f.get("message", {}).get("id"), f.get("n")) for f in sent] == [
        ("r1", mine.pk, None),
        (None, None, 3),
    ]
    assert not consumer.stream.acks and not consumer.stream.registered and not consumer.ack_timers
