"""Selectors: the access rule, the room list with per-user state, and keyset history paging."""

from datetime import timedelta

import pytest
from django.utils import timezone

from chat import selectors, services
from chat.errors import Forbidden, Gone, NotFound
from chat.models import Membership, Message, Room, effective_notify
from chat.serializers import message_data


def make_room(slug, kind="public", **fields) -> Room:
    return Room.objects.create(slug=slug, name=slug.title(), kind=kind, **fields)


def add(room, user, **fields) -> Membership:
    return Membership.objects.create(room=room, user=user, **fields)


def post(room, author, n=1, **fields) -> list[Message]:
    return [Message.objects.create(room=room, author=author, body=f"m{i}", **fields) for i in range(n)]


def ids(messages) -> list[int]:
    return [m.pk for m in messages]


# room_for_user


def test_room_for_user_public_room(alice, bob):
    room = make_room("general")
    mine = add(room, alice, role="owner")
    assert selectors.room_for_user(alice, "general") == (room, mine)
    assert selectors.room_for_user(bob, "general") == (room, None)


def test_room_for_user_unknown_and_archived(alice):
    make_room("old", archived=True)
    with pytest.raises(NotFound, match="No room 'nope'"):
        selectors.room_for_user(alice, "nope")
    with pytest.raises(Gone, match="archived") as info:
        selectors.room_for_user(alice, "old")
    assert info.value.status == 410


def test_room_for_user_private_needs_membership(alice, bob, make_user):
    # A direct room answers an outsider NotFound instead: tests/test_security_direct.py.
    room = make_room("closed", "private")
    mine = add(room, alice)
    assert selectors.room_for_user(alice, "closed") == (room, mine)
    with pytest.raises(Forbidden, match="invite"):
        selectors.room_for_user(bob, "closed")
    staff = make_user("root", is_staff=True)
    assert selectors.room_for_user(staff, "closed") == (room, None)


def test_room_for_user_bans(alice, bob, make_user):
    room = make_room("general")
    add(room, alice, banned=True)
    add(room, bob, banned=True, banned_until=timezone.now() + timedelta(minutes=5))
    for user in (alice, bob):
        with pytest.raises(Forbidden, match="banned"):
            selectors.room_for_user(user, "general")
    staff = make_user("root", is_staff=True)
    add(room, staff, banned=True)
    with pytest.raises(Forbidden, match="banned"):
        selectors.room_for_user(staff, "general")


def test_room_for_user_expired_ban_grants_access_again(alice):
    room = make_room("closed", "private")
    mine = add(room, alice, banned=True, banned_until=timezone.now() - timedelta(seconds=1))
    assert selectors.room_for_user(alice, "closed") == (room, mine)


def test_member_room_for_user_needs_membership(alice, bob):
    room = make_room("general")
    mine = add(room, alice)
    assert selectors.member_room_for_user(alice, "general") == (room, mine)
    with pytest.raises(Forbidden, match="join it first"):
        selectors.member_room_for_user(bob, "general")


def test_message_for_user(alice, bob, django_assert_num_queries):
    general, closed = make_room("general"), make_room("closed", "private")
    add(closed, alice)
    [public], [private] = post(general, alice), post(closed, alice)
    message = selectors.message_for_user(bob, public.pk)
    with django_assert_num_queries(0):  # room and author are loaded
        assert message_data(message)["author"] == {"id": alice.pk, "username": "alice"}
    with pytest.raises(Forbidden):
        selectors.message_for_user(bob, private.pk)
    assert selectors.message_for_user(alice, private.pk) == private
    with pytest.raises(NotFound, match=str(private.pk + 1)):
        selectors.message_for_user(alice, private.pk + 1)


# rooms_for_user


@pytest.fixture
def world(alice, bob, carol):
    """Rooms as alice sees them, each with a few messages."""
    rooms = {
        slug: make_room(slug, kind)
        for slug, kind in [
            ("joined", "public"),
            ("other", "public"),
            ("mine", "private"),
            ("theirs", "private"),
            ("old", "public"),
            ("banned", "public"),
            ("forgiven", "public"),
            ("quiet", "public"),
        ]
    }
    rooms["old"].archived = True
    rooms["old"].save()
    add(rooms["joined"], alice, role="moderator", last_read_id=0)
    add(rooms["mine"], alice, role="owner")
    add(rooms["old"], alice)
    add(rooms["banned"], alice, banned=True)
    add(rooms["forgiven"], alice, banned=True, banned_until=timezone.now() - timedelta(hours=1))
    add(rooms["quiet"], alice)
    add(rooms["theirs"], bob, role="owner")
    direct = services.direct_room(user=alice, username="bob")
    rooms[direct.slug] = direct
    for slug in ("joined", "other", "theirs", "old", "banned", "forgiven", direct.slug):
        post(rooms[slug], bob, 3)
    post(rooms["mine"], alice, 2)  # one's own messages are never unread
    post(rooms["mine"], carol)
    read = post(rooms["joined"], alice)[0]
    post(rooms["joined"], bob, 2)
    deleted = post(rooms["joined"], carol)[0]
    deleted.deleted = True
    deleted.save()
    Membership.objects.filter(room=rooms["joined"], user=alice).update(last_read_id=read.pk)
    return rooms


