"""Mentions and notifications (PROTOCOL.md, Version 2): the unread mention count, `hello` and
`unread`, the `notification` frame for each `notify` setting and reason, the membership over
REST and the mentions inbox."""

import pytest

from chat import events, selectors, services, sql
from chat.errors import Invalid
from chat.models import Membership, Message, Room
from chat.realtime.stream import DROP, SEND, RoomStream
from chat.serializers import message_data
from chat.services import content, notify
from tests.support import connect, db, joined, membership, send

# The unread mention count


def test_unread_mentions_count_named_and_room_mentions_after_the_read_marker(alice, bob, carol, general):
    joined(general, bob, carol)
    seen = send(bob, general, "@alice before the marker")
    services.read_mark(user=alice, slug="general", message_id=seen.pk)
    send(bob, general, "hi @alice")
    send(carol, general, "@room lunch")
    send(bob, general, "nothing for alice")
    send(bob, general, "@carol only")
    send(alice, general, "@room my own")
    deleted = send(bob, general, "@alice oops")
    services.message_delete(user=bob, message_id=deleted.pk)
    assert selectors.unread_counts(membership(general, alice)) == (4, 2)
    services.read_mark(user=alice, slug="general", message_id=seen.pk + 2)  # past both mentions
    assert selectors.unread_counts(membership(general, alice)) == (2, 0)


def test_a_room_mention_from_before_one_joined_is_not_ones_mention(api, alice, bob, general):
    send(alice, general, "@room before bob")
    joined(general, bob)
    after = send(alice, general, "@room with bob")
    assert selectors.unread_counts(membership(general, bob)) == (2, 1)
    assert [room.mentions for room in selectors.rooms_for_user(bob, member_only=True)] == [1]
    assert [room["mentions"] for room in selectors.room_summaries(bob)] == [1]
    assert [m["id"] for m in api(bob).get("/api/mentions/").json()["results"]] == [after.pk]


# hello and unread


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_layer")
async def test_hello_rooms_carry_mentions_and_the_effective_notify(alice, bob, general):
    await db(joined)(general, bob)
    direct = await db(services.direct_room)(user=alice, username="bob")
    await db(send)(bob, general, "hey @alice")
    await db(send)(bob, direct, "psst")
    client = await connect(alice)
    rooms = {room["slug"]: room for room in client.hello["rooms"]}
    assert (rooms["general"]["mentions"], rooms["general"]["notify"]) == (1, "mentions")
    assert (rooms[direct.slug]["mentions"], rooms[direct.slug]["notify"]) == (0, "all")
    await db(services.membership_notify_set)(user=alice, slug="general", notify="none")
    again = await connect(alice)
    assert {room["slug"]: room["notify"] for room in again.hello["rooms"]}["general"] == "none"
    await client.close(), await again.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_layer")
async def test_the_unread_frame_carries_mentions(alice, bob, general):
    await db(joined)(general, bob)
    first = await db(send)(alice, general, "hi @bob")
    await db(send)(alice, general, "@room and you")
    client = await connect(bob)
    await client.send(type="read", room="general", message_id=first.pk, ref="r")
    unread = await client.expect("unread")
    assert (unread["count"], unread["mentions"], unread["ref"]) == (1, 1, "r")
    await client.close()


# notification frames


def notifications(published) -> list[tuple[list[int], str, str]]:
    """(recipients, reason, body) of each published `notification`."""
    return [
        (event["notify_users"], event["frame"]["reason"], event["frame"]["message"]["body"])
        for _, event in published
        if event.get("frame", {}).get("type") == "notification"
    ]


@pytest.fixture
def trio(alice, bob, carol, general):
    return joined(general, bob, carol)


def test_mentions_alert_those_named_and_a_room_mention_everyone_but_the_author(
    trio, alice, bob, carol, published, committed
):
    with committed():
        send(alice, trio, "hi @bob")
        send(alice, trio, "@room lunch")
        send(alice, trio, "plain")
        send(alice, trio, "@alice talking to myself")
    assert notifications(published) == [
        ([bob.pk], "mention", "hi @bob"),
        (sorted([bob.pk, carol.pk]), "room_mention", "@room lunch"),
    ]


