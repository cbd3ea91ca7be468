"""chat/services/messages.py: sending, editing, deleting messages and read markers.

Against the real database: the rows a service writes and the events it publishes on commit.
Setup calls run outside `committed()`, so their on-commit events never fire; only the call
under test publishes into `published`.
"""

import re
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from django.db import transaction
from django.utils import timezone

from chat import events, limits, services
from chat.errors import Forbidden, Gone, Invalid, Muted, NotFound, RateLimited, RoomLocked, TooLarge
from chat.models import Membership, Message, Room
from tests.support import frames, membership, room_events, send, snapshot, subscribe_event

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


# message_send


def test_message_send_persists_then_publishes_the_wire_shape(alice, general, published, committed, monkeypatch):
    visible_at_send = []
    record = events.send
    monkeypatch.setattr(
        events,
        "send",
        lambda group, event: (
            visible_at_send.append(Message.objects.filter(pk=event["message_id"]).exists()),
            record(group, event),
        ),
    )
    with committed():
        message, created = services.message_send(user=alice, slug="general", body=" hello\n", client_id="c-1")
        assert published == []  # not before commit
    row = Message.objects.get()
    assert created and message == row
    assert (row.room, row.author, row.body, row.kind, row.client_id) == (general, alice, " hello\n", "user", "c-1")
    assert visible_at_send == [True]
    [(group, event)] = published
    assert group == f"room.{general.pk}"
    assert (event["type"], event["room_id"], event["message_id"], event["origin"]) == (
        "chat.frame",
        general.pk,
        row.pk,
        None,
    )
    created_at = event["frame"]["message"]["created_at"]
    assert event["frame"] == {
        "type": "message.new",
        "room": "general",
        "message": {
            "id": row.pk,
            "room": "general",
            "author": {"id": alice.pk, "username": "alice"},
            "body": " hello\n",
            "kind": "user",
            "client_id": "c-1",
            "created_at": created_at,
            "edited_at": None,
            "deleted": False,
            "html": "<p>hello</p>",  # leading and trailing spaces do not show
            "reply_to": None,
            "thread": None,
            "reply_count": 0,
            "mentions": [],
            "mentions_room": False,
            "reactions": [],
            "attachments": [],
            "seq": row.seq,
        },
    }
    assert TIMESTAMP.fullmatch(created_at)
    assert datetime.fromisoformat(created_at.replace("Z", "+00:00")) == row.created_at.replace(
        microsecond=row.created_at.microsecond // 1000 * 1000
    )


def test_message_send_without_client_id_and_as_emote(alice, general, published, committed):
    with committed():
        message, _ = services.message_send(user=alice, slug="general", body="waves", kind="emote", origin="conn-1")
    [(_, event)] = published
    assert (event["frame"]["message"]["client_id"], event["frame"]["message"]["kind"]) == (None, "emote")
    assert event["origin"] == "conn-1"
    assert (message.client_id, message.kind) == ("", "emote")


def test_message_send_publishes_nothing_when_the_transaction_rolls_back(alice, general, published, committed):
    with committed():
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                send(alice, general)
                raise RuntimeError("crash after the insert")
    assert not Message.objects.exists()
    assert published == []


def test_duplicate_client_id_returns_the_original(alice, bob, general, published, committed):
    services.room_join(user=bob, slug="general")
    original = send(alice, general, "first", client_id="c-1")
    before = snapshot()
    with committed():
        message, created = services.message_send(user=alice, slug="general", body="second", client_id="c-1")
    assert (message, created, message.body) == (original, False, "first")
    assert snapshot() == before
    assert published == []
    with committed():
        other, created = services.message_send(user=bob, slug="general", body="mine", client_id="c-1")
    assert created and other.pk > original.pk and other.author == bob
    assert [f["message"]["id"] for f in frames(published, "message.new")] == [other.pk]


@pytest.mark.parametrize("body", ["", "   ", "\n\t", None, 5, ["hi"]])
def test_message_send_empty_or_non_text_body_is_invalid(alice, general, refused, body):
    with refused(Invalid, match="body"):
        services.message_send(user=alice, slug="general", body=body)


