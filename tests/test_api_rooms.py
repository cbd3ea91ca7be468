"""REST rooms, membership and direct rooms: what each caller may do, and that refusals change nothing."""

import pytest

from chat import services
from chat.models import Membership, Message, Room
from chat.realtime import presence
from tests.support import db_state, joined, private_room, public_room


def room_slugs(response) -> list[str]:
    return [r["slug"] for r in response.json()]


# List and create


def test_rooms_lists_public_rooms_and_ones_own(api, alice, bob, carol):
    general = joined(public_room(alice), bob)
    private_room(alice, "alices")
    private_room(bob, "bobs")
    services.room_archive(user=alice, slug=public_room(alice, "old").slug)
    services.message_send(user=bob, slug="general", body="one")
    last, _ = services.message_send(user=bob, slug="general", body="two")

    response = api(alice).get("/api/rooms/")
    assert response.status_code == 200
    assert room_slugs(response) == ["alices", "general"]
    row = next(r for r in response.json() if r["slug"] == "general")
    # bob's "joined" notice and his two messages
    assert row == {
        **row,
        "member": True,
        "role": "owner",
        "unread": 3,
        "last_message_id": last.pk,
        "kind": "public",
        "name": "General",
        "locked": False,
        "archived": False,
    }

    outsider = api(carol).get("/api/rooms/").json()
    assert [(r["slug"], r["member"], r["role"], r["unread"]) for r in outsider] == [("general", False, None, 0)]
    assert outsider[0]["last_message_id"] == general.messages.order_by("-id").first().pk


def test_create_room_makes_the_creator_owner(api, alice):
    response = api(alice).post("/api/rooms/", {"name": "Team Talk", "kind": "private", "topic": "plans"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body == {
        **body,
        "slug": "team-talk",
        "name": "Team Talk",
        "kind": "private",
        "topic": "plans",
        "member": True,
        "role": "owner",
        "unread": 0,
    }
    assert Membership.objects.get(room__slug="team-talk").user == alice


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"name": ""},
        {"name": "x" * 101},
        {"name": "Ok", "slug": "Not A Slug!"},
        {"name": "Ok", "slug": "x" * 51},
        {"name": "Ok", "kind": "direct"},
        {"name": "Taken", "slug": "general"},
        {"name": "!!!"},  # no slug can be derived
    ],
)
def test_create_room_rejects_bad_input(api, alice, data):
    public_room(alice)
    before = db_state()
    response = api(alice).post("/api/rooms/", data, format="json")
    assert response.status_code == 400
    assert response.json()
    assert db_state() == before


# Detail, update, archive


def test_room_detail_for_members_and_outsiders(api, alice, bob):
    public_room(alice)
    assert api(alice).get("/api/rooms/general/").json()["role"] == "owner"
    outsider = api(bob).get("/api/rooms/general/")
    assert outsider.status_code == 200
    assert (outsider.json()["member"], outsider.json()["role"]) == (False, None)


@pytest.mark.parametrize(
    "path, status, code",
    [
        ("/api/rooms/secret/", 403, "forbidden"),
        ("/api/rooms/nowhere/", 404, "not_found"),
        ("/api/rooms/Bad_Slug!/", 404, "not_found"),
        ("/api/rooms/old/", 410, "not_found"),
    ],
)
def test_room_detail_refusals(api, alice, bob, path, status, code):
    private_room(alice)
    services.room_archive(user=alice, slug=public_room(alice, "old").slug)
    response = api(bob).get(path)
    assert response.status_code == status
    assert response.json()["code"] == code


