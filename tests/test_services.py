"""Services against the real database: the rows they write and the events they publish on commit.

Setup calls run outside `committed()`, so their on-commit events never fire; only the call
under test publishes into `published`.
"""
import re
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
import redis
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import events, limits, services
from chat.errors import Forbidden, Gone, Invalid, Muted, NotFound, RateLimited, RoomLocked, TooLarge
from chat.models import Membership, Message, Room

from .conftest import frames

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def snapshot():
    return tuple(list(model.objects.order_by("pk").values()) for model in (Room, Membership, Message))


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """`with committed():` runs the on-commit callbacks (the publishes) registered inside."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def refused(published, committed):
    """`with refused(Error):` the call raises Error, changes no row and publishes nothing."""

    @contextmanager
    def check(error, match=None):
        before = snapshot()
        with pytest.raises(error, match=match) as info:
            with committed():
                yield info
        assert snapshot() == before
        assert published == []

    return check


@pytest.fixture
def general(alice):
    """A public room owned by alice."""
    return services.room_create(user=alice, name="General")


@pytest.fixture
def secret(alice):
    """A private room owned by alice."""
    return services.room_create(user=alice, name="Secret", kind="private")


def membership(room, user) -> Membership:
    return Membership.objects.get(room=room, user=user)


def send(user, room, body="hi", **kwargs) -> Message:
    return services.message_send(user=user, slug=room.slug, body=body, **kwargs)[0]


def subscribe_event(user, room, since=0):
    return (f"user.{user.pk}", {"type": "chat.subscribe", "room_id": room.pk, "slug": room.slug, "since": since})


def unsubscribe_event(user, room, reason):
    return (f"user.{user.pk}", {"type": "chat.unsubscribe", "room_id": room.pk, "slug": room.slug, "reason": reason})


def room_events(published, room):
    return [e["frame"] for group, e in published if group == f"room.{room.pk}"]


# room_create

def test_room_create_makes_the_creator_owner_and_subscribes_them(alice, published, committed):
    with committed():
        room = services.room_create(user=alice, name="  Rust & Go Lovers ", topic="systems")
    room.refresh_from_db()
    assert (room.slug, room.name, room.kind, room.topic, room.created_by) == (
        "rust-go-lovers", "Rust & Go Lovers", "public", "systems", alice)
    assert list(room.memberships.values_list("user__username", "role")) == [("alice", "owner")]
    assert published == [subscribe_event(alice, room)]
    assert not room.messages.exists()


@pytest.mark.parametrize("name, slug", [("snake_case Room", "snake-case-room"), ("Ünïcödé chat", "unicode-chat"),
                                        ("x" * 60, "x" * 50), ("DM tips", "dm-tips")])
def test_room_create_derives_a_valid_slug(alice, name, slug):
    assert services.room_create(user=alice, name=name).slug == slug


def test_room_create_private_with_explicit_slug(alice):
    room = services.room_create(user=alice, name="Team", slug="team-1", kind="private")
    assert (room.slug, room.kind) == ("team-1", "private")


def test_room_create_taken_slug_is_invalid(alice, bob, general, refused):
    with refused(Invalid, match="'general' is taken"):
        services.room_create(user=bob, name="General")
    with refused(Invalid, match="taken"):
        services.room_create(user=bob, name="Other", slug="general")


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "DMs", "kind": "direct"}, "kind"),
    ({"name": "Odd", "kind": "secret"}, "kind"),
    ({"name": "   "}, "name"),
    ({"name": "!!!"}, "slug"),
    ({"name": "x" * 101}, "name"),
    ({"name": "Ok", "topic": "t" * 301}, "topic"),
    ({"name": "Bad", "slug": "Bad Slug"}, "slug"),
    ({"name": "Bad", "slug": "x" * 51}, "slug"),
    ({"name": "DM 1 2"}, "slug"),
    ({"name": "Squat", "slug": "dm-1-2"}, "slug"),
])
def test_room_create_rejects_bad_input(alice, refused, kwargs, match):
    with refused(Invalid, match=match):
        services.room_create(user=alice, **kwargs)


# room_join

def test_room_join_public(alice, bob, general, published, committed):
    with committed():
        room, member, created = services.room_join(user=bob, slug="general")
    assert (room, created, member.role, member.user) == (general, True, "member", bob)
    message = Message.objects.get(room=general)
    assert (message.kind, message.body, message.author) == ("system", "bob joined", bob)
    assert room_events(published, general) == [
        {"type": "message.new", "room": "general", "message": frames(published, "message.new")[0]["message"]},
        {"type": "member.joined", "room": "general", "user": {"id": bob.pk, "username": "bob"}},
    ]
    assert frames(published, "message.new")[0]["message"]["body"] == "bob joined"
    assert subscribe_event(bob, general) in published
    assert len(published) == 3


def test_room_join_again_changes_nothing(alice, bob, general, published, committed):
    services.room_join(user=bob, slug="general")
    before = snapshot()
    with committed():
        room, member, created = services.room_join(user=bob, slug="general")
    assert (room, member, created) == (general, membership(general, bob), False)
    assert snapshot() == before
    assert published == []


def test_room_join_racing_another_join_of_the_same_user_writes_once(bob, general, monkeypatch, published, committed):
    services.room_join(user=bob, slug="general")
    before = snapshot()
    # As if the other join committed between the access check and the insert.
    monkeypatch.setattr(services.members, "room_for_user", lambda user, slug: (general, None))
    with committed():
        _, member, created = services.room_join(user=bob, slug="general")
    assert (created, member) == (False, membership(general, bob))
    assert snapshot() == before
    assert published == []


def test_room_join_private_is_forbidden(bob, secret, refused):
    with refused(Forbidden, match="private"):
        services.room_join(user=bob, slug="secret")


def test_room_join_banned_is_forbidden(bob, general, refused):
    Membership.objects.create(room=general, user=bob, banned=True, banned_until=None)
    with refused(Forbidden, match="banned"):
        services.room_join(user=bob, slug="general")
    Membership.objects.filter(user=bob).update(banned_until=timezone.now() + timedelta(hours=1))
    with refused(Forbidden, match="banned"):
        services.room_join(user=bob, slug="general")


def test_room_join_after_an_expired_ban_clears_it(bob, general, published, committed):
    Membership.objects.create(room=general, user=bob, banned=True, ban_reason="spam",
                              banned_until=timezone.now() - timedelta(seconds=1))
    with committed():
        _, member, created = services.room_join(user=bob, slug="general")
    member.refresh_from_db()
    assert created
    assert (member.banned, member.banned_until, member.ban_reason) == (False, None, "")
    assert Membership.objects.filter(room=general, user=bob).count() == 1
    assert general.messages.get().body == "bob joined"
    assert subscribe_event(bob, general) in published
    assert [f["type"] for f in room_events(published, general)] == ["message.new", "member.joined"]


def test_room_join_archived_is_gone(alice, bob, general, refused):
    services.room_archive(user=alice, slug="general")
    with refused(Gone, match="archived") as info:
        services.room_join(user=bob, slug="general")
    assert (info.value.code, info.value.status) == ("not_found", 410)


def test_room_join_unknown_is_not_found(bob, refused):
    with refused(NotFound, match="nope"):
        services.room_join(user=bob, slug="nope")


def test_staff_can_join_a_private_room(staff, secret, published, committed):
    with committed():
        _, member, created = services.room_join(user=staff, slug="secret")
    assert (created, member.role) == (True, "member")
    assert subscribe_event(staff, secret) in published


def test_nobody_joins_a_direct_room(alice, bob, staff, refused):
    room = services.direct_room(user=alice, username="bob")
    with refused(Forbidden, match="Direct"):
        services.room_join(user=staff, slug=room.slug)


# room_leave

def test_room_leave(alice, bob, general, published, committed):
    services.room_join(user=bob, slug="general")
    with committed():
        services.room_leave(user=bob, slug="general")
    assert not Membership.objects.filter(room=general, user=bob).exists()
    assert general.messages.order_by("id").last().body == "bob left"
    assert [f["type"] for f in room_events(published, general)] == ["message.new", "member.left"]
    assert room_events(published, general)[1]["user"] == {"id": bob.pk, "username": "bob"}
    assert unsubscribe_event(bob, general, "left") in published


def test_room_leave_needs_membership(bob, general, refused):
    with refused(Forbidden, match="not a member"):
        services.room_leave(user=bob, slug="general")


def test_room_leave_a_direct_room_is_forbidden(alice, bob, refused):
    room = services.direct_room(user=alice, username="bob")
    with refused(Forbidden):
        services.room_leave(user=alice, slug=room.slug)


# member_invite

def test_member_invite_to_a_private_room(alice, bob, secret, published, committed):
    with committed():
        member = services.member_invite(actor=alice, slug="secret", username="bob")
    assert (member.user, member.role) == (bob, "member")
    assert secret.messages.get().body == "alice added bob"
    assert [f["type"] for f in room_events(published, secret)] == ["message.new", "member.joined"]
    assert subscribe_event(bob, secret) in published


def test_any_member_may_invite_but_only_the_owner_grants_roles(alice, bob, carol, make_user, secret, refused):
    services.member_invite(actor=alice, slug="secret", username="bob")
    with refused(Forbidden, match="owner"):
        services.member_invite(actor=bob, slug="secret", username="carol", role="moderator")
    services.member_invite(actor=bob, slug="secret", username="carol")
    assert membership(secret, carol).role == "member"
    dave = make_user("dave")
    services.member_invite(actor=alice, slug="secret", username="dave", role="moderator")
    assert membership(secret, dave).role == "moderator"
    with refused(Forbidden, match="owner"):
        services.member_invite(actor=dave, slug="secret", username="alice", role="member")


def test_owner_changes_a_role_by_inviting_again(alice, bob, secret, published, committed):
    services.member_invite(actor=alice, slug="secret", username="bob")
    with committed():
        services.member_invite(actor=alice, slug="secret", username="bob", role="moderator")
    assert membership(secret, bob).role == "moderator"
    assert secret.messages.count() == 1
    assert published == []


def test_member_invite_existing_member_is_invalid(alice, bob, secret, refused):
    services.member_invite(actor=alice, slug="secret", username="bob")
    with refused(Invalid, match="already a member"):
        services.member_invite(actor=alice, slug="secret", username="bob")


def test_member_invite_unknown_or_inactive_user_is_not_found(alice, make_user, secret, refused):
    make_user("ghost", is_active=False)
    for name in ("nobody", "ghost"):
        with refused(NotFound, match=name):
            services.member_invite(actor=alice, slug="secret", username=name)


def test_member_invite_needs_membership_and_a_valid_role(alice, bob, carol, secret, refused):
    with refused(Forbidden):
        services.member_invite(actor=bob, slug="secret", username="carol")
    with refused(Invalid, match="role"):
        services.member_invite(actor=alice, slug="secret", username="carol", role="admin")


def test_member_invite_of_a_banned_user_is_forbidden(alice, bob, secret, refused):
    Membership.objects.create(room=secret, user=bob, banned=True)
    with refused(Forbidden, match="banned"):
        services.member_invite(actor=alice, slug="secret", username="bob")


def test_staff_invites_without_being_a_member(staff, bob, secret):
    services.member_invite(actor=staff, slug="secret", username="bob", role="moderator")
    assert membership(secret, bob).role == "moderator"
    assert not Membership.objects.filter(room=secret, user=staff).exists()


# member_remove

@pytest.fixture
def crew(alice, bob, carol, make_user, secret):
    """secret: alice owner, bob moderator, carol and dave members."""
    services.member_invite(actor=alice, slug="secret", username="bob", role="moderator")
    services.member_invite(actor=alice, slug="secret", username="carol")
    make_user("dave")
    services.member_invite(actor=alice, slug="secret", username="dave")
    return secret


def test_moderator_kicks_a_member(bob, carol, crew, published, committed):
    with committed():
        services.member_remove(actor=bob, slug="secret", username="carol")
    assert not Membership.objects.filter(room=crew, user=carol).exists()
    assert crew.messages.order_by("id").last().body == "bob removed carol"
    assert room_events(published, crew)[1] == {"type": "member.left", "room": "secret",
                                               "user": {"id": carol.pk, "username": "carol"}}
    assert unsubscribe_event(carol, crew, "kicked") in published


def test_moderator_cannot_remove_owner_or_moderator(alice, bob, make_user, crew, refused):
    services.member_invite(actor=alice, slug="secret", username="dave", role="moderator")
    for name in ("alice", "dave"):
        with refused(Forbidden, match="members only"):
            services.member_remove(actor=bob, slug="secret", username=name)


def test_owner_removes_a_moderator(alice, bob, crew):
    services.member_remove(actor=alice, slug="secret", username="bob")
    assert not Membership.objects.filter(room=crew, user=bob).exists()


def test_plain_member_cannot_remove(carol, crew, refused):
    with refused(Forbidden, match="owner and moderators"):
        services.member_remove(actor=carol, slug="secret", username="dave")


def test_only_staff_remove_staff(alice, staff, make_user, crew, refused):
    services.member_invite(actor=alice, slug="secret", username="root")
    with refused(Forbidden, match="Staff"):
        services.member_remove(actor=alice, slug="secret", username="root")
    other = make_user("admin2", is_staff=True)
    services.member_remove(actor=other, slug="secret", username="root")
    assert not Membership.objects.filter(room=crew, user=staff).exists()


def test_staff_removes_an_owner(alice, staff, crew):
    services.member_remove(actor=staff, slug="secret", username="alice")
    assert not Membership.objects.filter(room=crew, user=alice).exists()


def test_member_remove_of_a_non_member_is_not_found(alice, crew, refused):
    with refused(NotFound):
        services.member_remove(actor=alice, slug="secret", username="nobody")


def test_member_remove_cannot_erase_a_ban(alice, make_user, crew, refused):
    """A banned row is not a membership; deleting it would silently lift the ban."""
    eve = make_user("eve")
    Membership.objects.create(room=crew, user=eve, banned=True)
    with refused(NotFound):
        services.member_remove(actor=alice, slug="secret", username="eve")
    assert membership(crew, eve).banned


def test_member_remove_self_is_leaving(carol, crew, published, committed):
    with committed():
        services.member_remove(actor=carol, slug="secret", username="carol")
    assert unsubscribe_event(carol, crew, "left") in published


# room_update / room_archive

def test_room_update_by_owner(alice, general, published, committed):
    with committed():
        room = services.room_update(user=alice, slug="general", name=" Lobby ", topic="Say hi", locked=True)
    room.refresh_from_db()
    assert (room.name, room.topic, room.locked) == ("Lobby", "Say hi", True)
    assert general.messages.get().body == "alice set the topic: Say hi"
    assert room_events(published, general)[-1] == {"type": "room.updated", "room": "general", "name": "Lobby",
                                                   "topic": "Say hi", "locked": True, "archived": False}
    assert [f["type"] for f in room_events(published, general)] == ["message.new", "room.updated"]


def test_room_update_without_topic_change_writes_no_message(alice, general, published, committed):
    services.room_update(user=alice, slug="general", topic="same")
    with committed():
        services.room_update(user=alice, slug="general", topic="same", name="New")
    assert general.messages.count() == 1
    assert [f["type"] for f in room_events(published, general)] == ["room.updated"]


def test_room_update_clearing_the_topic(alice, general):
    services.room_update(user=alice, slug="general", topic="x")
    services.room_update(user=alice, slug="general", topic="")
    assert general.messages.order_by("id").last().body == "alice cleared the topic"


def test_room_update_by_moderator_and_staff(alice, bob, staff, general):
    services.member_invite(actor=alice, slug="general", username="bob", role="moderator")
    services.room_update(user=bob, slug="general", locked=True)
    services.room_update(user=staff, slug="general", name="Staffed")
    general.refresh_from_db()
    assert (general.locked, general.name) == (True, "Staffed")


@pytest.mark.parametrize("kwargs, error", [
    ({"name": "   "}, Invalid),
    ({"name": "n" * 101}, Invalid),
    ({"topic": "t" * 301}, Invalid),
])
def test_room_update_bad_input(alice, general, refused, kwargs, error):
    with refused(error):
        services.room_update(user=alice, slug="general", **kwargs)


def test_room_update_by_member_or_outsider_is_forbidden(alice, bob, carol, general, refused):
    services.room_join(user=bob, slug="general")
    for user in (bob, carol):
        with refused(Forbidden, match="owner and moderators"):
            services.room_update(user=user, slug="general", topic="mine")


def test_room_archive_by_owner(alice, general, published, committed):
    with committed():
        services.room_archive(user=alice, slug="general")
    general.refresh_from_db()
    assert general.archived
    [(group, event)] = published
    assert (group, event["type"], event["room_id"]) == (f"room.{general.pk}", "chat.archived", general.pk)
    assert event["frame"] == {"type": "room.updated", "room": "general", "name": "General", "topic": "",
                              "locked": False, "archived": True}


def test_room_archive_by_staff(staff, general):
    services.room_archive(user=staff, slug="general")
    assert Room.objects.get(slug="general").archived


def test_room_archive_by_moderator_is_forbidden(alice, bob, general, refused):
    services.member_invite(actor=alice, slug="general", username="bob", role="moderator")
    with refused(Forbidden, match="owner"):
        services.room_archive(user=bob, slug="general")


def test_room_archive_twice_is_gone(alice, general, refused):
    services.room_archive(user=alice, slug="general")
    with refused(Gone):
        services.room_archive(user=alice, slug="general")


# direct_room

def test_direct_room_is_created_once_with_both_members(alice, bob, published, committed):
    with committed():
        room = services.direct_room(user=bob, username="alice")
    low, high = sorted([alice, bob], key=lambda u: u.pk)
    assert (room.slug, room.kind, room.name) == (f"dm-{low.pk}-{high.pk}", "direct", f"{low.username}, {high.username}")
    assert set(room.memberships.values_list("user__username", "role")) == {("alice", "member"), ("bob", "member")}
    assert sorted(published, key=str) == sorted([subscribe_event(alice, room), subscribe_event(bob, room)], key=str)
    published.clear()
    with committed():
        again = services.direct_room(user=alice, username="bob")
    assert again == room
    assert Room.objects.count() == 1 and Membership.objects.count() == 2
    assert published == []


def test_direct_room_to_self_or_unknown(alice, make_user, refused):
    with refused(Invalid, match="yourself"):
        services.direct_room(user=alice, username="alice")
    make_user("ghost", is_active=False)
    for name in ("nobody", "ghost"):
        with refused(NotFound):
            services.direct_room(user=alice, username=name)


# message_send

def test_message_send_persists_then_publishes_the_wire_shape(alice, general, published, committed, monkeypatch):
    visible_at_send = []
    record = events.send
    monkeypatch.setattr(events, "send", lambda group, event: (
        visible_at_send.append(Message.objects.filter(pk=event["message_id"]).exists()), record(group, event)))
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
        "chat.frame", general.pk, row.pk, None)
    created_at = event["frame"]["message"]["created_at"]
    assert event["frame"] == {"type": "message.new", "room": "general", "message": {
        "id": row.pk, "room": "general", "author": {"id": alice.pk, "username": "alice"}, "body": " hello\n",
        "kind": "user", "client_id": "c-1", "created_at": created_at, "edited_at": None, "deleted": False}}
    assert TIMESTAMP.fullmatch(created_at)
    assert datetime.fromisoformat(created_at.replace("Z", "+00:00")) == row.created_at.replace(
        microsecond=row.created_at.microsecond // 1000 * 1000)


def test_message_send_without_client_id_and_as_emote(alice, general, published, committed):
    with committed():
        message, _ = services.message_send(user=alice, slug="general", body="waves", kind="emote", origin="conn-1")
    [(_, event)] = published
    assert (event["frame"]["message"]["client_id"], event["frame"]["message"]["kind"]) == (None, "emote")
    assert event["origin"] == "conn-1"
    assert (message.client_id, message.kind) == ("", "emote")


def test_a_batch_checks_each_send_alone_and_writes_each_room_in_order(alice, bob, general, secret, published,
                                                                      committed):
    """Refusals stay per send; each room's new messages are chained by prev_id in request order;
    a client_id used twice in the batch stores one message and returns it to both."""
    services.room_join(user=bob, slug="general")
    before = Message.objects.filter(room=general).order_by("-id").values_list("id", flat=True).first() or 0
    with committed():
        results = services.message_send_batch([
            dict(user=alice, slug="general", body="one", client_id="a-1", origin="conn-a"),
            dict(user=bob, slug="secret", body="not a member"),
            dict(user=alice, slug="secret", body="private"),
            dict(user=bob, slug="general", body="", client_id="b-0"),
            dict(user=bob, slug="general", body="two", client_id="b-1"),
            dict(user=bob, slug="general", body="two again", client_id="b-1"),
        ])
    assert isinstance(results[1], Forbidden) and isinstance(results[3], Invalid)
    (one, c1), (private, c2), (two, c4), (again, c5) = results[0], results[2], results[4], results[5]
    assert (c1, c2, c4, c5) == (True, True, True, False) and again == two
    assert Message.objects.filter(client_id="b-1").count() == 1 and not Message.objects.filter(client_id="b-0")
    general_events = [e for g, e in published if g == f"room.{general.pk}"]
    assert [(e["message_id"], e["prev_id"]) for e in general_events] == [(one.pk, before), (two.pk, one.pk)]
    assert one.pk < two.pk and general_events[0]["origin"] == "conn-a"
    assert [e["message_id"] for g, e in published if g == f"room.{secret.pk}"] == [private.pk]


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


def test_duplicate_client_id_racing_the_original_returns_it(alice, general, monkeypatch, published, committed):
    original = send(alice, general, "first", client_id="c-1")
    before = snapshot()
    real, calls = services.batch._originals_from, []

    def lookup(rows, wanted):  # the first lookup runs before the racing original commits
        calls.append([client_id for _, client_id in wanted])
        return {} if len(calls) == 1 else real(rows, wanted)

    monkeypatch.setattr(services.batch, "_originals_from", lookup)
    with committed():
        message, created = services.message_send(user=alice, slug="general", body="again", client_id="c-1")
    assert (message, created, calls) == (original, False, [["c-1"], ["c-1"]])
    assert snapshot() == before
    assert published == []


def test_a_batch_writes_its_rooms_without_a_savepoint_each(alice, general, secret):
    """The common case commits every room of the batch at once; savepoints are for a retry."""
    with CaptureQueriesContext(connection) as captured:
        results = services.message_send_batch([dict(user=alice, slug="general", body="one", client_id="a-1"),
                                               dict(user=alice, slug="secret", body="two", client_id="a-2")])
    assert [created for _, created in results] == [True, True]
    # Inside the test's own transaction, the batch's transaction is itself a savepoint.
    assert sum(query["sql"].startswith("SAVEPOINT") for query in captured) <= 1


def test_a_batch_to_many_rooms_costs_the_statements_of_one(alice, make_user, published, committed):
    """Locks, newest ids and the insert are one statement each for every room of a batch; each
    room's messages still chain by prev_id in request order."""
    rooms = [services.room_create(user=alice, name=f"Room {i}") for i in range(5)]
    for room in rooms[2:]:
        send(alice, room, "before")

    def statements(requests):
        with CaptureQueriesContext(connection) as captured, committed():
            results = services.message_send_batch(requests)
        assert all(created for _, created in results)
        return len(captured), results

    one, _ = statements([dict(user=alice, slug=rooms[0].slug, body="x", client_id="one")])
    published.clear()
    many, results = statements([dict(user=alice, slug=room.slug, body=f"m{i}", client_id=f"m{i}-{room.pk}")
                                for i in range(2) for room in rooms])
    assert many == one
    for room in rooms:
        stored = list(Message.objects.filter(room=room).order_by("id").values_list("id", flat=True))
        chain = [(e["message_id"], e["prev_id"]) for g, e in published if g == f"room.{room.pk}"]
        assert chain == list(zip(stored[-2:], stored[-3:-1] if len(stored) > 2 else [0] + stored[-2:-1]))