def test_message_send_body_limit(alice, general, settings, refused):
    settings.CHAT_MAX_BODY = 10
    with refused(TooLarge, match="limit is 10") as info:
        send(alice, general, "x" * 11)
    assert (info.value.code, info.value.status) == ("too_large", 413)
    assert send(alice, general, "é" * 10).body == "é" * 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"client_id": "c" * 65}, "client_id"),
        ({"client_id": 5}, "client_id"),
        ({"kind": "system"}, "kind"),
    ],
)
def test_message_send_bad_options_are_invalid(alice, general, refused, kwargs, match):
    with refused(Invalid, match=match):
        send(alice, general, **kwargs)


def test_message_send_needs_a_room_or_recipient(alice, refused):
    with refused(Invalid, match="room"):
        services.message_send(user=alice, body="hi")


def test_message_send_by_non_member_is_forbidden(bob, general, secret, refused):
    for room in (general, secret):
        with refused(Forbidden):
            send(bob, room)


def test_message_send_to_unknown_or_archived_room(alice, general, refused):
    with refused(NotFound):
        services.message_send(user=alice, slug="nope", body="hi")
    services.room_archive(user=alice, slug="general")
    with refused(Gone):
        send(alice, general)


def test_message_send_by_banned_member_is_forbidden(alice, bob, general, refused):
    Membership.objects.create(room=general, user=bob, banned=True)
    with refused(Forbidden, match="banned"):
        send(bob, general)


def test_message_send_in_a_locked_room(alice, staff, general, refused):
    services.room_update(user=alice, slug="general", locked=True)
    with refused(RoomLocked) as info:
        send(alice, general)
    assert info.value.code == "room_locked"
    services.room_join(user=staff, slug="general")
    assert send(staff, general, "announcement").body == "announcement"


def test_message_send_while_muted(alice, bob, general, refused):
    services.room_join(user=bob, slug="general")
    Membership.objects.filter(user=bob).update(muted_until=timezone.now() + timedelta(seconds=90))
    with refused(Muted, match="muted") as info:
        send(bob, general)
    assert info.value.retry_after in (89, 90)
    Membership.objects.filter(user=bob).update(muted_until=timezone.now() - timedelta(seconds=1))
    assert send(bob, general).author == bob


def test_message_edit_obeys_lock_and_mute(alice, bob, staff, general, refused):
    services.room_join(user=bob, slug="general")
    message = send(bob, general, "first")
    services.room_update(user=alice, slug="general", locked=True)
    with refused(RoomLocked):
        services.message_edit(user=bob, message_id=message.pk, body="changed")
    services.room_update(user=alice, slug="general", locked=False)
    Membership.objects.filter(user=bob).update(muted_until=timezone.now() + timedelta(seconds=60))
    with refused(Muted):
        services.message_edit(user=bob, message_id=message.pk, body="changed")
    assert services.message_edit(user=staff, message_id=message.pk, body="by staff").body == "by staff"


def test_message_send_rate_limit(alice, general, settings, monkeypatch, refused):
    settings.CHAT_RATE_PER_10S = 3
    clock = SimpleNamespace(time=lambda: 1_000_003.5)  # 3.5 s into a 10 s window
    monkeypatch.setattr(limits, "time", clock)
    sent = [send(alice, general, f"m{i}") for i in range(3)]
    with refused(RateLimited, match="at most 3") as info:
        send(alice, general, "m3")
    assert info.value.retry_after == 7
    assert 1 <= info.value.retry_after <= 10
    assert list(Message.objects.values_list("id", flat=True).order_by("id")) == [m.pk for m in sent]
    clock.time = lambda: 1_000_010.0  # the next window
    assert send(alice, general, "m4").body == "m4"


def test_rate_limit_is_per_user(alice, bob, general, settings):
    settings.CHAT_RATE_PER_10S = 2
    services.room_join(user=bob, slug="general")
    send(alice, general)
    send(alice, general)
    assert send(bob, general).author == bob


def test_a_nul_character_is_refused_in_every_stored_text(alice, bob, general, refused):
    """PostgreSQL cannot store U+0000: every database refuses it as invalid input, before a write."""
    services.room_join(user=bob, slug="general")
    message = send(bob, general, "fine")
    calls = [
        lambda: send(alice, general, "a\x00b"),
        lambda: services.room_create(user=alice, name="Bad\x00name"),
        lambda: services.room_update(user=alice, slug="general", topic="t\x00"),
        lambda: services.member_ban(actor=alice, slug="general", username="bob", reason="r\x00"),
        lambda: services.message_report(user=alice, message_id=message.pk, reason="r\x00"),
    ]
    for call in calls:
        with refused(Invalid, match="NUL"):
            call()