def test_rooms_for_user_lists_public_and_own_rooms(alice, world):
    direct = next(slug for slug in world if slug.startswith("dm-"))
    rows = {r.slug: r for r in selectors.rooms_for_user(alice)}
    assert set(rows) == {"joined", "other", "mine", "forgiven", "quiet", direct}
    last = {slug: selectors.last_message_id(room) for slug, room in world.items()}
    assert {slug: (r.member, r.role, r.unread, r.last_message_id) for slug, r in rows.items()} == {
        "joined": (True, "moderator", 2, last["joined"]),
        "other": (False, None, 0, last["other"]),
        "mine": (True, "owner", 1, last["mine"]),
        "forgiven": (True, "member", 3, last["forgiven"]),
        "quiet": (True, "member", 0, None),
        direct: (True, "member", 3, last[direct]),
    }


def test_rooms_for_user_member_only(alice, world):
    assert {r.slug for r in selectors.rooms_for_user(alice, member_only=True)} == {
        "joined",
        "mine",
        "forgiven",
        "quiet",
        next(slug for slug in world if slug.startswith("dm-")),
    }


def test_rooms_for_user_for_an_outsider(make_user, world):
    stranger = make_user("stranger")
    assert {(r.slug, r.member, r.unread) for r in selectors.rooms_for_user(stranger)} == {
        (slug, False, 0) for slug in ("joined", "other", "banned", "forgiven", "quiet")
    }


def test_rooms_for_user_runs_one_query_however_many_rooms(alice, bob, world, django_assert_num_queries):
    with django_assert_num_queries(1):
        small = [(r.slug, r.unread, r.member, r.role, r.last_message_id) for r in selectors.rooms_for_user(alice)]
    for i in range(15):
        room = make_room(f"more-{i}")
        add(room, alice)
        post(room, bob, 2)
    with django_assert_num_queries(1):
        big = [(r.slug, r.unread, r.member, r.role, r.last_message_id) for r in selectors.rooms_for_user(alice)]
    assert len(big) == len(small) + 15
    with django_assert_num_queries(1):
        selectors.room_summaries(alice)


def test_room_summaries(alice, world):
    summaries = {s["slug"]: s for s in selectors.room_summaries(alice)}
    assert summaries["joined"] == {
        "slug": "joined",
        "name": "Joined",
        "kind": "public",
        "unread": 2,
        "mentions": 0,
        "notify": "mentions",
        "last_message_id": selectors.last_message_id(world["joined"]),
        "seq": Room.objects.get(slug="joined").change_seq,
    }
    assert summaries["quiet"]["last_message_id"] is None
    assert "other" not in summaries and "old" not in summaries


def test_room_summaries_and_member_room_ids_list_what_rooms_for_user_lists(alice, bob, carol, make_user, world):
    """The hand-written queries against the ORM's definition, for users in every state of the world."""
    post(world["quiet"], alice)  # one's own message: not unread, but the room's newest
    for user in (alice, bob, carol, make_user("stranger")):
        rooms = list(selectors.rooms_for_user(user, member_only=True))
        assert selectors.room_summaries(user) == [
            {
                "slug": r.slug,
                "name": r.name,
                "kind": r.kind,
                "unread": r.unread or 0,
                "mentions": r.mentions,
                "notify": effective_notify(r.notify_choice, r.kind),
                "last_message_id": r.last_message_id,
                "seq": r.change_seq,
            }
            for r in rooms
        ]
        assert selectors.member_room_ids(user) == selectors.member_room_ids(user.pk) == [(r.pk, r.slug) for r in rooms]


def test_room_state_matches_the_list(alice, world):
    state = selectors.room_state(alice, world["joined"])
    assert (state.member, state.role, state.unread) == (True, "moderator", 2)


def test_member_room_ids_excludes_archived_and_banned(alice, world):
    assert {slug for _, slug in selectors.member_room_ids(alice)} == {
        "joined",
        "mine",
        "forgiven",
        "quiet",
        next(slug for slug in world if slug.startswith("dm-")),
    }


