"""chat/services/rooms.py: creating, updating, archiving rooms and direct rooms.

Against the real database: the rows a service writes and the events it publishes on commit.
Setup calls run outside `committed()`, so their on-commit events never fire; only the call
under test publishes into `published`.
"""

import pytest

from chat import services
from chat.errors import Forbidden, Gone, Invalid, NotFound
from chat.models import Membership, Room
from tests.support import room_events, subscribe_event

# room_create


def test_room_create_makes_the_creator_owner_and_subscribes_them(alice, published, committed):
    with committed():
        room = services.room_create(user=alice, name="  Rust & Go Lovers ", topic="systems")
    room.refresh_from_db()
    assert (room.slug, room.name, room.kind, room.topic, room.created_by) == (
        "rust-go-lovers",
        "Rust & Go Lovers",
        "public",
        "systems",
        alice,
    )
    assert list(room.memberships.values_list("user__username", "role")) == [("alice", "owner")]
    assert published == [subscribe_event(alice, room)]
    assert not room.messages.exists()


@pytest.mark.parametrize(
    "name, slug",
    [
        ("snake_case Room", "snake-case-room"),
        ("Ünïcödé chat", "unicode-chat"),
        ("x" * 60, "x" * 50),
        ("DM tips", "dm-tips"),
    ],
)
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


@pytest.mark.parametrize(
    "kwargs, match",
    [
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
    ],
)
def test_room_create_rejects_bad_input(alice, refused, kwargs, match):
    with refused(Invalid, match=match):
        services.room_create(user=alice, **kwargs)


# room_update / room_archive


def test_room_update_by_owner(alice, general, published, committed):
    with committed():
        room = services.room_update(user=alice, slug="general", name=" Lobby ", topic="Say hi", locked=True)
    room.refresh_from_db()
    assert (room.name, room.topic, room.locked) == ("Lobby", "Say hi", True)
    assert general.messages.get().body == "alice set the topic: Say hi"
    assert room_events(published, general)[-1] == {
        "type": "room.updated",
        "room": "general",
        "name": "Lobby",
        "topic": "Say hi",
        "locked": True,
        "archived": False,
    }
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


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"name": "   "}, Invalid),
        ({"name": "n" * 101}, Invalid),
        ({"topic": "t" * 301}, Invalid),
    ],
)
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
    assert event["frame"] == {
        "type": "room.updated",
        "room": "general",
        "name": "General",
        "topic": "",
        "locked": False,
        "archived": True,
    }


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