def test_message_send_to_a_user_creates_the_direct_room(alice, bob, published, committed):
    with committed():
        message, created = services.message_send(user=alice, to="bob", body="psst")
    room = Room.objects.get(kind="direct")
    assert created and message.room == room and message.body == "psst"
    assert set(room.memberships.values_list("user__username", flat=True)) == {"alice", "bob"}
    assert subscribe_event(alice, room) in published and subscribe_event(bob, room) in published
    assert [f["message"]["id"] for f in room_events(published, room) if f["type"] == "message.new"] == [message.pk]
    reply, _ = services.message_send(user=bob, to="alice", body="yes?")
    assert reply.room == room and Room.objects.count() == 1


def test_message_send_to_self_or_unknown(alice, refused):
    with refused(Invalid, match="yourself"):
        services.message_send(user=alice, to="alice", body="hi")
    with refused(NotFound):
        services.message_send(user=alice, to="nobody", body="hi")


def test_message_send_to_a_user_with_a_bad_body_creates_no_room(alice, bob, refused):
    with refused(Invalid):
        services.message_send(user=alice, to="bob", body=" ")


def test_message_ids_strictly_increase(alice, bob, general, secret):
    services.room_join(user=bob, slug="general")
    ids = [
        send(user, room, f"{i}").pk
        for i, (user, room) in enumerate(
            [(alice, general), (bob, general), (alice, secret), (alice, general), (bob, general)]
        )
    ]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


# message_edit / message_delete


@pytest.fixture
def chat(alice, bob, carol, general):
    """general: alice owner, bob moderator, carol member; carol's message."""
    services.member_invite(actor=alice, slug="general", username="bob", role="moderator")
    services.room_join(user=carol, slug="general")
    return send(carol, general, "original")


def test_author_edits(carol, chat, published, committed):
    with committed():
        message = services.message_edit(user=carol, message_id=chat.pk, body="fixed", origin="c1")
    message.refresh_from_db()
    assert message.body == "fixed" and message.edited_at is not None
    [(group, event)] = published
    assert (group, event["origin"], event["room_id"]) == (f"room.{chat.room_id}", "c1", chat.room_id)
    wire = event["frame"]["message"]
    assert event["frame"] == {"type": "message.updated", "room": "general", "message": wire}
    assert (wire["id"], wire["body"], wire["deleted"]) == (chat.pk, "fixed", False)
    assert TIMESTAMP.fullmatch(wire["edited_at"])


@pytest.mark.parametrize("editor", ["bob", "alice", "root"])
def test_moderators_owner_and_staff_edit(staff, chat, editor, django_user_model):
    user = django_user_model.objects.get(username=editor)
    services.message_edit(user=user, message_id=chat.pk, body=f"by {editor}")
    assert Message.objects.get(pk=chat.pk).body == f"by {editor}"


def test_other_member_or_outsider_cannot_edit_or_delete(alice, general, chat, make_user, refused):
    dave = make_user("dave")
    services.room_join(user=dave, slug="general")
    eve = make_user("eve")
    for user in (dave, eve):
        with refused(Forbidden, match="author or a moderator"):
            services.message_edit(user=user, message_id=chat.pk, body="hacked")
        with refused(Forbidden, match="author or a moderator"):
            services.message_delete(user=user, message_id=chat.pk)


def test_outsider_cannot_touch_a_private_rooms_message(alice, bob, secret, refused):
    message = send(alice, secret)
    with refused(Forbidden, match="private"):
        services.message_edit(user=bob, message_id=message.pk, body="x")
    with refused(Forbidden, match="private"):
        services.message_delete(user=bob, message_id=message.pk)


def test_banned_moderator_cannot_edit(alice, bob, general, chat, refused):
    Membership.objects.filter(room=general, user=bob).update(banned=True)
    with refused(Forbidden):
        services.message_edit(user=bob, message_id=chat.pk, body="x")


def test_edit_unknown_message_or_bad_body(carol, chat, settings, refused):
    with refused(NotFound):
        services.message_edit(user=carol, message_id=chat.pk + 1000, body="x")
    with refused(Invalid, match="body"):
        services.message_edit(user=carol, message_id=chat.pk, body="  ")
    settings.CHAT_MAX_BODY = 5
    with refused(TooLarge):
        services.message_edit(user=carol, message_id=chat.pk, body="x" * 6)