def test_a_batch_with_nothing_to_write_opens_no_transaction(alice, bob, general, secret):
    """Every send refused, or answered with its original: nothing is locked, inserted or committed."""
    original = send(alice, general, "first", client_id="c-1")
    with CaptureQueriesContext(connection) as captured:
        results = services.message_send_batch([dict(user=bob, slug="secret", body="not a member"),
                                               dict(user=alice, slug="general", body="again", client_id="c-1")])
    assert isinstance(results[0], Forbidden) and results[1] == (original, False)
    assert not [query["sql"] for query in captured if "FOR UPDATE" in query["sql"] or "INSERT" in query["sql"]
                or "SAVEPOINT" in query["sql"] or " IN ()" in query["sql"]]


def test_a_duplicate_racing_a_batch_leaves_its_other_rooms_written(alice, general, secret, monkeypatch,
                                                                    published, committed):
    """A client_id reused by a request racing the batch rolls the batch back; written again,
    room by room, the duplicate gets its original and the rest is stored once."""
    original = send(alice, general, "first", client_id="c-1")
    real, calls = services.batch._originals_from, []

    def lookup(rows, wanted):  # the batch's own lookup runs before the racing original commits
        calls.append(wanted)
        return {} if len(calls) == 1 else real(rows, wanted)

    monkeypatch.setattr(services.batch, "_originals_from", lookup)
    with committed():
        again, other = services.message_send_batch([dict(user=alice, slug="general", body="again", client_id="c-1"),
                                                    dict(user=alice, slug="secret", body="new", client_id="c-2")])
    assert again == (original, False)
    assert other[1] is True and Message.objects.filter(client_id="c-2").count() == 1
    assert Message.objects.filter(client_id="c-1").count() == 1
    assert [f["message"]["body"] for f in frames(published, "message.new")] == ["new"]


