"""Bans and mutes: the services, the REST endpoints, and their live effect on open sockets."""

import pytest

from chat import services
from chat.errors import Forbidden, Invalid, NotFound
from chat.models import Membership, Message
from tests.support import connect, db, frames

pytestmark = pytest.mark.usefixtures("fresh_layer")


def make_moderator(room, user):
    Membership.objects.filter(room=room, user=user).update(role=Membership.Role.MODERATOR)


@pytest.mark.django_db
def test_owner_bans_a_member_who_leaves_at_once(
    api, alice, bob, general_with_bob_and_carol, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api(alice).post("/api/rooms/general/bans/", {"username": "bob", "reason": "spam"}, format="json")
    assert response.status_code == 201
    assert response.json() == {"username": "bob", "banned_until": None, "ban_reason": "spam", "muted_until": None}
    assert Membership.objects.get(room=general_with_bob_and_carol, user=bob).is_banned()
    assert [f["type"] for f in frames(published)] == ["member.left"]
    assert (
        "user.%d" % bob.pk,
        {"type": "chat.unsubscribe", "room_id": general_with_bob_and_carol.pk, "slug": "general", "reason": "banned"},
    ) in published
    assert api(bob).post("/api/rooms/general/join/").status_code == 403
    assert api(bob).post("/api/rooms/general/messages/", {"body": "back!"}, format="json").status_code == 403
    assert not Message.objects.filter(body="back!").exists()


@pytest.mark.django_db
def test_unban_lets_the_user_join_again(api, alice, bob, general_with_bob_and_carol):
    services.member_ban(actor=alice, slug="general", username="bob")
    assert api(alice).delete("/api/rooms/general/bans/bob/").status_code == 204
    assert not Membership.objects.filter(room=general_with_bob_and_carol, user=bob).exists()
    assert api(bob).post("/api/rooms/general/join/").status_code == 201
    assert api(alice).delete("/api/rooms/general/bans/bob/").status_code == 404


@pytest.mark.django_db
def test_a_timed_ban_ends_by_itself(api, alice, bob, general_with_bob_and_carol):
    response = api(alice).post("/api/rooms/general/bans/", {"username": "bob", "minutes": 5}, format="json")
    assert response.status_code == 201 and response.json()["banned_until"]
    Membership.objects.filter(user=bob, room=general_with_bob_and_carol).update(banned_until="2000-01-01T00:00:00Z")
    assert api(bob).post("/api/rooms/general/join/").status_code == 201


@pytest.mark.django_db
def test_a_non_member_can_be_banned_from_joining(api, alice, make_user, general_with_bob_and_carol):
    dave = make_user("dave")
    assert api(alice).post("/api/rooms/general/bans/", {"username": "dave"}, format="json").status_code == 201
    assert api(dave).post("/api/rooms/general/join/").status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["ban", "mute", "kick"])
@pytest.mark.parametrize(
    "actor, target, status",
    [
        ("bob", "carol", 403),  # a plain member cannot ban
        ("mod", "alice", 403),  # a moderator cannot ban the owner
        ("mod", "mod2", 403),  # nor another moderator
        ("mod", "carol", 201),  # but can ban a member
        ("alice", "mod", 201),  # the owner can ban a moderator
        ("alice", "root", 403),  # nobody but staff moderates staff
        ("root", "alice", 201),  # staff moderate anyone else
        ("alice", "alice", 400),  # not oneself
        ("alice", "nobody", 404),
    ],
)
def test_who_may_moderate_whom(
    api, make_user, alice, bob, carol, staff, general_with_bob_and_carol, action, actor, target, status
):
    """The same rule for bans, mutes and kicks, for every pair of roles."""
    users = {"alice": alice, "bob": bob, "carol": carol, "root": staff}
    for name in ("mod", "mod2"):
        users[name] = make_user(name)
        services.room_join(user=users[name], slug="general")
        make_moderator(general_with_bob_and_carol, users[name])
    services.room_join(user=staff, slug="general")
    client = api(users[actor])
    if action == "kick" and actor == target:
        return  # removing oneself is leaving the room, not moderation (tested with room_leave)
    state = lambda: list(Membership.objects.values_list("user__username", "banned", "muted_until").order_by("id"))  # noqa: E731
    before = state()
    if action == "ban":
        response = client.post("/api/rooms/general/bans/", {"username": target}, format="json")
    elif action == "mute":
        response = client.post("/api/rooms/general/mutes/", {"username": target, "minutes": 5}, format="json")
    else:
        response = client.delete(f"/api/rooms/general/members/{target}/")
    expected = 204 if (action == "kick" and status == 201) else status
    assert response.status_code == expected, (response.status_code, getattr(response, "data", None))
    if expected >= 400:
        assert state() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "bob", "minutes": 0},
        {"username": "bob", "minutes": "soon"},
        {"username": "bob", "reason": "x" * 301},
    ],
)
def test_bad_ban_input_is_400_and_changes_nothing(api, alice, bob, general_with_bob_and_carol, body):
    assert api(alice).post("/api/rooms/general/bans/", body, format="json").status_code == 400
    assert not Membership.objects.get(room=general_with_bob_and_carol, user=bob).banned