def test_a_message_naming_some_and_the_room_alerts_each_once_with_one_event_per_reason(
    trio, alice, bob, carol, published, committed
):
    with committed():
        send(alice, trio, "@room and especially @bob")
    assert notifications(published) == [
        ([bob.pk], "mention", "@room and especially @bob"),
        ([carol.pk], "room_mention", "@room and especially @bob"),
    ]


def test_each_notify_setting(trio, alice, bob, carol, published, committed):
    services.membership_notify_set(user=bob, slug="general", notify="none")
    services.membership_notify_set(user=carol, slug="general", notify="all")
    with committed():
        send(alice, trio, "plain")
        send(alice, trio, "hi @bob and @carol")
        send(alice, trio, "@room")
    assert notifications(published) == [
        ([carol.pk], "direct", "plain"),
        ([carol.pk], "mention", "hi @bob and @carol"),
        ([carol.pk], "room_mention", "@room"),
    ]


def test_a_direct_room_alerts_every_message_unless_told_otherwise(alice, bob, published, committed):
    room = services.direct_room(user=alice, username="bob")
    with committed():
        send(alice, room, "psst")
        send(alice, room, "@bob look")
    services.membership_notify_set(user=bob, slug=room.slug, notify="mentions")
    with committed():
        send(alice, room, "quiet now")
        send(alice, room, "@bob but this")
    assert notifications(published) == [
        ([bob.pk], "direct", "psst"),
        ([bob.pk], "mention", "@bob look"),
        ([bob.pk], "mention", "@bob but this"),
    ]


def test_banned_removed_and_inactive_members_are_not_alerted(trio, alice, bob, carol, dave, published, committed):
    joined(trio, dave)
    services.member_ban(actor=alice, slug="general", username="bob")
    services.room_leave(user=carol, slug="general")
    dave.is_active = False
    dave.save()
    with committed():
        send(alice, trio, "@room anyone?")
    assert notifications(published) == []


def test_system_messages_alert_nobody(alice, bob, published, committed):
    room = services.direct_room(user=alice, username="bob")
    services.membership_notify_set(user=alice, slug=room.slug, notify="all")
    with committed():
        joined(services.room_create(user=alice, name="Busy", slug="busy"), bob)  # "bob joined"
    assert notifications(published) == []


def test_whom_to_alert_is_read_with_one_statement_for_a_batch(trio, alice, bob, carol, django_assert_num_queries):
    direct = services.direct_room(user=alice, username="bob")
    services.membership_notify_set(user=carol, slug="general", notify="all")
    drafts = [Message(room=trio, author=alice, body=body) for body in ("@bob", "plain", "@room")]
    drafts.append(Message(room=direct, author=alice, body="psst"))
    content.render(drafts)
    with django_assert_num_queries(1):
        [rows] = sql.fetch_all([notify.audience(drafts)])
    found = notify.recipients(drafts, rows)
    assert found == [
        {bob.pk: "mention", carol.pk: "direct"},
        {carol.pk: "direct"},
        {bob.pk: "room_mention", carol.pk: "room_mention"},
        {bob.pk: "direct"},
    ]


def test_an_edit_alerts_only_the_newly_mentioned(trio, alice, bob, carol, dave, published, committed):
    joined(trio, dave)
    services.membership_notify_set(user=dave, slug="general", notify="all")  # alerted at the send
    message = send(alice, trio, "hi @bob")
    with committed():
        services.message_edit(user=alice, message_id=message.pk, body="hi @bob and @carol and @dave")
    assert notifications(published) == [([carol.pk], "mention", "hi @bob and @carol and @dave")]
    published.clear()
    with committed():
        services.message_edit(user=alice, message_id=message.pk, body="hi @room")
    assert notifications(published) == []  # bob and carol were mentioned before, dave follows everything
    other = send(alice, trio, "later")
    published.clear()
    with committed():
        services.message_edit(user=alice, message_id=other.pk, body="later, @room")
    assert notifications(published) == [(sorted([bob.pk, carol.pk]), "room_mention", "later, @room")]