@pytest.mark.postgres  # SQLite refuses several statements in one execute
def test_a_batch_outside_a_transaction_is_two_round_trips_and_still_recovers_a_duplicate(
        transactional_db, alice, general, secret, monkeypatch, published):
    """On PostgreSQL, outside a transaction (as the database thread calls it), a batch's checks
    read in one query string, and its locks, newest ids and insert are another, its own
    transaction. A duplicate racing it rolls that back whole; written again room by room, the
    rest is stored once."""
    assert connection.get_autocommit()  # the path under test: outside any transaction
    first = services.message_send_batch([dict(user=alice, slug="general", body="first", client_id="c-1")])[0][0]
    with CaptureQueriesContext(connection) as captured:
        [(alone, created)] = services.message_send_batch([dict(user=alice, slug="secret", body="alone", client_id="c-0")])
    assert created and Message.objects.get(pk=alone.pk).body == "alone"
    # Two round trips in all: the checks' reads (reused client_ids, memberships), then the write.
    reads, write = [q["sql"] for q in captured]
    assert "client_id <> ''" in reads and "JOIN" in reads and "INSERT" not in reads
    assert "FOR UPDATE" in write and "INSERT" in write and "SAVEPOINT" not in write

    real, calls = services.batch._originals_from, []

    def lookup(rows, wanted):  # the batch's own lookup runs before the racing original commits
        calls.append(wanted)
        return {} if len(calls) == 1 else real(rows, wanted)

    monkeypatch.setattr(services.batch, "_originals_from", lookup)
    published.clear()
    again, other = services.message_send_batch([dict(user=alice, slug="general", body="again", client_id="c-1"),
                                                dict(user=alice, slug="secret", body="new", client_id="c-2")])
    assert again == (first, False)
    assert other[1] is True and Message.objects.get(client_id="c-2").pk == other[0].pk
    assert Message.objects.filter(client_id="c-1").count() == 1
    assert [(f["message"]["body"], f["message"]["id"]) for f in frames(published, "message.new")] == [("new", other[0].pk)]
    assert [e["prev_id"] for _, e in published if e.get("message_id")] == [alone.pk]


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