def test_owner_updates_a_room(api, alice, published, django_capture_on_commit_callbacks):
    public_room(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = api(alice).patch(
            "/api/rooms/general/", {"name": "Lobby", "topic": "hi", "locked": True}, format="json"
        )
    assert response.status_code == 200
    assert response.json() == {**response.json(), "name": "Lobby", "topic": "hi", "locked": True}
    room = Room.objects.get(slug="general")
    assert (room.name, room.topic, room.locked) == ("Lobby", "hi", True)
    assert Message.objects.filter(room=room, kind="system", body__contains="set the topic").exists()
    assert [f for _, e in published if (f := e.get("frame")) and f["type"] == "room.updated"] == [
        {"type": "room.updated", "room": "general", "name": "Lobby", "topic": "hi", "locked": True, "archived": False}
    ]


@pytest.mark.parametrize(
    "who, data, status",
    [
        ("bob", {"name": "Mine now"}, 403),  # a plain member
        ("carol", {"topic": "x"}, 403),  # not even a member
        ("alice", {"name": ""}, 400),
        ("alice", {"locked": "maybe"}, 400),
        ("alice", {"topic": "x" * 301}, 400),
    ],
)
def test_room_update_refusals_change_nothing(api, alice, bob, carol, who, data, status):
    joined(public_room(alice), bob)
    before = db_state()
    caller = {"alice": alice, "bob": bob, "carol": carol}[who]
    response = api(caller).patch("/api/rooms/general/", data, format="json")
    assert response.status_code == status
    assert db_state() == before


def test_only_the_owner_archives(api, alice, bob):
    joined(public_room(alice), bob)
    before = db_state()
    assert api(bob).delete("/api/rooms/general/").status_code == 403
    assert db_state() == before

    assert api(alice).delete("/api/rooms/general/").status_code == 204
    assert Room.objects.get(slug="general").archived
    assert api(alice).get("/api/rooms/general/").status_code == 410
    assert api(alice).get("/api/rooms/").json() == []


# Join and leave


def test_join_then_leave(api, alice, bob):
    public_room(alice)
    response = api(bob).post("/api/rooms/general/join/")
    assert response.status_code == 201
    assert (response.json()["member"], response.json()["role"]) == (True, "member")
    assert api(bob).post("/api/rooms/general/join/").status_code == 200
    assert Membership.objects.filter(room__slug="general", user=bob).count() == 1

    assert api(bob).post("/api/rooms/general/leave/").status_code == 204
    assert not Membership.objects.filter(room__slug="general", user=bob).exists()


@pytest.mark.parametrize(
    "path, status",
    [
        ("/api/rooms/secret/join/", 403),
        ("/api/rooms/nowhere/join/", 404),
        ("/api/rooms/general/leave/", 403),  # not a member
        ("/api/rooms/nowhere/leave/", 404),
    ],
)
def test_join_and_leave_refusals(api, alice, bob, path, status):
    public_room(alice)
    private_room(alice)
    before = db_state()
    assert api(bob).post(path).status_code == status
    assert db_state() == before


# Members


def test_members_list_roles_and_presence(api, alice, bob, carol, monkeypatch):
    joined(public_room(alice), bob)
    monkeypatch.setattr(presence, "online_user_ids", lambda ids: {bob.pk} & set(ids))
    response = api(carol).get("/api/rooms/general/members/")  # a public room: anyone may look
    assert response.status_code == 200
    assert [(m["user"], m["role"], m["online"]) for m in response.json()] == [
        ({"id": alice.pk, "username": "alice"}, "owner", False),
        ({"id": bob.pk, "username": "bob"}, "member", True),
    ]


def test_members_of_a_private_room_are_for_members(api, alice, bob):
    private_room(alice)
    response = api(bob).get("/api/rooms/secret/members/")
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


def test_invite_to_a_private_room(api, alice, bob, published, django_capture_on_commit_callbacks):
    private_room(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = api(alice).post("/api/rooms/secret/members/", {"username": "bob"}, format="json")
    assert response.status_code == 201
    assert response.json() == {
        **response.json(),
        "user": {"id": bob.pk, "username": "bob"},
        "role": "member",
        "online": False,
    }
    assert api(bob).get("/api/rooms/secret/messages/").status_code == 200
    assert ("user.%d" % bob.pk, "chat.subscribe") in [(g, e["type"]) for g, e in published]


@pytest.mark.parametrize(
    "who, data, status",
    [
        ("carol", {"username": "bob"}, 403),  # an outsider
        ("bob", {"username": "carol", "role": "moderator"}, 403),  # only the owner grants roles
        ("alice", {"username": "nobody"}, 404),
        ("alice", {"username": "bob"}, 400),  # already a member
        ("alice", {"username": "carol", "role": "king"}, 400),
        ("alice", {}, 400),
    ],
)
def test_invite_refusals_change_nothing(api, alice, bob, carol, who, data, status):
    private_room(alice, members=[bob])
    before = db_state()
    caller = {"alice": alice, "bob": bob, "carol": carol}[who]
    response = api(caller).post("/api/rooms/secret/members/", data, format="json")
    assert response.status_code == status
    assert db_state() == before


def test_owner_removes_a_member(api, alice, bob):
    private_room(alice, members=[bob])
    assert api(alice).delete("/api/rooms/secret/members/bob/").status_code == 204
    assert not Membership.objects.filter(room__slug="secret", user=bob).exists()
    assert api(bob).get("/api/rooms/secret/").status_code == 403


@pytest.mark.parametrize(
    "who, target, status",
    [
        ("bob", "carol", 403),  # a plain member cannot kick
        ("alice", "nobody", 404),
    ],
)
def test_remove_refusals_change_nothing(api, alice, bob, carol, who, target, status):
    private_room(alice, members=[bob, carol])
    before = db_state()
    caller = {"alice": alice, "bob": bob}[who]
    assert api(caller).delete(f"/api/rooms/secret/members/{target}/").status_code == status
    assert db_state() == before


# Direct rooms


def test_direct_room_is_created_once_for_both(api, alice, bob):
    first = api(alice).post("/api/direct/bob/")
    assert first.status_code == 200
    assert (first.json()["kind"], first.json()["member"]) == ("direct", True)
    assert api(bob).get("/api/direct/alice/").json()["slug"] == first.json()["slug"]
    assert Room.objects.filter(kind="direct").count() == 1


@pytest.mark.parametrize("username, status", [("alice", 400), ("nobody", 404)])
def test_direct_room_refusals(api, alice, username, status):
    before = db_state()
    assert api(alice).post(f"/api/direct/{username}/").status_code == status
    assert db_state() == before