@pytest.mark.django_db
def test_mute_refuses_sends_with_the_time_left_and_unmute_lifts_it(api, alice, bob, general_with_bob_and_carol):
    response = api(alice).post("/api/rooms/general/mutes/", {"username": "bob", "minutes": 10}, format="json")
    assert response.status_code == 201 and response.json()["muted_until"]
    refused = api(bob).post("/api/rooms/general/messages/", {"body": "hush?"}, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "muted"
    assert 590 <= int(refused["Retry-After"]) <= 600
    assert api(alice).delete("/api/rooms/general/mutes/bob/").status_code == 204
    assert api(bob).post("/api/rooms/general/messages/", {"body": "free"}, format="json").status_code == 201
    assert api(alice).delete("/api/rooms/general/mutes/bob/").status_code == 404


@pytest.mark.django_db
def test_mute_rules(api, alice, bob, carol, make_user, general_with_bob_and_carol):
    assert (
        api(bob).post("/api/rooms/general/mutes/", {"username": "carol", "minutes": 1}, format="json").status_code
        == 403
    )
    assert api(alice).post("/api/rooms/general/mutes/", {"username": "carol"}, format="json").status_code == 400
    make_user("dave")
    assert (
        api(alice).post("/api/rooms/general/mutes/", {"username": "dave", "minutes": 1}, format="json").status_code
        == 404
    )
    assert Membership.objects.filter(muted_until__isnull=False).count() == 0


@pytest.mark.django_db(transaction=True)
async def test_a_ban_takes_effect_on_open_sockets(alice, bob, general_with_bob_and_carol):
    bound = await connect(bob, "/ws/chat/general/")
    await bound.expect("room.joined")
    roaming = await connect(bob)
    await db(services.member_ban)(actor=alice, slug="general", username="bob", reason="spam")
    assert (await bound.expect("room.left"))["reason"] == "banned"
    assert await bound.closed() == 4403
    assert (await roaming.expect("room.left"))["reason"] == "banned"
    await roaming.send(type="message.send", room="general", body="still here?")
    assert (await roaming.expect("error"))["code"] == "forbidden"
    await roaming.send(type="join", room="general")
    assert (await roaming.expect("error"))["code"] == "forbidden"
    assert await (await connect(bob, "/ws/chat/general/", hello=False)).closed() == 4403
    await roaming.close()


@pytest.mark.django_db(transaction=True)
async def test_a_mute_takes_effect_on_open_sockets(alice, bob, general_with_bob_and_carol):
    b = await connect(bob)
    await db(services.member_mute)(actor=alice, slug="general", username="bob", minutes=2)
    await b.send(type="message.send", room="general", body="hello?", ref="m")
    err = await b.expect("error")
    assert (err["code"], err["ref"]) == ("muted", "m") and 110 <= err["retry_after"] <= 120
    await b.close()


@pytest.mark.django_db(transaction=True)
async def test_a_mute_and_an_unmute_reach_only_the_members_own_sockets(alice, bob, carol, general_with_bob_and_carol):
    b, c = await connect(bob), await connect(carol)
    await db(services.member_mute)(actor=alice, slug="general", username="bob", minutes=2)
    muted = await b.expect("membership.updated")
    assert muted["room"] == "general" and muted["muted_until"]
    await db(services.member_unmute)(actor=alice, slug="general", username="bob")
    assert (await b.expect("membership.updated"))["muted_until"] is None
    await c.send(type="ping", ref="p")
    assert "membership.updated" not in [f["type"] for f in await c.drain()]
    await b.close(), await c.close()


@pytest.mark.django_db
def test_restore_brings_a_deleted_message_back(
    alice, bob, general_with_bob_and_carol, published, django_capture_on_commit_callbacks
):
    message, _ = services.message_send(user=bob, slug="general", body="oops")
    services.message_delete(user=bob, message_id=message.pk)
    with pytest.raises(Forbidden):
        services.message_restore(user=bob, message_id=message.pk)  # authors cannot undelete
    with django_capture_on_commit_callbacks(execute=True):
        restored = services.message_restore(user=alice, message_id=message.pk)
    assert not restored.deleted and Message.objects.get(pk=message.pk).body == "oops"
    updated = frames(published, "message.updated")
    assert updated[-1]["message"]["body"] == "oops" and updated[-1]["message"]["deleted"] is False


@pytest.mark.django_db
def test_only_staff_deactivate_and_never_themselves(alice, bob, staff):
    with pytest.raises(Forbidden):
        services.user_deactivate(actor=alice, username="bob")
    with pytest.raises(Invalid):
        services.user_deactivate(actor=staff, username="root")
    with pytest.raises(NotFound):
        services.user_deactivate(actor=staff, username="nobody")
    bob.refresh_from_db()
    assert bob.is_active


@pytest.mark.django_db(transaction=True)
async def test_deactivation_closes_every_socket_of_the_user_4403(alice, bob, staff, general_with_bob_and_carol):
    b1, b2 = await connect(bob), await connect(bob, "/ws/chat/general/")
    a = await connect(alice)
    await db(services.user_deactivate)(actor=staff, username="bob")
    assert await b1.closed() == 4403 and await b2.closed() == 4403
    assert await (await connect(bob, hello=False)).closed() == 4403
    await a.send(type="ping")
    await a.expect("pong")  # others are untouched
    await a.close()