@pytest.mark.parametrize("kwargs, match", [
    ({"client_id": "c" * 65}, "client_id"),
    ({"client_id": 5}, "client_id"),
    ({"kind": "system"}, "kind"),
])
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


def test_a_nul_character_in_one_send_does_not_fail_the_others_of_its_batch(alice, bob, general, committed):
    services.room_join(user=bob, slug="general")
    with committed():
        bad, good = services.message_send_batch([dict(user=alice, slug="general", body="x\x00", client_id="a-1"),
                                                 dict(user=bob, slug="general", body="fine", client_id="b-1")])
    assert isinstance(bad, Invalid) and good[1] is True
    assert list(Message.objects.filter(kind="user").values_list("body", flat=True)) == ["fine"]


@pytest.fixture
def ten_members(make_user, general):
    users = [make_user(f"member{i}") for i in range(10)]
    for user in users:
        services.room_join(user=user, slug="general")
    return users


def test_a_batch_checks_its_sends_with_as_many_queries_and_one_rate_count(ten_members, monkeypatch, settings):
    """1 or 10 sends to one room by different members: the same queries, one rate-counter round trip."""
    counted, executed = [], []
    count, execute = limits._counts, redis.client.Pipeline.execute
    monkeypatch.setattr(limits, "_counts", lambda keys: counted.append(len(keys)) or count(keys))
    monkeypatch.setattr(redis.client.Pipeline, "execute", lambda pipe, *args, **kwargs: (
        executed.append(len(pipe.command_stack)) or execute(pipe, *args, **kwargs)))

    def queries(users, tag):
        requests = [dict(user=user, slug="general", body="hi", client_id=f"{tag}-{i}") for i, user in enumerate(users)]
        with CaptureQueriesContext(connection) as captured:
            results = services.message_send_batch(requests)
        assert [created for _, created in results] == [True] * len(users)
        return len(captured)

    one, ten = queries(ten_members[:1], "a"), queries(ten_members, "b")
    assert one == ten
    assert counted == [1, 10]
    assert executed == ([2, 20] if settings.REDIS_URL else [])  # INCR and EXPIRE per send, one round trip