def test_a_mention_removed_and_written_again_alerts_once(trio, alice, bob, carol, published, committed):
    with committed():
        message = send(alice, trio, "hi @bob")
    for body in ("hi", "hi @bob again", "@room", "no one", "@room again, @carol"):
        with committed():
            services.message_edit(user=alice, message_id=message.pk, body=body)
    assert notifications(published) == [
        ([bob.pk], "mention", "hi @bob"),
        ([carol.pk], "room_mention", "@room"),  # bob was alerted by the first version
    ]
    message.refresh_from_db()
    assert message.earlier_mentions == {"users": [bob.pk], "room": True}
    assert "earlier_mentions" not in message_data(message)


def test_a_notification_event_names_its_users_and_no_message_id(trio, alice, bob, published, committed):
    with committed():
        message = send(alice, trio, "@bob")
    [(group, event)] = [(g, e) for g, e in published if e["frame"]["type"] == "notification"]
    assert group == events.room_group(trio.pk)
    assert (event["message_id"], event["seq"], event["changed_id"], event["notify_users"]) == (
        None,
        None,
        None,
        [bob.pk],
    )
    assert event["frame"]["message"]["id"] == message.pk and event["frame"]["room"] == "general"


def test_a_connection_takes_a_notification_only_for_its_user_and_moves_no_mark():
    stream = RoomStream(user_id=7, origin="c1")
    stream.subscribe(1, "general")
    stream.opened(1, last_id=10, seq=20)
    for users, action in (([3, 7, 9], SEND), ([7], SEND), ([3, 9], DROP), ([], DROP), ([8, 70], DROP)):
        event = events.frame_event({"type": "notification"}, room_id=1, notify_users=users)
        assert stream.take(event) == action
    assert (stream.marks[1], stream.changes[1]) == (10, 20)
    assert (
        stream.take(events.frame_event({"type": "notification"}, room_id=2, notify_users=[7])) == DROP
    )  # not followed


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_layer")
async def test_only_the_alerted_users_connections_get_the_notification_once_per_message(alice, bob, carol, general):
    await db(joined)(general, bob, carol)
    a, b1, b2, c = await connect(alice), await connect(bob), await connect(bob), await connect(carol)
    await a.send(type="message.send", room="general", body="hi @bob", ref="s1")
    first = (await a.expect("message.new"))["message"]
    await a.send(type="message.send", room="general", body="@room", ref="s2")
    second = (await a.expect("message.new"))["message"]
    last = await db(send)(bob, general, "plain")  # after it, every alert of the two above has come
    for client, expected in (
        (a, []),
        (b1, [(first["id"], "mention"), (second["id"], "room_mention")]),
        (b2, [(first["id"], "mention"), (second["id"], "room_mention")]),
        (c, [(second["id"], "room_mention")]),
    ):
        alerts = []
        while True:
            frame = await client.recv()
            if frame["type"] == "notification":
                assert frame["room"] == "general"
                alerts.append((frame["message"]["id"], frame["reason"]))
            if frame["type"] == "message.new" and frame["message"]["id"] == last.pk:
                break
        assert alerts == expected
    for client in (a, b1, b2, c):
        await client.close()


# REST: the membership and the mentions inbox


def test_membership_get_and_patch(api, alice, bob, general):
    joined(general, bob)
    send(alice, general, "hi @bob")
    send(alice, general, "plain")
    response = api(bob).get("/api/rooms/general/membership/")
    assert response.status_code == 200
    assert response.json() == {"role": "member", "notify": "mentions", "last_read_id": 0, "unread": 2, "mentions": 1}
    patched = api(bob).patch("/api/rooms/general/membership/", {"notify": "all"}, format="json")
    assert patched.status_code == 200 and patched.json()["notify"] == "all"
    assert membership(general, bob).notify == "all"
    assert api(bob).get("/api/rooms/general/membership/").json()["notify"] == "all"