def test_unread_count_matches_the_annotation(alice, world):
    membership = Membership.objects.get(room=world["joined"], user=alice)
    assert selectors.unread_count(membership) == 2


def test_room_members(alice, bob, carol):
    room = make_room("general")
    add(room, alice, role="owner")
    add(room, bob, banned=True)
    add(room, carol, banned=True, banned_until=timezone.now() - timedelta(seconds=1))
    assert [m.user.username for m in selectors.room_members(room)] == ["alice", "carol"]
    assert sorted(selectors.room_member_user_ids(room.pk)) == sorted([alice.pk, carol.pk])
    assert selectors.usernames([alice.pk, bob.pk]) == {alice.pk: "alice", bob.pk: "bob"}


# message_history / messages_since


@pytest.fixture
def history(alice, bob):
    """Ten messages in `general`, interleaved with messages in another room."""
    general, other = make_room("general"), make_room("other")
    mine = []
    for i in range(10):
        mine += post(general, alice if i % 2 else bob)
        post(other, alice)
    return general, ids(mine)


def page(room, **kwargs):
    rows, has_more = selectors.message_history(room, **kwargs)
    return ids(rows), has_more


def test_history_newest_page(history):
    room, all_ids = history
    assert page(room) == (all_ids, False)
    assert page(room, limit=3) == (all_ids[-3:], True)
    assert page(room, limit=10) == (all_ids, False)
    assert page(room, limit=9) == (all_ids[1:], True)


def test_history_before(history):
    room, all_ids = history
    assert page(room, before=all_ids[5], limit=2) == (all_ids[3:5], True)
    assert page(room, before=all_ids[2], limit=2) == (all_ids[:2], False)
    assert page(room, before=all_ids[2], limit=5) == (all_ids[:2], False)
    assert page(room, before=all_ids[0]) == ([], False)


def test_history_after(history):
    room, all_ids = history
    assert page(room, after=all_ids[5], limit=2) == (all_ids[6:8], True)
    assert page(room, after=all_ids[7], limit=2) == (all_ids[8:], False)
    assert page(room, after=0, limit=4) == (all_ids[:4], True)
    assert page(room, after=all_ids[-1]) == ([], False)


def test_history_between(history):
    room, all_ids = history
    assert page(room, after=all_ids[1], before=all_ids[6], limit=10) == (all_ids[2:6], False)
    assert page(room, after=all_ids[1], before=all_ids[6], limit=2) == (all_ids[2:4], True)


def test_history_pages_walk_back_without_gap_or_overlap(history):
    room, all_ids = history
    seen, before, has_more = [], None, True
    while has_more:
        rows, has_more = page(room, before=before, limit=3)
        seen = rows + seen
        before = rows[0]
    assert seen == all_ids


def test_history_keeps_deleted_messages_in_place(history):
    room, all_ids = history
    Message.objects.filter(pk=all_ids[-1]).update(deleted=True)
    rows, _ = selectors.message_history(room, limit=1)
    assert [message_data(m)["body"] for m in rows] == [""]
    assert rows[0].pk == all_ids[-1]


@pytest.mark.parametrize("kwargs", [{}, {"limit": 200}, {"before": 10**9, "limit": 3}, {"after": 0, "limit": 5}])
def test_history_runs_at_most_two_queries(history, make_user, kwargs, django_assert_max_num_queries):
    room, _ = history
    for i in range(5):
        post(room, make_user(f"user{i}"))
    with django_assert_max_num_queries(2):
        rows, _ = selectors.message_history(room, **kwargs)
        assert len({message_data(m)["author"]["username"] for m in rows}) >= 2


def test_messages_since(history):
    room, all_ids = history
    rows, gap = selectors.messages_since(room.pk, all_ids[2], limit=100)
    assert (ids(rows), gap) == (all_ids[3:], False)
    rows, gap = selectors.messages_since(room.pk, all_ids[2], limit=7)
    assert (ids(rows), gap) == (all_ids[3:], False)
    rows, gap = selectors.messages_since(room.pk, all_ids[2], limit=3)
    assert (ids(rows), gap) == (all_ids[-3:], True)
    assert selectors.messages_since(room.pk, all_ids[-1], limit=3) == ([], False)


def test_messages_since_loads_room_and_author(history, django_assert_max_num_queries):
    room, _ = history
    with django_assert_max_num_queries(1):
        rows, _ = selectors.messages_since(room.pk, 0, limit=50)
        assert [message_data(m)["room"] for m in rows] == ["general"] * 10


def test_last_message_id(history):
    room, all_ids = history
    assert selectors.last_message_id(room) == all_ids[-1]
    assert selectors.last_message_id(make_room("empty")) is None