def test_a_mixed_batch_refuses_sends_without_counting_them_toward_the_rate(alice, bob, carol, make_user, general,
                                                                          settings, monkeypatch):
    """Refused sends interleaved with good ones: each gets its own refusal, and only the sends
    that reach the rate check (the good ones and the rate-limited) count toward it, in order."""
    settings.CHAT_RATE_PER_10S = 2
    monkeypatch.setattr(limits, "time", SimpleNamespace(time=lambda: 1_000_003.5))
    dave, erin = make_user("dave"), make_user("erin")
    for user in (bob, carol, erin):
        services.room_join(user=user, slug="general")
    Membership.objects.filter(user=carol).update(muted_until=timezone.now() + timedelta(minutes=5))
    send(erin, general, "e1"), send(erin, general, "e2")  # erin's window is full
    results = services.message_send_batch([
        dict(user=alice, slug="general", body="a1"),
        dict(user=dave, slug="general", body="not a member"),
        dict(user=carol, slug="general", body="muted"),
        dict(user=bob, slug="general", body=" "),
        dict(user=erin, slug="general", body="e3"),
        dict(user=bob, slug="general", body="b1"),
        dict(user=alice, slug="general", body="a2"),
        dict(user=bob, slug="general", body="b2"),  # bob's blank body did not count
        dict(user=alice, slug="general", body="a3"),
    ])
    assert [type(r) if isinstance(r, Exception) else r[0].body for r in results] == [
        "a1", Forbidden, Muted, Invalid, RateLimited, "b1", "a2", "b2", RateLimited]
    assert list(Message.objects.filter(kind="user").order_by("id").values_list("body", flat=True)) == [
        "e1", "e2", "a1", "b1", "a2", "b2"]
    # Refused before the rate check, carol and dave still have their whole budget.
    Membership.objects.filter(user=carol).update(muted_until=None)
    services.room_join(user=dave, slug="general")
    for user in (carol, dave):
        assert [send(user, general, f"{user.username} {i}").author for i in range(2)] == [user, user]
        with pytest.raises(RateLimited):
            send(user, general, "one too many")


