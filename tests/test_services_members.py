"""chat/services/members.py: joining, leaving, inviting and removing members.

Against the real database: the rows a service writes and the events it publishes on commit.
Setup calls run outside `committed()`, so their on-commit events never fire; only the call
under test publishes into `published`.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from chat import services
from chat.errors import Forbidden, Gone, Invalid, NotFound
from chat.models import Membership, Message
from tests.support import frames, membership, room_events, snapshot, subscribe_event, unsubscribe_event

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
    Membership.objects.create(
        room=general, user=bob, banned=True, ban_reason="spam", banned_until=timezone.now() - timedelta(seconds=1)
    )
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
    assert room_events(published, crew)[1] == {
        "type": "member.left",
        "room": "secret",
        "user": {"id": carol.pk, "username": "carol"},
    }
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