def test_system_messages_cannot_be_edited(alice, bob, general, refused):
    services.room_join(user=bob, slug="general")
    joined = general.messages.get(body="bob joined")
    with refused(Forbidden, match="System"):
        services.message_edit(user=alice, message_id=joined.pk, body="x")


@pytest.mark.parametrize("deleter", ["carol", "bob", "alice", "root"])
def test_soft_delete(staff, chat, deleter, django_user_model, published, committed):
    user = django_user_model.objects.get(username=deleter)
    with committed():
        services.message_delete(user=user, message_id=chat.pk)
    row = Message.objects.select_related("room", "author").get(pk=chat.pk)
    assert (row.deleted, row.body) == (True, "original")  # kept for moderation
    from chat.serializers import message_data

    assert (message_data(row)["body"], message_data(row)["deleted"], message_data(row)["id"]) == ("", True, chat.pk)
    [(group, event), (update_group, update)] = published
    assert group == update_group == f"room.{chat.room_id}"
    assert event["frame"] == {"type": "message.deleted", "room": "general", "id": chat.pk}
    # Version 2 clients get the whole message with its new seq; its text and reactions are gone.
    assert update["frame"] == {"type": "message.updated", "room": "general", "message": message_data(row)}
    assert update["frame"]["message"]["seq"] == row.seq > chat.seq
    assert (update["frame"]["message"]["html"], update["frame"]["message"]["reactions"]) == ("", [])


def test_delete_twice_publishes_once_and_edit_of_deleted_is_invalid(carol, chat, published, committed, refused):
    services.message_delete(user=carol, message_id=chat.pk)
    with committed():
        services.message_delete(user=carol, message_id=chat.pk)
    assert published == []
    with refused(Invalid, match="deleted"):
        services.message_edit(user=carol, message_id=chat.pk, body="back")


# read_mark


def test_read_mark_moves_forward_and_reports_unread(alice, bob, general, published, committed):
    services.room_join(user=bob, slug="general")
    first = send(alice, general, "1")
    send(bob, general, "own")  # the reader's own messages are never unread
    gone = send(alice, general, "deleted")
    services.message_delete(user=alice, message_id=gone.pk)
    last = send(alice, general, "3")
    with committed():
        member = services.read_mark(user=bob, slug="general", message_id=first.pk, origin="c9")
    assert membership(general, bob).last_read_id == first.pk == member.last_read_id
    [(group, event)] = published
    assert (group, event["origin"]) == (f"user.{bob.pk}", "c9")
    assert event["frame"] == {"type": "unread", "room": "general", "count": 1, "last_read_id": first.pk, "mentions": 0}
    published.clear()
    with committed():
        services.read_mark(user=bob, slug="general", message_id=0)  # never backwards
    assert membership(general, bob).last_read_id == first.pk
    assert frames(published) == [
        {"type": "unread", "room": "general", "count": 1, "last_read_id": first.pk, "mentions": 0}
    ]
    services.read_mark(user=bob, slug="general", message_id=last.pk)
    assert membership(general, bob).last_read_id == last.pk


def test_read_mark_past_the_newest_message_stops_there(alice, bob, general, published, committed):
    """A bogus or foreign id must not mark messages that do not exist yet as read."""
    newest = send(alice, general, "1")
    with committed():
        services.read_mark(user=alice, slug="general", message_id=2**63)
    assert membership(general, alice).last_read_id == newest.pk
    services.room_join(user=bob, slug="general")
    send(bob, general, "2")
    assert frames(published)[0]["last_read_id"] == newest.pk
    published.clear()
    with committed():
        services.read_mark(user=alice, slug="general", message_id=newest.pk)
    assert frames(published)[0]["count"] == 2  # "bob joined" and "2"


@pytest.mark.parametrize("message_id", [-1, "5", True, None, 1.0])
def test_read_mark_bad_id_is_invalid(alice, general, refused, message_id):
    with refused(Invalid, match="message_id"):
        services.read_mark(user=alice, slug="general", message_id=message_id)


def test_read_mark_needs_membership(bob, general, refused):
    with refused(Forbidden):
        services.read_mark(user=bob, slug="general", message_id=0)