def test_a_batch_refuses_each_send_as_a_send_alone_is_refused(alice, bob, carol, staff, make_user, general, secret,
                                                              settings):
    """Every refusal of `message_send`, in one batch with good sends: the same error and message."""
    dave, erin = make_user("dave"), make_user("erin")
    services.room_join(user=bob, slug="general")
    services.room_join(user=carol, slug="general")
    Membership.objects.filter(user=carol).update(muted_until=timezone.now() + timedelta(minutes=5))
    Membership.objects.create(room=general, user=dave, banned=True)
    services.room_create(user=alice, name="Old")
    services.room_archive(user=alice, slug="old")
    services.room_create(user=alice, name="Quiet")
    services.member_invite(actor=alice, slug="quiet", username="bob")
    services.member_invite(actor=alice, slug="quiet", username="root")
    services.room_update(user=alice, slug="quiet", locked=True)
    requests = [
        dict(user=alice, slug="general", body="good"),
        dict(user=bob, slug="nope", body="hi"),
        dict(user=alice, slug="old", body="hi"),
        dict(user=bob, slug="secret", body="hi"),
        dict(user=dave, slug="general", body="hi"),
        dict(user=erin, slug="general", body="hi"),
        dict(user=bob, slug="quiet", body="hi"),
        dict(user=carol, slug="general", body="hi"),
        dict(user=staff, slug="quiet", body="staff may"),
        dict(user=staff, slug="secret", body="hi"),
        dict(user=alice, slug="general", body="hi", client_id="c" * 65),
        dict(user=alice, slug="general", body="hi", kind="system"),
        dict(user=alice, body="hi"),
        dict(user=alice, slug=["general"], body="hi"),
        dict(user=alice, to="nobody", body="hi"),
        dict(user=alice, to="alice", body="hi"),
        dict(user=bob, slug="general", body="x" * (settings.CHAT_MAX_BODY + 1)),
        dict(user=alice, to="bob", body="direct"),
        dict(user=bob, slug="general", body="good too"),
    ]
    results = services.message_send_batch(requests)
    assert [r[0].body for r in results if not isinstance(r, Exception)] == ["good", "staff may", "direct", "good too"]
    assert [type(r) for r in results if isinstance(r, Exception)] == [
        NotFound, Gone, Forbidden, Forbidden, Forbidden, RoomLocked, Muted, Forbidden, Invalid, Invalid, Invalid,
        Invalid, NotFound, Invalid, TooLarge]
    for request, result in zip(requests, results):
        if isinstance(result, Exception):
            with pytest.raises(type(result)) as alone:
                services.message_send(**request)
            assert re.sub(r"\d+", "N", str(alone.value)) == re.sub(r"\d+", "N", str(result))  # muted: seconds left