def test_membership_refuses_other_values_and_non_members(api, alice, bob, carol, general):
    joined(general, bob)
    for value in ("loud", "", None, 1):
        response = api(bob).patch("/api/rooms/general/membership/", {"notify": value}, format="json")
        assert response.status_code == 400 and "notify" in response.json(), response.json()
    assert membership(general, bob).notify == ""
    assert api(carol).get("/api/rooms/general/membership/").status_code == 403
    assert api(carol).patch("/api/rooms/general/membership/", {"notify": "all"}, format="json").status_code == 403
    assert api(bob).get("/api/rooms/nope/membership/").status_code == 404
    assert api().get("/api/rooms/general/membership/").status_code == 401


def test_the_direct_room_membership_defaults_to_all(api, alice, bob):
    room = services.direct_room(user=alice, username="bob")
    assert api(bob).get(f"/api/rooms/{room.slug}/membership/").json()["notify"] == "all"


def test_the_room_list_carries_mentions(api, alice, bob, general):
    joined(general, bob)
    send(alice, general, "hi @bob")
    [row] = [row for row in api(bob).get("/api/rooms/").json() if row["slug"] == "general"]
    assert (row["unread"], row["mentions"]) == (1, 1)


def test_the_mentions_inbox_pages_back_from_the_newest(api, alice, bob, carol, general):
    joined(general, bob, carol)
    mentions = []
    for i in range(5):
        mentions.append(send(alice, general, f"@bob {i}").pk)
        send(alice, general, "plain")
        send(bob, general, f"@room from bob {i}")  # bob's own
    mentions.append(send(carol, general, "@room from carol").pk)
    deleted = send(alice, general, "@bob deleted")
    services.message_delete(user=alice, message_id=deleted.pk)
    page = api(bob).get("/api/mentions/?limit=4").json()
    assert [m["id"] for m in page["results"]] == mentions[-4:] and page["has_more"] is True
    before = page["results"][0]["id"]
    rest = api(bob).get(f"/api/mentions/?limit=4&before={before}").json()
    assert [m["id"] for m in rest["results"]] == mentions[:2] and rest["has_more"] is False
    assert rest["results"][0]["body"] == "@bob 0"


def test_the_mentions_inbox_lists_only_rooms_the_caller_reads(api, alice, bob, general):
    joined(general, bob)
    private = services.room_create(user=alice, name="Private", slug="private", kind=Room.Kind.PRIVATE)
    services.member_invite(actor=alice, slug="private", username="bob")
    public = services.room_create(user=alice, name="Public", slug="public")
    joined(public, bob)
    kept = send(alice, general, "@bob here")
    send(alice, private, "@bob there")
    left = send(alice, public, "@bob still readable")
    send(alice, public, "@room before bob left")
    services.room_leave(user=bob, slug="private")  # private: no longer readable
    services.room_leave(user=bob, slug="public")  # public: readable, named mentions stay, @room goes
    send(alice, services.room_create(user=alice, name="Never", slug="never"), "@room not bob's")
    assert [m["id"] for m in api(bob).get("/api/mentions/").json()["results"]] == [kept.pk, left.pk]
    services.member_ban(actor=alice, slug="general", username="bob")
    assert [m["id"] for m in api(bob).get("/api/mentions/").json()["results"]] == [left.pk]


def test_the_mentions_inbox_validates_its_query(api, bob):
    for query in ("limit=0", "limit=201", "before=0", "before=x"):
        assert api(bob).get(f"/api/mentions/?{query}").status_code == 400
    assert api().get("/api/mentions/").status_code == 401


def test_the_membership_notify_service_refuses_bad_values(alice, general):
    with pytest.raises(Invalid, match="notify"):
        services.membership_notify_set(user=alice, slug="general", notify="loud")
    assert Membership.objects.get(user=alice).notify == ""