def test_message_send_to_a_user_creates_the_direct_room(alice, bob, published, committed):
    with committed():
        message, created = services.message_send(user=alice, to="bob", body="psst")
    room = Room.objects.get(kind="direct")
    assert created and message.room == room and message.body == "psst"
    assert set(room.memberships.values_list("user__username", flat=True)) == {"alice", "bob"}
    assert subscribe_event(alice, room) in published and subscribe_event(bob, room) in published
    assert [f["message"]["id"] for f in room_events(published, room)] == [message.pk]
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
    ids = [send(user, room, f"{i}").pk for i, (user, room) in
           enumerate([(alice, general), (bob, general), (alice, secret), (alice, general), (bob, general)])]
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
    [(group, event)] = published
    assert group == f"room.{chat.room_id}"
    assert event["frame"] == {"type": "message.deleted", "room": "general", "id": chat.pk}


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
    assert event["frame"] == {"type": "unread", "room": "general", "count": 1, "last_read_id": first.pk}
    published.clear()
    with committed():
        services.read_mark(user=bob, slug="general", message_id=0)  # never backwards
    assert membership(general, bob).last_read_id == first.pk
    assert frames(published) == [{"type": "unread", "room": "general", "count": 1, "last_read_id": first.pk}]
    services.read_mark(user=bob, slug="general", message_id=last.pk)
    assert membership(general, bob).last_read_id == last.pk


def test_read_mark_past_the_newest_message_stops_there(alice, bob, general, published, committed):
    """A bogus or foreign id must not mark messages that do not exist yet as read."""
    newest = send(alice, general, "1")
    with committed():
        services.read_mark(user=alice, slug="general", message_id=2 ** 63)
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


# user_register

def test_user_register(settings, django_user_model):
    user = services.user_register(username="zed", password="s3cret-pass-1", email="z@example.com")
    assert user.check_password("s3cret-pass-1") and user.email == "z@example.com"
    settings.CHAT_REGISTRATION_OPEN = False
    with pytest.raises(Forbidden, match="closed"):
        services.user_register(username="yan", password="s3cret-pass-1")
    assert not django_user_model.objects.filter(username="yan").exists()


# Concurrency

def _drop_slow_insert(table):
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER IF EXISTS test_slow_insert ON {table}")
        cursor.execute("DROP FUNCTION IF EXISTS test_slow_insert()")


@pytest.mark.postgres  # SQLite has a single writer, so commits cannot interleave there
def test_ids_grow_in_commit_order_under_concurrent_senders(transactional_db, settings, request, published,
                                                           make_user):
    """A reader that polls "messages after the last id I saw" never misses one.

    That holds only if ids are visible in id order. Each insert sleeps after drawing its ids
    and before its transaction commits (a trigger, inside the one statement string of the
    write), so without the per-room lock a smaller id would routinely commit after a larger
    one and the poller would skip it.
    """
    settings.CHAT_RATE_PER_10S = 10_000
    owner = make_user("owner")
    room = services.room_create(user=owner, name="Busy")
    senders = [make_user(f"sender{i}") for i in range(6)]
    for user in senders:
        services.room_join(user=user, slug="busy")
    start = Message.objects.filter(room=room).order_by("-id").values_list("id", flat=True).first()

    table = connection.ops.quote_name(Message._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute("CREATE FUNCTION test_slow_insert() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$ BEGIN PERFORM pg_sleep(0.001 + random() * 0.003); RETURN NULL; END $$")
        cursor.execute(f"CREATE TRIGGER test_slow_insert AFTER INSERT ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION test_slow_insert()")
    request.addfinalizer(lambda: _drop_slow_insert(table))
    per_sender, barrier, errors, sent, seen = 12, threading.Barrier(len(senders) + 1), [], [], []
    done = threading.Event()

    def sender(user):
        try:
            barrier.wait()
            for i in range(per_sender):
                sent.append(services.message_send(user=user, slug="busy", body=f"{user.username} {i}")[0].pk)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    def poller():
        last = start
        try:
            barrier.wait()
            while True:
                finished = done.is_set()
                ids = list(Message.objects.filter(room=room, id__gt=last).order_by("id").values_list("id", flat=True))
                seen.extend(ids)
                last = ids[-1] if ids else last
                if finished:
                    return
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sender, args=(user,)) for user in senders]
    reader = threading.Thread(target=poller)
    for thread in [*threads, reader]:
        thread.start()
    for thread in threads:
        thread.join(60)
    done.set()
    reader.join(60)

    assert errors == []
    assert len(sent) == len(set(sent)) == len(senders) * per_sender
    assert seen == sorted(sent), "the poller skipped ids that committed after a larger one"
    delivered = [e["message_id"] for _, e in published if e.get("message_id") and e["message_id"] > start]
    assert sorted(delivered) == sorted(sent)
    # Each message names the one committed before it, though its writer waited for the lock
    # that commit released: the newest id is read after the lock, not with the snapshot before it.
    chain = sorted((e["message_id"], e["prev_id"]) for _, e in published if (e.get("message_id") or 0) > start)
    assert [prev_id for _, prev_id in chain] == [start or 0] + [message_id for message_id, _ in chain[:-1]]
